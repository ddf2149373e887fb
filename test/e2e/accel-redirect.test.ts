// server.accelRedirect (issue 15 §3): a real nginx in front of a real archway
// process, over a real distribution registry. Through nginx, a blob archway has
// verified in this process is sent by nginx from the cache file (X-Accel-Redirect
// to an internal location), byte-exact with the spec's headers, Range answered
// by nginx, while archway reads and writes none of its bytes; archway still
// decides access, counts the hit and logs it. A cold or not yet verified blob,
// a HEAD, and any client that talks to archway directly get archway's own
// answer as before. A file gone between archway's answer and nginx's open
// (eviction) is fetched again through archway, never answered as a 404 blob.
import assert from 'node:assert/strict';
import { readFile, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Agent } from 'undici';
import { startArchwayProcess, type ArchwayProcess } from '../harness/archway-process.ts';
import { digestHex, sha256Digest as sha256 } from '../harness/digest.ts';
import { http } from '../harness/http.ts';
import { buildImage, type BuiltImage } from '../harness/images.ts';
import { scrapeMetric } from '../harness/metrics.ts';
import { ACCEL_LOCATION, startNginxAccel, type NginxAccelHandle } from '../harness/nginx-accel.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

const MiB = 1024 * 1024;
const REPO = 'team/accel';
const TOKEN = 'accel-puller-token-0123456789';
const OTHER_TOKEN = 'accel-other-token-0123456789';
const REDIRECTS = 'archway_accel_redirects_total';

let work: string;
let registry: RegistryHandle;
let image: BuiltImage;
let archway: ArchwayProcess;
let nginx: NginxAccelHandle;
/** A client on another loopback address: not one of archway's trusted proxies. */
const untrusted = new Agent({ localAddress: '127.0.0.5' });

const auth = (token = TOKEN) => ({ authorization: `Bearer ${token}` });
const blobPath = (digest: string) => `/v2/${REPO}/blobs/${digest}`;
const layer = (i: number) => image.manifests[0]!.layers[i]!;
const original = (digest: string) => readFile(image.blobs.get(digest)!.path);

/** Bytes archway's process passed to read(2) and write(2) (files and sockets alike), from /proc. */
async function archwayIo(): Promise<number> {
  const io = await readFile(`/proc/${archway.child.pid}/io`, 'utf8');
  const field = (name: string) => Number(new RegExp(`^${name}: (\\d+)$`, 'm').exec(io)?.[1]);
  return field('rchar') + field('wchar');
}

/** nginx's log line for the one request since the last clear. */
async function onlyRequest() {
  const reqs = await nginx.requests();
  assert.equal(reqs.length, 1, JSON.stringify(reqs));
  await nginx.clearRequests();
  return reqs[0]!;
}

before(async () => {
  work = await tempDir('archway-accel-');
  registry = await startRegistry();
  image = await buildImage({
    dir: join(work, 'image'),
    tag: '1',
    platforms: [{ os: 'linux', architecture: 'amd64' }],
    format: 'oci',
    layerSizes: [8 * MiB, 1 * MiB, 512 * 1024],
    seed: 'accel-redirect',
    index: false,
  });
  await pushLayout(image, { hostPort: registry.hostPort, name: REPO });
  archway = await startArchwayProcess({
    server: { trustedProxies: ['127.0.0.1'], accelRedirect: { location: ACCEL_LOCATION } },
    upstreams: { 'docker.io': { url: registry.url } },
    defaultUpstream: 'docker.io',
    auth: {
      tokens: [
        { name: 'puller', token: TOKEN, repositories: ['team/**'] },
        { name: 'other', token: OTHER_TOKEN, repositories: ['elsewhere/**'] },
      ],
    },
    log: { level: 'info' },
  });
  nginx = await startNginxAccel({ archway: archway.hostPort, cacheDir: archway.cacheDir });
});

after(async () => {
  await nginx?.stop();
  await archway?.kill();
  await untrusted.close();
  await registry?.stop();
  await removeDir(work);
});

