// Verified bytes from archway's own disk (issue 13): a cached blob whose file
// rotted while archway was stopped (one byte flipped) is never served as a
// complete 200; the copy is removed, counted and logged, and the next request
// fetches it again from the real registry. A Range GET of such a blob gets the
// right bytes (the whole copy is verified first). With cache.scrub, a damaged
// file is found and removed without any request, also one already trusted.
import assert from 'node:assert/strict';
import { access, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { Agent, request } from 'undici';
import { startArchwayProcess, type ArchwayProcess } from '../harness/archway-process.ts';
import { digestHex, sha256Digest as sha256 } from '../harness/digest.ts';
import { buildImage, type BuiltImage } from '../harness/images.ts';
import { scrapeMetric } from '../harness/metrics.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

const KiB = 1024;
const MiB = 1024 * KiB;
const REPO = 'team/rot';
const DAMAGED = 'archway_cache_damaged_blobs_total';

let work: string;
let registry: RegistryHandle;
let image: BuiltImage;
/** The cache the first archway filled: every layer of the image, good. */
let cacheDir: string;
const client = new Agent({ keepAliveTimeout: 1000 });

function blobFile(digest: string): string {
  const hex = digestHex(digest);
  return join(cacheDir, 'blobs', 'sha256', hex.slice(0, 2), hex);
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

/** Flip one byte in the middle of a cached file; its size stays, only the digest can tell. */
async function rot(digest: string): Promise<void> {
  const path = blobFile(digest);
  const bytes = await readFile(path);
  const at = Math.floor(bytes.length / 2);
  bytes[at] = (bytes[at] as number) ^ 0x01;
  await writeFile(path, bytes);
  assert.notEqual(sha256(bytes), digest);
}

interface Got {
  status: number;
  body: Buffer;
  /** The body ended with an error (a cut connection), not cleanly. */
  cut: boolean;
}

async function get(url: string, headers: Record<string, string> = {}): Promise<Got> {
  const res = await request(url, { dispatcher: client, headers, signal: AbortSignal.timeout(20_000) });
  const chunks: Buffer[] = [];
  let cut = false;
  try {
    for await (const c of res.body) chunks.push(c as Buffer);
  } catch {
    cut = true;
  }
  return { status: res.statusCode, body: Buffer.concat(chunks), cut };
}

async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await sleep(50);
  }
}

/** Blob GETs of this digest the registry answered. */
async function registryGets(digest: string): Promise<number> {
  return (await registry.requests()).filter((r) => r.method === 'GET' && r.path.endsWith(`/blobs/${digest}`)).length;
}

function configFor(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    upstreams: { 'docker.io': { url: registry.url } },
    defaultUpstream: 'docker.io',
    log: { level: 'info' },
    cache: { dir: cacheDir, ...extra },
  };
}

function original(digest: string): Promise<Buffer> {
  const blob = image.blobs.get(digest);
  assert.ok(blob, `no built blob ${digest}`);
  return readFile(blob.path);
}

before(async () => {
  work = await tempDir('archway-disk-rot-');
  cacheDir = join(work, 'cache');
  registry = await startRegistry();
  image = await buildImage({
    dir: join(work, 'image'),
    tag: '1',
    platforms: [{ os: 'linux', architecture: 'amd64' }],
    format: 'oci',
    layerSizes: [4 * MiB, 1 * MiB, 512 * KiB, 768 * KiB],
    seed: 'disk-rot',
    index: false,
  });
  await pushLayout(image, { hostPort: registry.hostPort, name: REPO });
  // Fill the cache once, then stop: what follows starts on a cache archway wrote itself.
  const first = await startArchwayProcess(configFor());
  try {
    for (const { digest } of image.manifests[0]!.layers) {
      const got = await get(`${first.url}/v2/${REPO}/blobs/${digest}`);
      assert.equal(got.status, 200);
      assert.equal(sha256(got.body), digest);
    }
    assert.equal((await first.signal('SIGTERM')).code, 0);
  } finally {
    await first.kill();
  }
  for (const { digest } of image.manifests[0]!.layers) assert.ok(await exists(blobFile(digest)), `layer ${digest} cached`);
});

after(async () => {
  await client.close();
  await registry?.stop();
  await removeDir(work);
});

