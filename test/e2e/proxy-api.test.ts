// The /v2 pull API of archway in front of a real distribution registry:
// what comes back, byte for byte, and what reaches the upstream.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { sha256Digest as sha256 } from '../harness/digest.ts';
import { startArchway, type ArchwayHandle } from '../harness/archway.ts';
import { ACCEPT, http } from '../harness/http.ts';
import { ALL_PLATFORMS, buildImage, type BuiltImage } from '../harness/images.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

const MiB = 1024 * 1024;

let registry: RegistryHandle;
let archway: ArchwayHandle;
let multi: BuiltImage;
let dockerList: BuiltImage;
let single: BuiltImage;
let layoutDir: string;

before(async () => {
  layoutDir = await tempDir('archway-api-images-');
  registry = await startRegistry();
  multi = await buildImage({ dir: `${layoutDir}/multi`, tag: '1', platforms: ALL_PLATFORMS, format: 'oci', layerSizes: [2 * MiB, 128 * 1024], seed: 'api-multi' });
  dockerList = await buildImage({
    dir: `${layoutDir}/docker`,
    tag: '1',
    platforms: ALL_PLATFORMS.slice(0, 3),
    format: 'docker',
    layerSizes: [512 * 1024],
    seed: 'api-docker',
  });
  single = await buildImage({ dir: `${layoutDir}/single`, tag: 'v1', platforms: [{ os: 'linux', architecture: 'arm64', variant: 'v8' }], format: 'oci', layerSizes: [256 * 1024], seed: 'api-single', index: false });
  await pushLayout(multi, { hostPort: registry.hostPort, name: 'library/multi' });
  await pushLayout(dockerList, { hostPort: registry.hostPort, name: 'library/dockerlist' });
  await pushLayout(single, { hostPort: registry.hostPort, name: 'org/team/single' });
  archway = await startArchway({ upstreams: { 'docker.io': { url: registry.url } } });
});

after(async () => {
  await archway?.stop();
  await registry?.stop();
  await removeDir(layoutDir);
});

const amd64 = () => multi.manifests.find((m) => m.platform.architecture === 'amd64')!;

describe('base and errors', () => {
  it('GET /v2/ answers {} with the API version header', async () => {
    const r = await http(`${archway.url}/v2/`);
    assert.equal(r.status, 200);
    assert.deepEqual(r.json(), {});
    assert.equal(r.headers['docker-distribution-api-version'], 'registry/2.0');
  });

  it('refuses every write method with 405 UNSUPPORTED and contacts nobody', async () => {
    registry.clearRequests();
    for (const [method, path] of [
      ['POST', '/v2/multi/blobs/uploads/'],
      ['PUT', '/v2/multi/manifests/1'],
      ['PATCH', '/v2/multi/blobs/uploads/abc'],
      ['DELETE', `/v2/multi/manifests/${multi.topDigest}`],
    ] as const) {
      const r = await http(`${archway.url}${path}`, { method, headers: { 'content-type': 'application/octet-stream' }, body: 'x' });
      assert.equal(r.status, 405, `${method} ${path}`);
      assert.equal(r.json<{ errors: Array<{ code: string }> }>().errors[0]?.code, 'UNSUPPORTED');
    }
    assert.equal((await registry.requests()).length, 0);
  });

  const invalid: Array<[string, string]> = [
    ['/v2/UPPER/manifests/1', 'NAME_INVALID'],
    ['/v2/a..b/blobs/sha256:' + 'a'.repeat(64), 'NAME_INVALID'],
    ['/v2/multi/manifests/sha256:short', 'DIGEST_INVALID'],
    ['/v2/multi/blobs/md5:' + 'a'.repeat(32), 'DIGEST_INVALID'],
    ['/v2/multi/blobs/not-a-digest', 'DIGEST_INVALID'],
  ];
  for (const [path, code] of invalid) {
    it(`${path.slice(0, 40)} → 400 ${code} in the spec envelope`, async () => {
      const r = await http(`${archway.url}${path}`);
      assert.equal(r.status, 400);
      const body = r.json<{ errors: Array<{ code: string; message: string }> }>();
      assert.equal(body.errors[0]?.code, code);
      assert.equal(typeof body.errors[0]?.message, 'string');
    });
  }

  it('unknown tags, blobs and repositories are 404 with the right codes', async () => {
    const tag = await http(`${archway.url}/v2/multi/manifests/nope`, { headers: { accept: ACCEPT.all } });
    assert.equal(tag.status, 404);
    assert.equal(tag.json<{ errors: Array<{ code: string }> }>().errors[0]?.code, 'MANIFEST_UNKNOWN');
    const blob = await http(`${archway.url}/v2/multi/blobs/sha256:${'0'.repeat(64)}`);
    assert.equal(blob.status, 404);
    assert.equal(blob.json<{ errors: Array<{ code: string }> }>().errors[0]?.code, 'BLOB_UNKNOWN');
    const repo = await http(`${archway.url}/v2/nobody/here/tags/list`);
    assert.equal(repo.status, 404);
    assert.equal(repo.json<{ errors: Array<{ code: string }> }>().errors[0]?.code, 'NAME_UNKNOWN');
  });

  it('a manifest reference that is no tag and no digest is 404 MANIFEST_UNKNOWN (conformance, pull), GET and HEAD, and the upstream is not asked', async () => {
    registry.clearRequests();
    for (const ref of ['.INVALID_MANIFEST_NAME', '-bad', 't'.repeat(129)]) {
      const get = await http(`${archway.url}/v2/multi/manifests/${ref}`, { headers: { accept: ACCEPT.all } });
      assert.equal(get.status, 404, ref);
      assert.equal(get.json<{ errors: Array<{ code: string }> }>().errors[0]?.code, 'MANIFEST_UNKNOWN', ref);
      const head = await http(`${archway.url}/v2/multi/manifests/${ref}`, { method: 'HEAD', headers: { accept: ACCEPT.all } });
      assert.equal(head.status, 404, ref);
    }
    assert.deepEqual(await registry.requests(), [], 'nothing reached the upstream');
  });
});

