// Upstream work per request is bounded: the platform inspector walking an
// index of 40 entries never has more than 8 manifest requests in flight at
// the upstream (counted at a front that holds each request 100 ms, so an
// unbounded walk would show all 40 at once), and still answers every entry.
// The same for a virtual image of 12 members (its tag and its tag list) and
// for a prefetch of the 40-platform image (at most 4 blob downloads at once).
// archway runs as its own process; the fronts count in the test process.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { FAN_OUT } from '../../src/util/bounded-map.ts';
import { startArchwayProcess, type ArchwayProcess } from '../harness/archway-process.ts';
import { startFanOutFront, type FanOutFront } from '../harness/fanout-front.ts';
import { ACCEPT, http } from '../harness/http.ts';
import { buildImage, type BuiltImage } from '../harness/images.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

const UPSTREAM = 'registry.test';
/** Behind its own front, counting member tags and tag lists. */
const MEMBERS_UPSTREAM = 'members.test';
/** Behind its own front, counting blob downloads. */
const BLOBS_UPSTREAM = 'blobs.test';
const ENTRIES = 40;
const MEMBERS = 12;
/** src/admin/prefetch.ts: blob downloads of one job at a time. */
const PREFETCH_PARALLEL = 4;
const TOKEN = 'fan-out-admin-token-0123456789abcdef';

let work: string;
let registry: RegistryHandle;
let front: FanOutFront;
let membersFront: FanOutFront;
let blobsFront: FanOutFront;
let archway: ArchwayProcess;
let wide: BuiltImage;

before(async () => {
  work = await tempDir('archway-fan-out-');
  registry = await startRegistry();
  // 40 platforms: linux/amd64 with variants v1…v40 (an index's entries, whatever they name).
  const platforms = Array.from({ length: ENTRIES }, (_, i) => ({ os: 'linux', architecture: 'amd64', variant: `v${i + 1}` }));
  wide = await buildImage({ dir: join(work, 'wide'), tag: '1', platforms, format: 'oci', layerSizes: [256], seed: 'fan-out' });
  await pushLayout(wide, { hostPort: registry.hostPort, name: 'team/wide' });
  front = await startFanOutFront(registry.url, { delayMs: 100, pattern: /\/manifests\/sha256:/ });
  membersFront = await startFanOutFront(registry.url, { delayMs: 100, pattern: /\/(manifests\/1|tags\/list)(\?|$)/ });
  blobsFront = await startFanOutFront(registry.url, { delayMs: 50, pattern: /\/blobs\/sha256:/ });
  // 12 members, linux/amd64 v2…v13, in repositories the registry does not have: each is asked, none answers.
  const members = Object.fromEntries(Array.from({ length: MEMBERS }, (_, i) => [`linux/amd64/v${i + 2}`, `m${i + 2}/app`]));
  archway = await startArchwayProcess({
    upstreams: { [UPSTREAM]: { url: front.url }, [MEMBERS_UPSTREAM]: { url: membersFront.url }, [BLOBS_UPSTREAM]: { url: blobsFront.url } },
    defaultUpstream: UPSTREAM,
    virtual: { 'virt/app': { upstream: MEMBERS_UPSTREAM, members } },
    admin: { token: TOKEN },
  });
});

after(async () => {
  await archway?.kill();
  await front?.close();
  await membersFront?.close();
  await blobsFront?.close();
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

describe('bounded fan-out of a virtual image', () => {
  it(`its tag asks the ${MEMBERS} members at most ${FAN_OUT} at a time, and names every member it tried`, async () => {
    membersFront.reset();
    const r = await http(`${archway.url}/v2/virt/app/manifests/1?ns=${MEMBERS_UPSTREAM}`, { headers: { accept: ACCEPT.all } });
    assert.equal(r.status, 404, r.body.toString());
    const error = r.json<{ errors: Array<{ code: string; detail: { tried: string[] } }> }>().errors[0];
    assert.equal(error?.code, 'MANIFEST_UNKNOWN');
    assert.equal(error?.detail.tried.length, MEMBERS, JSON.stringify(error?.detail));
    assert.equal(membersFront.count, MEMBERS, 'one upstream request per member');
    assert.ok(membersFront.peak <= FAN_OUT, `${membersFront.peak} member requests in flight at once`);
    assert.ok(membersFront.peak > 1, `in parallel all the same (${membersFront.peak} at once)`);
  });

  it(`its tag list asks the ${MEMBERS} members at most ${FAN_OUT} at a time`, async () => {
    membersFront.reset();
    const r = await http(`${archway.url}/v2/virt/app/tags/list?ns=${MEMBERS_UPSTREAM}`);
    assert.equal(r.status, 200, r.body.toString());
    assert.equal(membersFront.count, MEMBERS, 'one tag list per member');
    assert.ok(membersFront.peak <= FAN_OUT, `${membersFront.peak} tag lists in flight at once`);
    assert.ok(membersFront.peak > 1, `in parallel all the same (${membersFront.peak} at once)`);
  });
});

describe('bounded fan-out of a prefetch', () => {
  it(`the ${ENTRIES}-platform image's blobs are downloaded at most ${PREFETCH_PARALLEL} at a time, and all of them`, async () => {
    blobsFront.reset();
    const headers = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
    const started = await http(`${archway.url}/_archway/prefetch`, { method: 'POST', headers, body: JSON.stringify({ image: `${BLOBS_UPSTREAM}/team/wide:1` }) });
    assert.equal(started.status, 202, started.body.toString());
    const id = started.json<{ id: string }>().id;
    let job: { state: string; blobs: { done: number; total: number }; error?: string } | undefined;
    for (const deadline = Date.now() + 60_000; ; await sleep(50)) {
      job = (await http(`${archway.url}/_archway/jobs/${id}`, { headers })).json();
      if (job?.state !== 'running') break;
      assert.ok(Date.now() < deadline, `job still running: ${JSON.stringify(job)}`);
    }
    assert.equal(job?.state, 'done', JSON.stringify(job));
    const blobs = new Set(wide.manifests.flatMap((m) => [m.configDigest, ...m.layers.map((l) => l.digest)]));
    assert.equal(job?.blobs.total, blobs.size);
    assert.equal(blobsFront.count, blobs.size, 'each blob downloaded once');
    assert.ok(blobsFront.peak <= PREFETCH_PARALLEL, `${blobsFront.peak} blob downloads in flight at once`);
    assert.ok(blobsFront.peak > 1, `in parallel all the same (${blobsFront.peak} at once)`);
  });
});
