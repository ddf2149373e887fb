// Memory must not grow with blob size: bodies are streamed, never buffered.
// archway runs as its own process so its peak RSS (VmHWM) is its own.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { startArchwayProcess, type ArchwayProcess } from '../harness/archway-process.ts';
import { buildImage, type BuiltImage } from '../harness/images.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

const MiB = 1024 * 1024;
const BLOB = 160 * MiB;

let work: string;
let registry: RegistryHandle;
let built: BuiltImage;
let warmup: BuiltImage;
let proc: ArchwayProcess;

before(async () => {
  work = await tempDir('archway-memory-');
  registry = await startRegistry();
  built = await buildImage({ dir: join(work, 'img'), tag: '1', platforms: [{ os: 'linux', architecture: 'amd64' }], format: 'oci', layerSizes: [BLOB], seed: 'memory', index: false });
  await pushLayout(built, { hostPort: registry.hostPort, name: 'library/huge' });
  warmup = await buildImage({ dir: join(work, 'warm'), tag: '1', platforms: [{ os: 'linux', architecture: 'amd64' }], format: 'oci', layerSizes: [32 * MiB], seed: 'memory-warmup', index: false });
  await pushLayout(warmup, { hostPort: registry.hostPort, name: 'library/warmup' });
  proc = await startArchwayProcess({ upstreams: { 'docker.io': { url: registry.url } }, defaultUpstream: 'docker.io' });
});

after(async () => {
  await proc?.kill();
  await registry?.stop();
  await removeDir(work);
});

async function peakRssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1]);
  return kb / 1024;
}

/** Download and hash without keeping the body. */
async function hashDownload(url: string): Promise<{ digest: string; bytes: number }> {
  const res = await request(url);
  assert.equal(res.statusCode, 200);
  const hash = createHash('sha256');
  let bytes = 0;
  for await (const chunk of res.body) {
    hash.update(chunk as Buffer);
    bytes += (chunk as Buffer).length;
  }
  return { digest: `sha256:${hash.digest('hex')}`, bytes };
}

describe('memory', () => {
  it(`stays flat while ${BLOB / MiB} MiB blobs stream cold (3 coalesced clients) and warm`, async () => {
    const layer = built.manifests[0]!.layers[0]!;
    assert.ok(layer.size > 150 * MiB);
    const pid = proc.child.pid!;
    // The same paths (cold, coalesced, warm) on a 32 MiB blob first: the baseline then holds
    // the heap's working size, and what the 160 MiB blob adds is what grows with size.
    const warmUrl = `${proc.url}/v2/warmup/blobs/${warmup.manifests[0]!.layers[0]!.digest}`;
    await Promise.all([hashDownload(warmUrl), hashDownload(warmUrl), hashDownload(warmUrl)]);
    await hashDownload(warmUrl);
    const baseline = await peakRssMiB(pid);
    const url = `${proc.url}/v2/huge/blobs/${layer.digest}`;
    const cold = await Promise.all([hashDownload(url), hashDownload(url), hashDownload(url)]);
    for (const c of cold) assert.equal(c.digest, layer.digest);
    const warm = await hashDownload(url);
    assert.equal(warm.digest, layer.digest);
    const peak = await peakRssMiB(pid);
    // Buffering one blob would add 160 MiB; streaming stays within ordinary heap noise.
    assert.ok(peak - baseline < 48, `peak RSS grew by ${Math.round(peak - baseline)} MiB (baseline ${Math.round(baseline)} MiB)`);
  });
});
