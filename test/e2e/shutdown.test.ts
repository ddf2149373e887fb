// SIGTERM as an orchestrator sends it: stop accepting, let in-flight
// responses finish, remove temp files, exit 0.
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { sha256Digest as sha256 } from '../harness/digest.ts';
import { startArchwayProcess, type ArchwayProcess } from '../harness/archway-process.ts';
import { buildImage, type BuiltImage } from '../harness/images.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';


let work: string;
let registry: RegistryHandle;
let built: BuiltImage;

before(async () => {
  work = await tempDir('archway-shutdown-');
  registry = await startRegistry();
  built = await buildImage({ dir: join(work, 'img'), tag: '1', platforms: [{ os: 'linux', architecture: 'amd64' }], format: 'oci', layerSizes: [8 * 1024 * 1024], seed: 'shutdown', index: false });
  await pushLayout(built, { hostPort: registry.hostPort, name: 'library/big' });
});

after(async () => {
  await registry?.stop();
  await removeDir(work);
});

describe('graceful shutdown', () => {
  let proc: ArchwayProcess;
  after(() => proc?.kill());

  it('finishes a response in flight, refuses new work, removes temp files and exits 0', async () => {
    proc = await startArchwayProcess({ upstreams: { 'docker.io': { url: registry.url } }, defaultUpstream: 'docker.io' });
    const layer = built.manifests[0]!.layers[0]!;
    // Cache the blob, then read it slowly so the response is still going when SIGTERM arrives.
    const warm = await request(`${proc.url}/v2/big/blobs/${layer.digest}`);
    assert.equal(sha256(Buffer.from(await warm.body.arrayBuffer())), layer.digest);

    const slow = await request(`${proc.url}/v2/big/blobs/${layer.digest}`, { highWaterMark: 16 * 1024 } as Parameters<typeof request>[1]);
    const chunks: Buffer[] = [];
    let first = true;
    const done = (async () => {
      for await (const chunk of slow.body) {
        chunks.push(chunk as Buffer);
        if (first) {
          first = false;
          await sleep(300);
        }
      }
    })();
    await sleep(100);
    const exit = proc.signal('SIGTERM');
    await sleep(100);
    // New work is refused while the old finishes (a fresh connection: 503 or refused).
    const late = await fetch(`${proc.url}/v2/`, { headers: { connection: 'close' } }).then(
      (r) => r.status,
      () => 'refused',
    );
    assert.ok(late === 503 || late === 'refused', `a new request during shutdown got ${late}`);
    await done;
    assert.equal(sha256(Buffer.concat(chunks)), layer.digest, 'the in-flight download completed intact');
    const { code, ms } = await exit;
    assert.equal(code, 0, proc.output());
    assert.ok(ms < 4000, `exit took ${ms} ms: idle connections must not hold shutdown to its limit`);
    assert.match(proc.output(), /"signal":"SIGTERM".*shutting down/);
    const tmp = await readdir(join(proc.cacheDir, 'tmp')).catch(() => []);
    assert.deepEqual(tmp, []);
  });

  it('SIGINT while idle exits 0 promptly', async () => {
    proc = await startArchwayProcess({ upstreams: { 'docker.io': { url: registry.url } }, defaultUpstream: 'docker.io' });
    const { code, ms } = await proc.signal('SIGINT');
    assert.equal(code, 0);
    assert.ok(ms < 5000, `exited after ${ms} ms`);
  });
});
