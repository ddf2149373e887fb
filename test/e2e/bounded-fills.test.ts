// A hostile upstream cannot make archway write more than its cache may hold,
// nor hold it with a trickle, nor make it download what nobody reads: every
// blob body is bounded by the size archway knows for it, fills write only
// into room made first, a whole body has a deadline, and fills without
// clients are bounded. archway runs as its own process; the cache directory's
// size is sampled all along and must stay within cache.maxSize.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { startArchwayProcess, type ArchwayProcess } from '../harness/archway-process.ts';
import { sha256Digest } from '../harness/digest.ts';
import { DirSampler, dirBytes } from '../harness/dir-size.ts';
import { scrapeMetric } from '../harness/metrics.ts';
import { startRunawayUpstream, type RunawayUpstream } from '../harness/runaway-upstream.ts';

const MiB = 1024 * 1024;
const MAX_SIZE = 32 * MiB;

let upstream: RunawayUpstream;
let archway: ArchwayProcess;
let sampler: DirSampler;

interface Received {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  bytes: number;
  /** The body ended as HTTP says a body ends (not cut). */
  complete: boolean;
  body: Buffer;
}

/** GET and read the body, stopping (and hanging up) after `stopAfter` bytes if given. */
async function get(path: string, opts: { stopAfter?: number; keep?: boolean } = {}): Promise<Received> {
  const res = await request(`${archway.url}${path}`, { headers: { accept: '*/*' } });
  let bytes = 0;
  const chunks: Buffer[] = [];
  try {
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      bytes += chunk.length;
      if (opts.keep) chunks.push(chunk);
      if (opts.stopAfter !== undefined && bytes >= opts.stopAfter) {
        res.body.destroy();
        return { status: res.statusCode, headers: res.headers, bytes, complete: false, body: Buffer.concat(chunks) };
      }
    }
    return { status: res.statusCode, headers: res.headers, bytes, complete: true, body: Buffer.concat(chunks) };
  } catch {
    return { status: res.statusCode, headers: res.headers, bytes, complete: false, body: Buffer.concat(chunks) };
  }
}

const metric = (name: string, labels: Record<string, string> = {}) => scrapeMetric(archway.url, name, labels);

async function waitFor(what: string, condition: () => boolean | Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** A digest nobody can serve right: the bytes the upstream sends never match it. */
/** An image manifest whose one layer is `digest`, `size` bytes long. */
function imageManifestNaming(digest: string, size: number): Buffer {
  return Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256Digest('{}'), size: 2 },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest, size }],
    }),
  );
}

function someDigest(): string {
  return sha256Digest(randomBytes(16));
}

before(async () => {
  upstream = await startRunawayUpstream();
  archway = await startArchwayProcess({
    upstreams: { 'docker.io': { url: upstream.url } },
    defaultUpstream: 'docker.io',
    cache: { maxSize: MAX_SIZE },
    timeouts: { body: '2s', bodyMinRate: '1MiB' },
    limits: { backgroundFills: 1 },
  });
  sampler = new DirSampler(archway.cacheDir);
});

after(async () => {
  const max = await sampler?.stop();
  await archway?.kill();
  await upstream?.stop();
  // Every test above ran with the sampler on: the whole run stayed within the budget.
  if (max !== undefined) assert.ok(max <= MAX_SIZE, `the cache directory held ${max} bytes at its largest (cache.maxSize ${MAX_SIZE})`);
});

