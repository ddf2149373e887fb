// How archway answers when its upstream misbehaves: stale tags at once,
// spec errors with the right statuses, and never a corrupt body as complete.
// A fault front sits between archway and a real registry.
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { startArchway, type ArchwayHandle } from '../harness/archway.ts';
import { sha256Digest as sha256 } from '../harness/digest.ts';
import { startFaultFront, type FaultFront } from '../harness/fault-front.ts';
import { ACCEPT, http } from '../harness/http.ts';
import { buildImage, type BuiltImage } from '../harness/images.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

const KiB = 1024;
let work: string;
let registry: RegistryHandle;
let front: FaultFront;
let archway: ArchwayHandle;
let built: BuiltImage;
let other: BuiltImage;

/** Short: tests wait past it for a cached tag to need the upstream. */
const TAG_TTL_MS = 300;
const REVALIDATE_MS = 1000;
const pastTtl = () => sleep(TAG_TTL_MS + 100);
const stale = () => archway.metric('archway_stale_served_total', { upstream: 'docker.io' });

/**
 * The upstream answers again (a 404 for a name nobody pushed is an answer): archway counts it
 * healthy at once, so the next test does not wait out the backoff the previous one caused.
 */
let probes = 0;
async function upstreamAnswersAgain(): Promise<void> {
  const r = await http(`${archway.url}/v2/team/nobody-${++probes}/manifests/1`, { headers: { accept: ACCEPT.all } });
  assert.equal(r.status, 404, 'the upstream answers again');
}

const errorOf = (r: { json<T>(): T }) => r.json<{ errors: Array<{ code: string; message: string }> }>().errors[0];

before(async () => {
  work = await tempDir('archway-faults-');
  registry = await startRegistry();
  front = await startFaultFront(registry);
  const platforms = [{ os: 'linux', architecture: 'amd64' }];
  built = await buildImage({ dir: join(work, 'a'), tag: '1', platforms, format: 'oci', layerSizes: [256 * KiB, 512 * KiB], seed: 'faults' });
  other = await buildImage({ dir: join(work, 'b'), tag: '1', platforms, format: 'oci', layerSizes: [1024 * KiB], seed: 'faults-other' });
  await pushLayout(built, { hostPort: registry.hostPort, name: 'team/app' });
  await pushLayout(other, { hostPort: registry.hostPort, name: 'team/other' });
  archway = await startArchway({
    upstreams: { 'docker.io': { url: front.url } },
    cache: { tagTtl: `${TAG_TTL_MS}ms` },
    timeouts: { headers: '8s', revalidate: `${REVALIDATE_MS}ms` },
  });
  const r = await http(`${archway.url}/v2/team/app/manifests/1`, { headers: { accept: ACCEPT.all } });
  assert.equal(r.headers['docker-content-digest'], built.topDigest);
});

after(async () => {
  await archway?.stop();
  await front?.stop();
  await registry?.stop();
  await removeDir(work);
});

async function timed<T>(fn: () => Promise<T>): Promise<{ value: T; ms: number }> {
  const started = Date.now();
  const value = await fn();
  return { value, ms: Date.now() - started };
}

describe('serve stale', () => {
  it('a stalled upstream costs one revalidation deadline, then cached tags are answered at once', async () => {
    await pastTtl();
    front.setMode({ kind: 'stall' });
    try {
      const before = await stale();
      const first = await timed(() => http(`${archway.url}/v2/team/app/manifests/1`, { headers: { accept: ACCEPT.all } }));
      assert.equal(first.value.status, 200);
      assert.equal(first.value.headers['docker-content-digest'], built.topDigest);
      assert.ok(first.ms >= REVALIDATE_MS - 50, `first stale answer after ${first.ms} ms: it waited for the upstream, up to the ${REVALIDATE_MS} ms deadline`);
      assert.ok(first.ms < 3000, `first stale answer after ${first.ms} ms (deadline ${REVALIDATE_MS} ms, not the 8 s header timeout)`);
      assert.equal((await stale()) - before, 1, 'served stale, and counted');
      const next = await timed(() => http(`${archway.url}/v2/team/app/manifests/1`, { headers: { accept: ACCEPT.all } }));
      assert.equal(next.value.status, 200);
      assert.ok(next.ms < 500, `while the upstream is known to fail, stale answers are immediate (${next.ms} ms)`);
      assert.equal((await stale()) - before, 2, 'the second is served stale too');
    } finally {
      front.setMode({ kind: 'pass' });
      await upstreamAnswersAgain();
    }
  });

  for (const [status, headers] of [
    [503, {}],
    [429, { 'retry-after': '7' }],
  ] as const) {
    it(`an upstream answering ${status} gets cached tags served stale; uncached content gets the right error`, async () => {
      await pastTtl();
      front.setMode({ kind: 'status', status, headers });
      try {
        const before = await stale();
        const answer = await http(`${archway.url}/v2/team/app/manifests/1`, { headers: { accept: ACCEPT.all } });
        assert.equal(answer.status, 200);
        assert.equal(answer.headers['docker-content-digest'], built.topDigest);
        assert.equal((await stale()) - before, 1, 'served stale, and counted');
        const uncached = await http(`${archway.url}/v2/team/other/manifests/1`, { headers: { accept: ACCEPT.all } });
        if (status === 429) {
          assert.equal(uncached.status, 429);
          assert.equal(errorOf(uncached)?.code, 'TOOMANYREQUESTS');
          assert.equal(uncached.headers['retry-after'], '7', 'Retry-After is passed on');
        } else {
          assert.equal(uncached.status, 502);
          assert.equal(errorOf(uncached)?.code, 'UNAVAILABLE');
          assert.match(errorOf(uncached)?.message ?? '', /upstream docker\.io answered 503/);
        }
      } finally {
        front.setMode({ kind: 'pass' });
        await upstreamAnswersAgain();
      }
    });
  }
});

