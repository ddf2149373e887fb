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
let huge: BuiltImage;

before(async () => {
  work = await tempDir('archway-shutdown-');
  registry = await startRegistry();
  built = await buildImage({ dir: join(work, 'img'), tag: '1', platforms: [{ os: 'linux', architecture: 'amd64' }], format: 'oci', layerSizes: [8 * 1024 * 1024], seed: 'shutdown', index: false });
  await pushLayout(built, { hostPort: registry.hostPort, name: 'library/big' });
  huge = await buildImage({ dir: join(work, 'huge'), tag: '1', platforms: [{ os: 'linux', architecture: 'amd64' }], format: 'oci', layerSizes: [48 * 1024 * 1024], seed: 'shutdown-huge', index: false });
  await pushLayout(huge, { hostPort: registry.hostPort, name: 'library/huge' });
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
    // The reader takes one chunk, then waits until the refusal below was seen: the response is in flight throughout.
    let resume!: () => void;
    const refusalSeen = new Promise<void>((r) => (resume = r));
    let gotFirst!: () => void;
    const firstChunk = new Promise<void>((r) => (gotFirst = r));
    const done = (async () => {
      for await (const chunk of slow.body) {
        chunks.push(chunk as Buffer);
        if (chunks.length === 1) {
          gotFirst();
          await refusalSeen;
        }
      }
    })();
    await firstChunk;
    const fromOffset = proc.output().length;
    const exit = proc.signal('SIGTERM');
    await proc.waitForOutput(/shutting down/, { fromOffset });
    // New work is refused while the old finishes (a fresh connection: 503 or refused); the
    // listener closes a moment after the log line, so ask until it refuses, with a deadline.
    let late: number | string = 'not asked';
    for (const deadline = Date.now() + 3000; Date.now() < deadline; await sleep(20)) {
      late = await fetch(`${proc.url}/v2/`, { headers: { connection: 'close' } }).then(
        (r) => r.status,
        () => 'refused',
      );
      if (late === 503 || late === 'refused') break;
    }
    assert.ok(late === 503 || late === 'refused', `a new request during shutdown got ${late}`);
    resume();
    await done;
    assert.equal(sha256(Buffer.concat(chunks)), layer.digest, 'the in-flight download completed intact');
    const { code, ms } = await exit;
    assert.equal(code, 0, proc.output());
    assert.ok(ms < 4000, `exit took ${ms} ms: idle connections must not hold shutdown to its limit`);
    assert.match(proc.output(), /"signal":"SIGTERM".*shutting down/);
    const tmp = await readdir(join(proc.cacheDir, 'tmp')).catch(() => []);
    assert.deepEqual(tmp, []);
  });

  it('a client that stops reading is cut when shutdownTimeout runs out, and archway exits 0 then', async () => {
    const SHUTDOWN_MS = 1500;
    proc = await startArchwayProcess({ upstreams: { 'docker.io': { url: registry.url } }, defaultUpstream: 'docker.io', server: { shutdownTimeout: `${SHUTDOWN_MS}ms` } });
    const layer = huge.manifests[0]!.layers[0]!;
    const url = `${proc.url}/v2/huge/blobs/${layer.digest}`;
    assert.equal(sha256(Buffer.from(await (await request(url)).body.arrayBuffer())), layer.digest);
    // Far more than loopback socket buffers hold: archway cannot finish writing it while nobody reads.
    const stalled = await request(url);
    const it = stalled.body[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
    let received = (await it.next()).value?.length ?? 0;
    const fromOffset = proc.output().length;
    const exit = proc.signal('SIGTERM', SHUTDOWN_MS + 10_000);
    await proc.waitForOutput(/shutting down/, { fromOffset });
    const { code, ms } = await exit;
    assert.equal(code, 0, proc.output());
    assert.ok(ms >= SHUTDOWN_MS - 100, `exited after ${ms} ms: the stalled response had its ${SHUTDOWN_MS} ms to finish`);
    assert.ok(ms < SHUTDOWN_MS + 3000, `exited after ${ms} ms: the stalled response was not cut at ${SHUTDOWN_MS} ms`);
    // Reading now finds the response cut short: an error, never a clean end.
    let ended: 'error' | 'clean' = 'clean';
    try {
      for (let r = await it.next(); !r.done; r = await it.next()) received += r.value.length;
    } catch {
      ended = 'error';
    }
    assert.equal(ended, 'error', `the body ended cleanly after ${received} of ${layer.size} bytes`);
    assert.ok(received < layer.size, `${received} of ${layer.size} bytes`);
  });

  it('SIGINT while idle exits 0 promptly', async () => {
    proc = await startArchwayProcess({ upstreams: { 'docker.io': { url: registry.url } }, defaultUpstream: 'docker.io' });
    const { code, ms } = await proc.signal('SIGINT');
    assert.equal(code, 0);
    assert.ok(ms < 5000, `exited after ${ms} ms`);
  });
});