describe('manifests', () => {
  it('a tag answers the index byte for byte, with its digest, type, length and ETag', async () => {
    const r = await http(`${archway.url}/v2/multi/manifests/1`, { headers: { accept: ACCEPT.all } });
    assert.equal(r.status, 200);
    assert.ok(r.body.equals(multi.topBytes));
    assert.equal(r.headers['docker-content-digest'], multi.topDigest);
    assert.equal(sha256(r.body), multi.topDigest);
    assert.equal(r.headers['content-type'], 'application/vnd.oci.image.index.v1+json');
    assert.equal(Number(r.headers['content-length']), multi.topBytes.length);
    assert.equal(r.headers.etag, `"${multi.topDigest}"`);
  });

  it('HEAD has the same headers and no body', async () => {
    const r = await http(`${archway.url}/v2/multi/manifests/1`, { method: 'HEAD', headers: { accept: ACCEPT.all } });
    assert.equal(r.status, 200);
    assert.equal(r.body.length, 0);
    assert.equal(r.headers['docker-content-digest'], multi.topDigest);
    assert.equal(Number(r.headers['content-length']), multi.topBytes.length);
  });

  it('If-None-Match with the ETag answers 304', async () => {
    const r = await http(`${archway.url}/v2/multi/manifests/1`, { headers: { accept: ACCEPT.all, 'if-none-match': `"${multi.topDigest}"` } });
    assert.equal(r.status, 304);
    assert.equal(r.body.length, 0);
  });

  it('a single-segment name means library/<name> on Docker Hub', async () => {
    const r = await http(`${archway.url}/v2/library/multi/manifests/1`, { headers: { accept: ACCEPT.all } });
    assert.equal(r.headers['docker-content-digest'], multi.topDigest);
  });

  it('a client that does not accept indexes gets the linux/amd64 image manifest with its real digest', async () => {
    const r = await http(`${archway.url}/v2/multi/manifests/1`, { headers: { accept: ACCEPT.imagesOnly } });
    assert.equal(r.status, 200);
    assert.equal(r.headers['docker-content-digest'], amd64().digest);
    assert.ok(r.body.equals(amd64().bytes));
    assert.equal(r.headers['content-type'], 'application/vnd.oci.image.manifest.v1+json');
  });

  it('Docker manifest lists keep their media type and digest', async () => {
    const r = await http(`${archway.url}/v2/dockerlist/manifests/1`, { headers: { accept: ACCEPT.all } });
    assert.equal(r.headers['content-type'], 'application/vnd.docker.distribution.manifest.list.v2+json');
    assert.ok(r.body.equals(dockerList.topBytes));
    const child = dockerList.manifests[1]!;
    const byDigest = await http(`${archway.url}/v2/dockerlist/manifests/${child.digest}`, { headers: { accept: ACCEPT.all } });
    assert.equal(byDigest.headers['content-type'], 'application/vnd.docker.distribution.manifest.v2+json');
    assert.ok(byDigest.body.equals(child.bytes));
  });

  it('names with many segments work, and a single image manifest is served as is', async () => {
    const r = await http(`${archway.url}/v2/org/team/single/manifests/v1`, { headers: { accept: ACCEPT.imagesOnly } });
    assert.equal(r.status, 200);
    assert.equal(r.headers['docker-content-digest'], single.topDigest);
    assert.ok(r.body.equals(single.topBytes));
  });

  it('concurrent cold requests for one tag make one upstream manifest GET', async () => {
    await pushLayout(dockerList, { hostPort: registry.hostPort, name: 'library/coalesce', tag: 'cold' });
    registry.clearRequests();
    const answers = await Promise.all(Array.from({ length: 8 }, () => http(`${archway.url}/v2/coalesce/manifests/cold`, { headers: { accept: ACCEPT.imagesOnly } })));
    const amd64Child = dockerList.manifests.find((m) => m.platform.architecture === 'amd64')!;
    for (const a of answers) assert.equal(a.headers['docker-content-digest'], amd64Child.digest);
    const gets = (await registry.requests()).filter((q) => q.method === 'GET' && q.path.includes('/manifests/'));
    // One GET for the tag (the list) and one for the amd64 child, whatever the number of clients.
    assert.deepEqual(gets.map((q) => q.path.split('/').pop()).sort(), ['cold', amd64Child.digest].sort());
  });

  it('manifests by digest come from the cache after the first fetch', async () => {
    const m = multi.manifests[3]!;
    const first = await http(`${archway.url}/v2/multi/manifests/${m.digest}`, { headers: { accept: ACCEPT.all } });
    assert.ok(first.body.equals(m.bytes));
    registry.clearRequests();
    const again = await http(`${archway.url}/v2/multi/manifests/${m.digest}`, { headers: { accept: ACCEPT.all } });
    assert.ok(again.body.equals(m.bytes));
    assert.equal((await registry.requests()).length, 0, 'no upstream request for a cached digest');
  });
});

