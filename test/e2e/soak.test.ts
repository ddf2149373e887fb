// A short soak inside `npm test`: the same code as `npm run soak` (bench/soak.ts),
// for ~22 s with 16 clients instead of 5 minutes with 64. Concurrent clients
// pull tags, manifests by digest and blobs (some by Range) of 20 multi-platform
// images through archway (its own process), verifying the digest of every
// body, while the upstream registry is stopped and restarted twice.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { problems, runSoak, summarize } from '../../bench/soak.ts';

describe('soak (short)', () => {
  it('16 clients for 22 s across two upstream restarts: no corrupt body, errors only for uncached content while the upstream is down, fds and RSS flat', async () => {
    const result = await runSoak({ durationMs: 22_000, clients: 16, downtimeMs: 2500, sampleEveryMs: 1000, settleMs: 4000 });
    console.log(summarize(result));
    assert.equal(result.downtimes.length, 2, 'the upstream was restarted twice');
    assert.ok(result.requests > 2000, `only ${result.requests} requests`);
    assert.ok(result.verifiedBodies > 2000, `only ${result.verifiedBodies} verified bodies`);
    assert.ok(result.samples.length >= 10, `only ${result.samples.length} samples`);
    // Every error is accounted for: it overlapped a downtime and asked for content not yet cached.
    for (const e of result.errors) assert.ok(e.upstreamDown && !e.cachedBefore, JSON.stringify(e));
    assert.deepEqual(problems(result), []);
  });
});
