// Fail closed across upstreams: a blob is shared with another upstream's
// clients without asking only on a positive PUBLIC marker. A blob from an
// isolated (private) upstream whose records could not be written (the
// confirmations directory is unwritable: ENOTDIR, which root cannot bypass)
// is, after a restart, still not public: another upstream that lacks it
// answers its clients 404, after its own HEAD. Public content still crosses
// upstreams freely, also after a restart; a public blob with no record at
// all (an older cache) costs one HEAD, and is recorded then.
// archway runs as its own process; a restart stops it (SIGTERM, exit 0) and
// starts a new process on the same port and cache directory.
import assert from 'node:assert/strict';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startArchwayProcess, type ArchwayProcess } from '../harness/archway-process.ts';
import { sha256Digest as sha256 } from '../harness/digest.ts';
import { http } from '../harness/http.ts';
import { scrapeMetric } from '../harness/metrics.ts';
import { buildImage, type BuiltImage } from '../harness/images.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

let work: string;
let privateRegistry: RegistryHandle;
let publicRegistry: RegistryHandle;
let archway: ArchwayProcess;
let secret: BuiltImage;
let open: BuiltImage;

const layerOf = (image: BuiltImage) => image.manifests[0]!.layers[0]!.digest;
const blobRequests = async (registry: RegistryHandle, digest: string) => (await registry.requests()).filter((r) => r.path.endsWith(`/blobs/${digest}`));

before(async () => {
  work = await tempDir('archway-access-markers-');
  [privateRegistry, publicRegistry] = await Promise.all([startRegistry(), startRegistry()]);
  const single = (seed: string) =>
    buildImage({ dir: join(work, seed), tag: '1', platforms: [{ os: 'linux', architecture: 'amd64' }], index: false, format: 'oci', layerSizes: [8192], seed });
  secret = await single('markers-secret');
  open = await single('markers-open');
  await pushLayout(secret, { hostPort: privateRegistry.hostPort, name: 'team/secret' });
  await pushLayout(open, { hostPort: publicRegistry.hostPort, name: 'library/open' });
  archway = await startArchwayProcess(config());
});

function config(cacheDir?: string) {
  return {
    defaultUpstream: 'public.test',
    upstreams: {
      'public.test': { url: publicRegistry.url },
      // The same public registry under a second name: a second public upstream.
      'mirror.test': { url: publicRegistry.url },
      'private.test': { url: privateRegistry.url, repositoryIsolation: true },
    },
    ...(cacheDir ? { cache: { dir: cacheDir } } : {}),
  };
}

/** A clean stop, then `between` (archway is down), then a new process on the same port and cache. */
async function restart(between?: () => Promise<void>): Promise<void> {
  const stopped = await archway.signal('SIGTERM');
  assert.equal(stopped.code, 0, archway.output());
  await between?.();
  archway = await startArchwayProcess(config(archway.cacheDir), { port: archway.port });
}

/** archway's complete JSON log lines so far (the last line may still be arriving). */
const logLines = () =>
  archway
    .output()
    .split('\n')
    .filter((l) => l.startsWith('{') && l.endsWith('}'))
    .map((l) => JSON.parse(l) as Record<string, unknown>);

after(async () => {
  await archway?.kill();
  await privateRegistry?.stop();
  await publicRegistry?.stop();
  await removeDir(work);
});

describe('records of who may see a blob', () => {
  it('a private blob whose records could not be written is not public after a restart', async () => {
    const digest = layerOf(secret);
    const accessDir = join(archway.cacheDir, 'access');
    // Every confirmation write now fails (ENOTDIR): as on a disk that refuses them.
    await rm(accessDir, { recursive: true, force: true });
    await writeFile(accessDir, 'not a directory');
    const pulled = await http(`${archway.url}/v2/private.test/team/secret/blobs/${digest}`);
    assert.equal(pulled.status, 200);
    assert.equal(sha256(pulled.body), digest);
    // The refusal was seen, said and counted (the write was tried, not skipped).
    assert.ok(
      logLines().some((l) => l.what === 'confirmation' && l.err === 'ENOTDIR'),
      `no log line of the refused confirmation:\n${archway.output()}`,
    );
    assert.ok((await scrapeMetric(archway.url, 'archway_cache_write_failures_total', { what: 'confirmation' })) >= 1);
    // The disk is repaired while archway is down: nothing could write the marker late.
    await restart(async () => {
      await rm(accessDir);
      await mkdir(accessDir);
    });

    publicRegistry.clearRequests();
    const leaked = await http(`${archway.url}/v2/library/open/blobs/${digest}`);
    assert.equal(leaked.status, 404, 'another upstream’s client does not get the private blob');
    assert.equal(leaked.json<{ errors: Array<{ code: string }> }>().errors[0]?.code, 'BLOB_UNKNOWN');
    assert.ok(!leaked.body.includes(pulled.body.subarray(0, 64)));
    const asked = await blobRequests(publicRegistry, digest);
    assert.deepEqual(asked.map((r) => r.method), ['HEAD'], 'the other upstream was asked, and said no');
    // Its own upstream's clients still get it.
    assert.equal((await http(`${archway.url}/v2/private.test/team/secret/blobs/${digest}`)).status, 200);
  });

  it('a public blob crosses public upstreams without a request, also after a restart', async () => {
    const digest = layerOf(open);
    assert.equal((await http(`${archway.url}/v2/library/open/blobs/${digest}`)).status, 200);
    publicRegistry.clearRequests();
    const crossed = await http(`${archway.url}/v2/mirror.test/library/open/blobs/${digest}`);
    assert.equal(crossed.status, 200);
    assert.equal(sha256(crossed.body), digest);
    await restart();
    assert.equal((await http(`${archway.url}/v2/mirror.test/library/other/blobs/${digest}`)).status, 200, 'shared as public, whatever the name');
    assert.deepEqual(await blobRequests(publicRegistry, digest), [], 'no upstream request: the PUBLIC marker vouched for it');
  });

  it('a cached public blob with no record at all (an older cache) costs one HEAD, then is recorded', async () => {
    const digest = layerOf(open);
    // Records removed while archway is down, as in a cache from before markers existed.
    await restart(async () => {
      await rm(join(archway.cacheDir, 'access'), { recursive: true, force: true });
      await mkdir(join(archway.cacheDir, 'access'));
    });
    publicRegistry.clearRequests();
    for (let i = 0; i < 3; i++) assert.equal((await http(`${archway.url}/v2/mirror.test/library/open/blobs/${digest}`)).status, 200);
    assert.deepEqual((await blobRequests(publicRegistry, digest)).map((r) => r.method), ['HEAD']);
    // Recorded on disk: the next process asks nothing.
    await restart();
    publicRegistry.clearRequests();
    assert.equal((await http(`${archway.url}/v2/mirror.test/library/open/blobs/${digest}`)).status, 200);
    assert.deepEqual(await blobRequests(publicRegistry, digest), []);
  });
});