describe('blobs', () => {
  it('GET streams the exact bytes with digest and length; the second GET does not reach the upstream', async () => {
    const layer = amd64().layers[0]!;
    registry.clearRequests();
    const r = await http(`${archway.url}/v2/multi/blobs/${layer.digest}`);
    assert.equal(r.status, 200);
    assert.equal(sha256(r.body), layer.digest);
    assert.equal(Number(r.headers['content-length']), layer.size);
    assert.equal(r.headers['docker-content-digest'], layer.digest);
    const again = await http(`${archway.url}/v2/multi/blobs/${layer.digest}`);
    assert.equal(sha256(again.body), layer.digest);
    const blobGets = (await registry.requests()).filter((q) => q.method === 'GET' && q.path.includes('/blobs/'));
    assert.equal(blobGets.length, 1, 'one upstream GET for two client GETs');
  });

  it('an upstream without credentials shares cached blobs across repositories', async () => {
    const layer = amd64().layers[0]!;
    await http(`${archway.url}/v2/multi/blobs/${layer.digest}`);
    registry.clearRequests();
    const elsewhere = await http(`${archway.url}/v2/some/other/repo/blobs/${layer.digest}`);
    assert.equal(sha256(elsewhere.body), layer.digest);
    assert.equal((await registry.requests()).length, 0);
  });

  it('8 concurrent cold requests for one blob make exactly one upstream GET, and all get the whole blob', async () => {
    const layer = multi.manifests.find((m) => m.platform.architecture === 's390x')!.layers[0]!;
    registry.clearRequests();
    const answers = await Promise.all(Array.from({ length: 8 }, () => http(`${archway.url}/v2/multi/blobs/${layer.digest}`)));
    for (const a of answers) {
      assert.equal(a.status, 200);
      assert.equal(sha256(a.body), layer.digest);
    }
    const gets = (await registry.requests()).filter((q) => q.method === 'GET' && q.path.endsWith(layer.digest));
    assert.equal(gets.length, 1);
    assert.ok((await archway.metric('archway_cache_lookups_total', { kind: 'blob', outcome: 'coalesced' })) >= 1);
  });

  it('an uncached HEAD asks the upstream with HEAD and downloads nothing', async () => {
    const layer = multi.manifests.find((m) => m.platform.architecture === 'ppc64le')!.layers[0]!;
    registry.clearRequests();
    const r = await http(`${archway.url}/v2/multi/blobs/${layer.digest}`, { method: 'HEAD' });
    assert.equal(r.status, 200);
    assert.equal(Number(r.headers['content-length']), layer.size);
    assert.equal(r.headers['docker-content-digest'], layer.digest);
    const reqs = await registry.requests();
    assert.deepEqual(reqs.filter((q) => q.path.includes('/blobs/')).map((q) => q.method), ['HEAD']);
  });

  it('Range answers 206 with Content-Range, cold and warm; past the end is 416', async () => {
    const layer = multi.manifests.find((m) => m.platform.architecture === '386')!.layers[0]!;
    const whole = await http(`${archway.url}/v2/multi/blobs/${layer.digest}`, { method: 'HEAD' });
    assert.equal(Number(whole.headers['content-length']), layer.size);
    // Cold: the range is cut from the fill as it arrives.
    const cold = await http(`${archway.url}/v2/multi/blobs/${layer.digest}`, { headers: { range: 'bytes=100-199' } });
    assert.equal(cold.status, 206);
    assert.equal(cold.headers['content-range'], `bytes 100-199/${layer.size}`);
    assert.equal(cold.body.length, 100);
    const full = await http(`${archway.url}/v2/multi/blobs/${layer.digest}`);
    assert.ok(cold.body.equals(full.body.subarray(100, 200)));
    const tail = await http(`${archway.url}/v2/multi/blobs/${layer.digest}`, { headers: { range: 'bytes=-10' } });
    assert.equal(tail.status, 206);
    assert.ok(tail.body.equals(full.body.subarray(layer.size - 10)));
    const beyond = await http(`${archway.url}/v2/multi/blobs/${layer.digest}`, { headers: { range: `bytes=${layer.size}-` } });
    assert.equal(beyond.status, 416);
    assert.equal(beyond.headers['content-range'], `bytes */${layer.size}`);
  });
});