describe('timeouts.upstreamBackoff', () => {
  it('within the pause cached tags are served stale without asking the upstream; after it, the upstream is asked again', async () => {
    const BACKOFF_MS = 600;
    const quick = await startArchway({
      upstreams: { 'docker.io': { url: front.url } },
      cache: { tagTtl: '100ms' },
      timeouts: { upstreamBackoff: `${BACKOFF_MS}ms` },
    });
    const tagUrl = `${quick.url}/v2/team/app/manifests/1`;
    const asked = () => front.requests().filter((q) => q.url === '/v2/team/app/manifests/1').length;
    try {
      assert.equal((await http(tagUrl, { headers: { accept: ACCEPT.all } })).headers['docker-content-digest'], built.topDigest);
      await sleep(200); // past the tag TTL
      front.setMode({ kind: 'status', status: 503, headers: {} });
      front.clearRequests();
      // The failure (and the pause's start) falls between these two instants.
      const askedFrom = Date.now();
      assert.equal((await http(tagUrl, { headers: { accept: ACCEPT.all } })).status, 200, 'served stale');
      const answeredAt = Date.now();
      assert.equal(asked(), 1, 'asked once, and it failed');
      // Within the pause: stale at once, the upstream is left alone.
      while (Date.now() < askedFrom + BACKOFF_MS - 200) {
        assert.equal((await http(tagUrl, { headers: { accept: ACCEPT.all } })).status, 200);
        await sleep(50);
      }
      assert.equal(asked(), 1, `not asked again within the ${BACKOFF_MS} ms pause`);
      await sleep(Math.max(0, answeredAt + BACKOFF_MS + 100 - Date.now()));
      assert.equal((await http(tagUrl, { headers: { accept: ACCEPT.all } })).status, 200);
      assert.equal(asked(), 2, 'asked again once the pause is over');
    } finally {
      front.setMode({ kind: 'pass' });
      await quick.stop();
    }
  });
});

describe('timeouts', () => {
  it('an uncached request to a stalled upstream answers 504 within the header timeout', async () => {
    const quick = await startArchway({ upstreams: { 'docker.io': { url: front.url } }, timeouts: { headers: '1s' } });
    front.setMode({ kind: 'stall' });
    try {
      const r = await timed(() => http(`${quick.url}/v2/team/other/manifests/1`, { headers: { accept: ACCEPT.all } }));
      assert.equal(r.value.status, 504);
      assert.equal(errorOf(r.value)?.code, 'UNAVAILABLE');
      assert.match(errorOf(r.value)?.message ?? '', /upstream docker\.io timed out/);
      assert.ok(r.ms < 3000, `${r.ms} ms`);
    } finally {
      front.setMode({ kind: 'pass' });
      await quick.stop();
    }
  });
});

describe('streaming and corruption', () => {
  it('a coalesced client receives bytes while the upstream is still sending', async () => {
    const layer = other.manifests[0]!.layers[0]!;
    front.setMode({ kind: 'trickle', chunkBytes: 64 * KiB, pauseMs: 60 });
    try {
      const url = `${archway.url}/v2/team/other/blobs/${layer.digest}`;
      const first = http(url);
      await sleep(100);
      const res = await request(url);
      let firstByteAt: number | undefined;
      const chunks: Buffer[] = [];
      for await (const c of res.body) {
        firstByteAt ??= Date.now();
        chunks.push(c as Buffer);
      }
      assert.equal(sha256(Buffer.concat(chunks)), layer.digest);
      assert.equal(sha256((await first).body), layer.digest);
      const upstreamDone = front.lastBlobFinishedAt();
      assert.ok(firstByteAt !== undefined && upstreamDone !== undefined && firstByteAt < upstreamDone - 300, `first byte at ${firstByteAt}, upstream done at ${upstreamDone}`);
    } finally {
      front.setMode({ kind: 'pass' });
    }
  });

  it('a corrupt chunked body never reaches an HTTP/1.0 client whole, and the abort is logged', async () => {
    const layer = built.manifests[0]!.layers[1]!;
    front.setMode({ kind: 'corrupt-chunked' });
    try {
      // HTTP/1.0: the end of the connection is the end of the body, so only holding back matters.
      const body = await new Promise<Buffer>((resolve, reject) => {
        const socket = connect(archway.port, '127.0.0.1', () => socket.write(`GET /v2/team/app/blobs/${layer.digest} HTTP/1.0\r\n\r\n`));
        const chunks: Buffer[] = [];
        socket.on('data', (c) => chunks.push(c));
        socket.on('close', () => resolve(Buffer.concat(chunks)));
        socket.on('error', reject);
      });
      const headerEnd = body.indexOf('\r\n\r\n');
      const payload = body.subarray(headerEnd + 4);
      assert.ok(payload.length < layer.size, `got ${payload.length} of ${layer.size} bytes: the last byte was held back`);
      await sleep(50);
      const line = archway.logs().find((l) => l.msg === 'request' && String(l.url).endsWith(layer.digest) && l.complete === false);
      assert.ok(line, 'the cut answer has its log line, marked incomplete');
    } finally {
      front.setMode({ kind: 'pass' });
    }
    const healed = await http(`${archway.url}/v2/team/app/blobs/${layer.digest}`);
    assert.equal(sha256(healed.body), layer.digest);
  });
});