describe('blob bodies are bounded by what archway knows of their size', () => {
  it('an endless chunked body stops at cache.maxBlobSize: the answer is cut, nothing is cached, the upstream connection is closed', async () => {
    const digest = someDigest();
    upstream.setBlob(digest, { kind: 'endless' });
    const before = await metric('archway_blob_fill_aborts_total', { reason: 'too-long' });
    const started = Date.now();
    const got = await get(`/v2/team/endless/blobs/${digest}`);
    assert.equal(got.status, 200);
    assert.equal(got.complete, false, 'the answer must be cut, never completed');
    assert.ok(got.bytes <= MAX_SIZE, `the client got ${got.bytes} bytes, more than cache.maxBlobSize`);
    await waitFor('the upstream response to end', () => upstream.stats(digest).open === 0);
    const sent = upstream.stats(digest).bytesSent;
    // What the kernel's socket buffers held when archway hung up comes on top of the bound.
    assert.ok(sent <= MAX_SIZE + 8 * MiB, `the upstream sent ${sent} bytes before archway stopped reading`);
    assert.equal(await metric('archway_blob_fill_aborts_total', { reason: 'too-long' }), before + 1);
    assert.equal(await dirBytes(join(archway.cacheDir, 'tmp')), 0, 'the temp file is removed');
    assert.match(archway.output(), /upstream blob refused; not cached: body longer than cache\.maxBlobSize/);
    // Not cached: the next request goes to the upstream again.
    upstream.setBlob(digest, { kind: 'bytes', body: Buffer.from('x') });
    const again = await get(`/v2/team/endless/blobs/${digest}`);
    assert.equal(upstream.stats(digest).requests, 2);
    assert.ok(again.status !== 200 || !again.complete, 'wrong bytes are never served whole');
    process.stdout.write(`endless body: ${sent} bytes sent by the upstream, ${got.bytes} reached the client, cut after ${Date.now() - started} ms\n`);
  });

  it('a body longer than the manifest that named the blob is cut at the manifest\'s size', async () => {
    const layer = randomBytes(1 * MiB);
    const digest = sha256Digest(layer);
    const manifest = imageManifestNaming(digest, layer.length);
    upstream.setManifest('team/longer', '1', manifest, 'application/vnd.oci.image.manifest.v1+json', sha256Digest(manifest));
    // The right bytes, and then some, without a Content-Length: only the manifest says where the blob ends.
    upstream.setBlob(digest, { kind: 'bytes', body: Buffer.concat([layer, randomBytes(4 * MiB)]), chunked: true });
    const m = await get('/v2/team/longer/manifests/1');
    assert.equal(m.status, 200);
    const before = await metric('archway_blob_fill_aborts_total', { reason: 'too-long' });
    const got = await get(`/v2/team/longer/blobs/${digest}`);
    assert.equal(got.headers['content-length'], String(layer.length), 'the answer is as long as the manifest says');
    assert.equal(got.complete, false, 'a body longer than its descriptor is never served whole');
    assert.ok(got.bytes < layer.length);
    assert.equal(await metric('archway_blob_fill_aborts_total', { reason: 'too-long' }), before + 1);
  });

  it('a Content-Length that disagrees with the manifest is refused before any byte: 502 naming the upstream', async () => {
    const layer = randomBytes(64 * 1024);
    const digest = sha256Digest(layer);
    const manifest = imageManifestNaming(digest, layer.length);
    upstream.setManifest('team/mismatch', '1', manifest, 'application/vnd.oci.image.manifest.v1+json', sha256Digest(manifest));
    upstream.setBlob(digest, { kind: 'bytes', body: Buffer.concat([layer, Buffer.alloc(10)]) });
    assert.equal((await get('/v2/team/mismatch/manifests/1')).status, 200);
    const got = await get(`/v2/team/mismatch/blobs/${digest}`, { keep: true });
    assert.equal(got.status, 502);
    const error = (JSON.parse(got.body.toString()) as { errors: Array<{ code: string; message: string; detail: { upstream: string } }> }).errors[0];
    assert.equal(error?.code, 'UNAVAILABLE');
    assert.equal(error?.detail.upstream, 'docker.io');
    assert.match(error?.message ?? '', /Content-Length 65546 disagrees with the manifest's size 65536/);
  });
});

describe('a blob larger than the cache', () => {
  it('is relayed uncached (header, metric), and the upstream fetch stops as soon as its client leaves', async () => {
    const digest = someDigest();
    upstream.setBlob(digest, { kind: 'claimed-length', length: 5_000_000_000_000 });
    const relays = await metric('archway_blob_uncached_relays_total', { reason: 'too-large' });
    const unread = await metric('archway_blob_fill_aborts_total', { reason: 'unread' });
    const got = await get(`/v2/team/huge/blobs/${digest}`, { stopAfter: 4 * MiB });
    assert.equal(got.status, 200);
    assert.equal(got.headers['content-length'], '5000000000000');
    assert.equal(got.headers['x-archway-uncached'], 'too-large');
    const left = Date.now();
    await waitFor('the upstream fetch to stop', () => upstream.stats(digest).open === 0, 5000);
    const stoppedAfterMs = Date.now() - left;
    const sent = upstream.stats(digest).bytesSent;
    // What the client read, the 8 MiB relay window, and what socket buffers held.
    assert.ok(sent <= 4 * MiB + 8 * MiB + 16 * MiB, `the upstream sent ${sent} bytes`);
    assert.equal(await metric('archway_blob_uncached_relays_total', { reason: 'too-large' }), relays + 1);
    assert.equal(await metric('archway_blob_fill_aborts_total', { reason: 'unread' }), unread + 1);
    assert.ok((await dirBytes(archway.cacheDir)) < MiB, 'nothing of it was written');
    process.stdout.write(`5 TB Content-Length: upstream stopped ${stoppedAfterMs} ms after the client left, having sent ${sent} bytes\n`);
  });
});

describe('a trickling upstream', () => {
  it('is cut by the body deadline, and every coalesced client is released', async () => {
    const body = randomBytes(MiB);
    const digest = sha256Digest(body);
    // A byte every 200 ms: bodyIdle never trips; the whole body would take days.
    upstream.setBlob(digest, { kind: 'trickle', body, chunkBytes: 1, everyMs: 200 });
    const before = await metric('archway_blob_fill_aborts_total', { reason: 'deadline' });
    const started = Date.now();
    const answers = await Promise.all([0, 1, 2].map(() => get(`/v2/team/trickle/blobs/${digest}`)));
    const ms = Date.now() - started;
    for (const a of answers) assert.equal(a.complete, false);
    assert.equal(upstream.stats(digest).requests, 1, 'the three clients shared one fill');
    // timeouts.body is 2 s here (1 MiB at bodyMinRate 1 MiB/s needs less).
    assert.ok(ms >= 1900 && ms < 6000, `released after ${ms} ms`);
    assert.equal(await metric('archway_blob_fill_aborts_total', { reason: 'deadline' }), before + 1);
    await waitFor('the upstream connection to close', () => upstream.stats(digest).open === 0, 3000);
    process.stdout.write(`trickle: 3 coalesced clients released after ${ms} ms\n`);
  });
});

describe('fills nobody waits for', () => {
  it('one may go on in the background (limits.backgroundFills: 1) and is cached; the next is cancelled', async () => {
    const first = randomBytes(MiB);
    const second = randomBytes(MiB);
    const [d1, d2] = [sha256Digest(first), sha256Digest(second)];
    // 1 MiB in 1.2 s: within the body deadline, slow enough to leave both mid-way.
    for (const [d, body] of [[d1, first], [d2, second]] as const) upstream.setBlob(d, { kind: 'trickle', body, chunkBytes: 64 * 1024, everyMs: 75 });
    const unread = await metric('archway_blob_fill_aborts_total', { reason: 'unread' });
    await get(`/v2/team/bg/blobs/${d1}`, { stopAfter: 64 * 1024 });
    await get(`/v2/team/bg/blobs/${d2}`, { stopAfter: 64 * 1024 });
    await waitFor('the second fill to be cancelled', async () => (await metric('archway_blob_fill_aborts_total', { reason: 'unread' })) === unread + 1);
    await waitFor('the second upstream response to be closed', () => upstream.stats(d2).open === 0, 3000);
    assert.ok(upstream.stats(d2).bytesSent < second.length, 'the cancelled fill stopped before the end');
    await waitFor('the first fill to finish in the background', () => upstream.stats(d1).open === 0, 5000);
    const hit = await get(`/v2/team/bg/blobs/${d1}`, { keep: true });
    assert.equal(hit.complete, true);
    assert.ok(hit.body.equals(first));
    assert.equal(upstream.stats(d1).requests, 1, 'the background fill cached it: no second fetch');
  });
});