describe('tags and referrers', () => {
  it('tags/list answers the upstream’s list and passes n and last through', async () => {
    for (const tag of ['2', '3']) await pushLayout(single, { hostPort: registry.hostPort, name: 'org/team/single', tag });
    registry.clearRequests();
    const page = await http(`${archway.url}/v2/org/team/single/tags/list?n=2&last=1`);
    assert.equal(page.status, 200);
    const body = page.json<{ name: string; tags: string[] }>();
    assert.equal(body.name, 'org/team/single');
    assert.deepEqual([...body.tags].sort(), ['2', '3', 'v1']);
    // distribution 2.8 ignores n and last (it sends no Link); the Link rewrite is unit-tested.
    const seen = (await registry.requests()).filter((q) => q.path === '/v2/org/team/single/tags/list');
    assert.ok(seen.some((q) => q.uri.includes('n=2') && q.uri.includes('last=1')), JSON.stringify(seen));
  });

  it('referrers on an upstream without the API is an empty OCI index with 200', async () => {
    const r = await http(`${archway.url}/v2/multi/referrers/${multi.topDigest}`);
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], 'application/vnd.oci.image.index.v1+json');
    assert.deepEqual(r.json(), { schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [] });
  });
});

describe('observability', () => {
  it('readiness fails when the cache cannot be written', async () => {
    const { rm, mkdir } = await import('node:fs/promises');
    await rm(`${archway.cacheDir}/tmp`, { recursive: true, force: true });
    try {
      assert.equal((await http(`${archway.url}/readyz`)).status, 503);
    } finally {
      await mkdir(`${archway.cacheDir}/tmp`);
    }
    assert.equal((await http(`${archway.url}/readyz`)).status, 200);
  });

  it('health, readiness and Prometheus metrics', async () => {
    assert.equal((await http(`${archway.url}/healthz`)).status, 200);
    assert.equal((await http(`${archway.url}/readyz`)).status, 200);
    const metrics = (await http(`${archway.url}/metrics`)).body.toString();
    for (const name of [
      'archway_http_requests_total',
      'archway_cache_lookups_total',
      'archway_served_bytes_total',
      'archway_upstream_bytes_total',
      'archway_upstream_request_seconds_bucket',
      'archway_upstream_inflight_requests',
      'archway_cache_bytes',
    ]) {
      assert.match(metrics, new RegExp(`^${name}`, 'm'), name);
    }
    assert.ok((await archway.metric('archway_cache_bytes')) > 2 * MiB);
    assert.ok((await archway.metric('archway_served_bytes_total', { source: 'cache' })) > 0);
    assert.ok((await archway.metric('archway_http_requests_total', { route: 'blob', status: '200' })) > 0);
  });

  it('logs one line per request with the cache outcome', async () => {
    const lines = archway.logs().filter((l) => l.msg === 'request' && typeof l.url === 'string' && (l.url as string).includes('/blobs/'));
    const outcomes = new Set(lines.map((l) => l.cache));
    for (const o of ['hit', 'miss', 'coalesced']) assert.ok(outcomes.has(o), `an outcome ${o} was logged: ${[...outcomes].join(',')}`);
    assert.ok(lines.some((l) => l.cache === 'miss' && typeof l.upstreamMs === 'number'));
  });
});