describe('a cached blob rotted on disk', () => {
  let archway: ArchwayProcess | undefined;
  after(async () => {
    await archway?.kill();
  });

  it('is cut before its last byte, removed, counted and logged; the next GET is the right bytes from upstream', async () => {
    const { digest, size } = image.manifests[0]!.layers[0]!;
    await rot(digest);
    archway = await startArchwayProcess(configFor());
    const before = await registryGets(digest);

    const bad = await get(`${archway.url}/v2/${REPO}/blobs/${digest}`);
    assert.equal(bad.status, 200, 'headers go out before the last byte is read');
    assert.ok(bad.cut, 'the answer is cut, never a complete 200');
    assert.ok(bad.body.length < size, `short body: ${bad.body.length} of ${size}`);
    assert.notEqual(sha256(bad.body), digest);

    await waitFor('the damaged file is removed', async () => !(await exists(blobFile(digest))));
    assert.equal(await scrapeMetric(archway.url, DAMAGED), 1);
    await archway.waitForOutput(new RegExp(`cached blob is damaged.*${digest}|${digest}.*cached blob is damaged`));
    assert.equal(await registryGets(digest), before, 'finding the damage fetched nothing');

    const good = await get(`${archway.url}/v2/${REPO}/blobs/${digest}`);
    assert.equal(good.status, 200);
    assert.equal(good.cut, false);
    assert.equal(sha256(good.body), digest);
    assert.ok(good.body.equals(await original(digest)));
    assert.equal(await registryGets(digest), before + 1, 'healed with one fetch from the registry');
    // And the healed copy is served from the cache again, whole.
    const again = await get(`${archway.url}/v2/${REPO}/blobs/${digest}`);
    assert.equal(sha256(again.body), digest);
    assert.equal(await registryGets(digest), before + 1);
    assert.equal(await scrapeMetric(archway.url, DAMAGED), 1);
  });

  it('a Range GET of a rotted, not yet verified blob gets the right bytes: the whole copy is checked first', async () => {
    assert.ok(archway);
    const { digest } = image.manifests[0]!.layers[1]!;
    // Rotted under the running archway, which has not read it since it started.
    await rot(digest);
    const before = await registryGets(digest);
    const part = await get(`${archway.url}/v2/${REPO}/blobs/${digest}`, { range: 'bytes=100-65635' });
    assert.equal(part.status, 206);
    assert.equal(part.cut, false);
    assert.ok(part.body.equals((await original(digest)).subarray(100, 65636)), 'the range holds the right bytes');
    assert.equal(await scrapeMetric(archway.url, DAMAGED), 2);
    assert.equal(await registryGets(digest), before + 1, 'fetched again from the registry');
    // The file now on disk is the good one.
    await waitFor('the healed copy is stored', async () => (await exists(blobFile(digest))) && sha256(await readFile(blobFile(digest))) === digest);
    await archway.signal('SIGTERM');
  });
});

// On the cache the tests above left: layers 0 and 1 healed, 2 and 3 never rotted yet.
describe('cache.scrub', () => {
  let archway: ArchwayProcess | undefined;
  after(async () => {
    await archway?.kill();
  });

  it('removes a damaged file without any request, also one that was verified and trusted before it rotted', async () => {
    const layers = image.manifests[0]!.layers;
    const untouched = layers[2]!.digest;
    const trusted = layers[3]!.digest;
    await rot(untouched);
    archway = await startArchwayProcess(configFor({ scrub: '2s', scrubRate: '64MiB' }));
    // Read once whole: verified in this process, so reads no longer hash it.
    const first = await get(`${archway.url}/v2/${REPO}/blobs/${trusted}`);
    assert.equal(sha256(first.body), trusted);
    await rot(trusted);
    const requestsBefore = (await registry.requests()).length;

    await waitFor('the scrub removes both damaged files', async () => !(await exists(blobFile(untouched))) && !(await exists(blobFile(trusted))));
    assert.equal(await scrapeMetric(archway.url, DAMAGED), 2);
    assert.ok((await scrapeMetric(archway.url, 'archway_cache_scrubbed_bytes_total')) > 0);
    await archway.waitForOutput(/cache scrub pass done/);
    assert.equal((await registry.requests()).length, requestsBefore, 'the scrub asked the registry for nothing');

    for (const digest of [untouched, trusted]) {
      const got = await get(`${archway.url}/v2/${REPO}/blobs/${digest}`);
      assert.equal(got.status, 200);
      assert.equal(sha256(got.body), digest);
    }
    // The healthy blobs survived the scrub.
    for (const { digest } of layers.slice(0, 2)) assert.ok(await exists(blobFile(digest)), `${digest} kept`);
  });
});