describe('through nginx, a verified cached blob is sent by nginx from its file', () => {
  it('cold, then unverified in this process: archway serves the bytes itself; verified: nginx sends the file', async () => {
    const { digest, size } = layer(0);
    const expected = await original(digest);
    // Cold: a fill, archway's bytes. Then stored but not read back yet: archway reads (and so verifies) it.
    for (const round of ['cold', 'unverified']) {
      await nginx.clearRequests();
      const res = await http(`${nginx.url}${blobPath(digest)}`, { headers: auth() });
      assert.equal(res.status, 200, round);
      assert.ok(res.body.equals(expected), round);
      const logged = await onlyRequest();
      assert.equal(logged.uri, blobPath(digest), `${round}: relayed from archway, not sent from a file`);
    }
    assert.equal(await scrapeMetric(archway.url, REDIRECTS), 0);

    const ioBefore = await archwayIo();
    const res = await http(`${nginx.url}${blobPath(digest)}`, { headers: auth() });
    const ioAfter = await archwayIo();
    assert.equal(res.status, 200);
    assert.ok(res.body.equals(expected), 'byte-exact');
    assert.equal(res.headers['docker-content-digest'], digest);
    assert.equal(res.headers['content-type'], 'application/octet-stream');
    assert.equal(res.headers['content-length'], String(size));
    assert.equal(res.headers['docker-distribution-api-version'], 'registry/2.0');
    assert.equal(res.headers['x-content-type-options'], 'nosniff');
    assert.equal(res.headers['x-accel-redirect'], undefined, 'the redirect stays between archway and nginx');
    const logged = await onlyRequest();
    assert.equal(logged.uri, `${ACCEL_LOCATION}sha256/${digestHex(digest).slice(0, 2)}/${digestHex(digest)}`);
    assert.equal(logged.bodyBytes, size);
    // archway neither read the file nor wrote its bytes (8 MiB): what it did read and write is headers and a log line.
    assert.ok(ioAfter - ioBefore < 256 * 1024, `archway moved ${ioAfter - ioBefore} bytes for an ${size}-byte blob`);
    assert.equal(await scrapeMetric(archway.url, REDIRECTS), 1);
    assert.equal(await scrapeMetric(archway.url, 'archway_cache_lookups_total', { kind: 'blob', outcome: 'hit' }), 2);
    await archway.waitForOutput(new RegExp(`"url":"${blobPath(digest)}","status":200,"complete":true,"ms":[\\d.]+,"cache":"hit","accel":true`));
  });

  it('a Range is answered by nginx from the file', async () => {
    const { digest, size } = layer(0);
    const expected = await original(digest);
    const res = await http(`${nginx.url}${blobPath(digest)}`, { headers: { ...auth(), range: 'bytes=1000-1999' } });
    assert.equal(res.status, 206);
    assert.equal(res.headers['content-range'], `bytes 1000-1999/${size}`);
    assert.ok(res.body.equals(expected.subarray(1000, 2000)));
    assert.equal(res.headers['docker-content-digest'], digest);
    assert.ok((await onlyRequest()).uri.startsWith(ACCEL_LOCATION));
  });

  it('the internal location is not reachable from outside', async () => {
    const hex = digestHex(layer(0).digest);
    const res = await http(`${nginx.url}${ACCEL_LOCATION}sha256/${hex.slice(0, 2)}/${hex}`);
    assert.equal(res.status, 404);
    assert.notEqual(res.body.length, layer(0).size);
    await nginx.clearRequests();
  });

  it('HEAD is answered by archway', async () => {
    const { digest, size } = layer(0);
    const res = await http(`${nginx.url}${blobPath(digest)}`, { method: 'HEAD', headers: auth() });
    assert.equal(res.status, 200);
    assert.equal(res.headers['content-length'], String(size));
    assert.equal(res.headers['docker-content-digest'], digest);
    assert.equal((await onlyRequest()).uri, blobPath(digest));
  });

  it('a client without a grant for the repository gets archway’s refusal and no file', async () => {
    const { digest } = layer(0);
    const before = await scrapeMetric(archway.url, REDIRECTS);
    for (const headers of [auth(OTHER_TOKEN), {}]) {
      const res = await http(`${nginx.url}${blobPath(digest)}`, { headers });
      assert.ok(res.status === 401 || res.status === 403, String(res.status));
      assert.ok(Array.isArray(res.json<{ errors: unknown[] }>().errors), 'the spec error envelope');
      assert.equal((await onlyRequest()).uri, blobPath(digest));
    }
    assert.equal(await scrapeMetric(archway.url, REDIRECTS), before);
  });
});

describe('a client talking to archway directly gets the bytes, marker or not', () => {
  it('from a trusted address without the marker, and from another address with a forged one', async () => {
    const { digest } = layer(0);
    const expected = await original(digest);
    const before = await scrapeMetric(archway.url, REDIRECTS);
    for (const opts of [{ headers: auth() }, { headers: { ...auth(), 'x-archway-accel': ACCEL_LOCATION }, dispatcher: untrusted }]) {
      const res = await http(`${archway.url}${blobPath(digest)}`, opts);
      assert.equal(res.status, 200);
      assert.equal(res.headers['x-accel-redirect'], undefined);
      assert.ok(res.body.equals(expected));
    }
    assert.equal(await scrapeMetric(archway.url, REDIRECTS), before);
  });
});

describe('the file is gone between archway’s answer and nginx’s open (evicted)', () => {
  it('nginx asks archway again without the marker, and the client gets the whole blob fetched anew', async () => {
    const { digest } = layer(1);
    const expected = await original(digest);
    const url = `${nginx.url}${blobPath(digest)}`;
    for (let i = 0; i < 2; i++) assert.equal((await http(url, { headers: auth() })).status, 200); // cached, then verified
    const upstreamGets = async () => (await registry.requests()).filter((r) => r.method === 'GET' && r.path.endsWith(`/blobs/${digest}`)).length;
    const fetchedBefore = await upstreamGets();
    // Removed behind archway's back: archway still believes it stored and verified, as in the race.
    const hex = digestHex(digest);
    await unlink(join(archway.cacheDir, 'blobs', 'sha256', hex.slice(0, 2), hex));
    await nginx.clearRequests();
    const res = await http(url, { headers: auth() });
    assert.equal(res.status, 200);
    assert.ok(res.body.equals(expected), 'the whole blob, not a 404 page');
    assert.equal(res.headers['docker-content-digest'], digest);
    assert.equal(await upstreamGets(), fetchedBefore + 1, 'fetched again from the registry');
    assert.equal(sha256(res.body), digest);
  });
});
