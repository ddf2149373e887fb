// A full cache disk must not stop pulls: archway streams from the upstream
// without caching, says so (log line, metric), and caches again once there is
// room. The cache lives on a small tmpfs of its own.
import assert from 'node:assert/strict';
import { mkdir, open, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { startArchway, type ArchwayHandle } from '../harness/archway.ts';
import { sha256Digest as sha256 } from '../harness/digest.ts';
import { ACCEPT, http } from '../harness/http.ts';
import { buildImage, type BuiltImage } from '../harness/images.ts';
import { run } from '../harness/process.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

const MiB = 1024 * 1024;
let work: string;
let mountPoint: string;
let registry: RegistryHandle;
let archway: ArchwayHandle;
let built: BuiltImage;

/** Fill the filesystem to the last byte. */
async function fillDisk(path: string): Promise<void> {
  const file = await open(path, 'w');
  const chunk = Buffer.alloc(256 * 1024, 1);
  try {
    for (;;) await file.write(chunk);
  } catch (err) {
    assert.equal((err as NodeJS.ErrnoException).code, 'ENOSPC');
  } finally {
    await file.close();
  }
}

before(async () => {
  assert.equal(process.getuid?.(), 0, 'the disk-full test mounts a tmpfs and must run as root (CI does)');
  work = await tempDir('archway-disk-full-');
  mountPoint = join(work, 'small-disk');
  await mkdir(mountPoint);
  await run('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mountPoint]);
  registry = await startRegistry();
  built = await buildImage({
    dir: join(work, 'img'),
    tag: '1',
    platforms: [{ os: 'linux', architecture: 'amd64' }],
    format: 'oci',
    layerSizes: [12 * MiB, 1 * MiB],
    seed: 'disk-full',
    index: false,
  });
  await pushLayout(built, { hostPort: registry.hostPort, name: 'team/app' });
  archway = await startArchway({ upstreams: { 'docker.io': { url: registry.url } }, cacheDir: join(mountPoint, 'cache') });
});

after(async () => {
  await archway?.stop();
  await registry?.stop();
  if (mountPoint) await run('umount', [mountPoint], { allowFail: true });
  if (work) await removeDir(work);
});

const big = () => built.manifests[0]!.layers[0]!;
const small = () => built.manifests[0]!.layers[1]!;

describe('disk full', () => {
  it('pulls succeed from the upstream without caching, and the failure is logged and measured', async () => {
    await fillDisk(join(mountPoint, 'filler'));
    const manifest = await http(`${archway.url}/v2/team/app/manifests/1`, { headers: { accept: ACCEPT.all } });
    assert.equal(manifest.status, 200);
    assert.equal(manifest.headers['docker-content-digest'], built.topDigest);
    // Several clients at once for a blob far larger than the relay window: each gets every byte, verified.
    const url = `${archway.url}/v2/team/app/blobs/${big().digest}`;
    const answers = await Promise.all([http(url), http(url), http(url)]);
    for (const a of answers) {
      assert.equal(a.status, 200);
      assert.equal(sha256(a.body), big().digest);
    }
    assert.equal(await archway.metric('archway_cache_storage_failing'), 1);
    assert.ok((await archway.metric('archway_cache_write_failures_total')) >= 1);
    assert.ok(archway.logs().some((l) => l.msg === 'cache storage is failing: serving from the upstream without caching'));
    assert.equal(await archway.metric('archway_cache_blobs'), 0, 'nothing was cached');
    assert.deepEqual(await readdir(join(archway.cacheDir, 'tmp')), [], 'no temp files left');
  });

  it('caching resumes when space returns', async () => {
    await rm(join(mountPoint, 'filler'));
    registry.clearRequests();
    const first = await http(`${archway.url}/v2/team/app/blobs/${small().digest}`);
    assert.equal(sha256(first.body), small().digest);
    // The commit (and with it the "works again") may land just after the client's last byte.
    for (const deadline = Date.now() + 5000; (await archway.metric('archway_cache_storage_failing')) !== 0; await sleep(20)) {
      assert.ok(Date.now() < deadline, 'storage still reported failing after a successful write');
    }
    assert.ok(archway.logs().some((l) => l.msg === 'cache storage works again: caching resumed'));
    const again = await http(`${archway.url}/v2/team/app/blobs/${small().digest}`);
    assert.equal(sha256(again.body), small().digest);
    const gets = (await registry.requests()).filter((q) => q.method === 'GET' && q.path.endsWith(small().digest));
    assert.equal(gets.length, 1, 'the second request came from the cache');
  });

  it('a blob that outgrows the disk mid-download is still served whole', async () => {
    // 12 MiB on a 4 MiB disk: the first part is written, then ENOSPC, then the rest is relayed.
    const relays = () => archway.metric('archway_blob_uncached_relays_total', { reason: 'storage' });
    const relaysBefore = await relays();
    const logsBefore = archway.logs().length;
    const r = await http(`${archway.url}/v2/team/app/blobs/${big().digest}`);
    assert.equal(r.status, 200);
    assert.equal(sha256(r.body), big().digest);
    assert.equal((await relays()) - relaysBefore, 1, 'relayed uncached because the disk refused it');
    const relayed = archway.logs().slice(logsBefore).find((l) => l.digest === big().digest && l.reason === 'storage' && typeof l.msg === 'string' && l.msg.startsWith('relaying blob without caching it'));
    assert.ok(relayed, 'the relay is logged with its reason');
    const onDisk = Number(relayed.onDisk);
    assert.ok(onDisk > 0 && onDisk < big().size, `the disk filled mid-download: ${onDisk} of ${big().size} bytes were written first`);
    assert.ok(archway.logs().slice(logsBefore).some((l) => l.msg === 'cache storage is failing: serving from the upstream without caching' && l.err === 'ENOSPC'));
    await assert.rejects(stat(join(archway.cacheDir, 'blobs', 'sha256', big().digest.slice(7, 9), big().digest.slice(7))), 'not cached');
    assert.deepEqual(await readdir(join(archway.cacheDir, 'tmp')), []);
  });
});
