// `npm run bench:replicas -- --quick` inside npm test, so the harness behind
// docs/replicas.md's capacity figures cannot rot: three replicas sharing a bucket
// and Redis fetch a cold blob once; three alone fetch it three times.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { benchReplicas } from '../../bench/replicas.ts';

describe('replicas bench (--quick)', () => {
  it('measures fetches per blob and warm throughput with 1 and 3 replicas', async () => {
    const r = await benchReplicas({ quick: true });
    assert.equal(r.coldSharedFetches, 1, 'shared replicas: one upstream fetch for 16 clients on 3 replicas');
    assert.equal(r.coldAloneFetches, 3, 'replicas on their own: one fetch each');
    for (const key of ['warm1GBps', 'warm3GBps', 'coldSharedSeconds']) assert.ok(typeof r[key] === 'number' && (r[key] as number) > 0, key);
  });
});
