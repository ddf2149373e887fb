// Upstream work per request is bounded: the platform inspector walking an
// index of 40 entries never has more than 8 manifest requests in flight at
// the upstream (counted at a front that holds each request 100 ms, so an
// unbounded walk would show all 40 at once), and still answers every entry.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FAN_OUT } from '../../src/util/bounded-map.ts';
import { startArchway, type ArchwayHandle } from '../harness/archway.ts';
import { startFanOutFront, type FanOutFront } from '../harness/fanout-front.ts';
import { http } from '../harness/http.ts';
import { buildImage, type BuiltImage } from '../harness/images.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

const UPSTREAM = 'registry.test';
const ENTRIES = 40;

let work: string;
let registry: RegistryHandle;
let front: FanOutFront;
let archway: ArchwayHandle;
let wide: BuiltImage;

before(async () => {
  work = await tempDir('archway-fan-out-');
  registry = await startRegistry();
  // 40 platforms: linux/amd64 with variants v1…v40 (an index's entries, whatever they name).
  const platforms = Array.from({ length: ENTRIES }, (_, i) => ({ os: 'linux', architecture: 'amd64', variant: `v${i + 1}` }));
  wide = await buildImage({ dir: join(work, 'wide'), tag: '1', platforms, format: 'oci', layerSizes: [256], seed: 'fan-out' });
  await pushLayout(wide, { hostPort: registry.hostPort, name: 'team/wide' });
  front = await startFanOutFront(registry.url, { delayMs: 100, pattern: /\/manifests\/sha256:/ });
  archway = await startArchway({ upstreams: { [UPSTREAM]: { url: front.url } } });
});

after(async () => {
  await archway?.stop();
  await front?.close();
  await registry?.stop();
  await removeDir(work);
});

describe('bounded fan-out', () => {
  it(`the inspector fetches a ${ENTRIES}-entry index's manifests at most ${FAN_OUT} at a time, and reports every entry`, async () => {
    front.reset();
    const r = await http(`${archway.url}/_archway/platforms/team/wide:1`);
    assert.equal(r.status, 200, r.body.toString());
    const report = r.json<{ platforms: Array<{ digest: string }> }>();
    assert.deepEqual(
      report.platforms.map((p) => p.digest).sort(),
      wide.manifests.map((m) => m.digest).sort(),
    );
    assert.equal(front.count, ENTRIES, 'one upstream request per entry');
    assert.ok(front.peak <= FAN_OUT, `${front.peak} manifest requests in flight at once`);
    assert.ok(front.peak > 1, `in parallel all the same (${front.peak} at once)`);
  });
});
