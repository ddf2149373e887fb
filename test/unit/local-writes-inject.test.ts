// The writes a local repository takes, through app.inject: a mount is 201
// with Location and Docker-Content-Digest; no upload session is ever offered
// (a plain POST, a PATCH, a PUT of bytes are spec errors); an oversized
// manifest is refused before it is kept; pushes need the grant; writes outside
// local repositories stay 405. The upstream is a loopback server that has one
// blob (HEAD only: a mount never downloads).
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import type { FastifyInstance } from 'fastify';
import pino from 'pino';
import { createHttpApp } from '../../src/app.ts';
import { parseConfig } from '../../src/config/load.ts';
import { digestOf } from '../../src/oci/digest.ts';
import { createServices, type Services } from '../../src/services.ts';
import { imageManifest } from '../harness/scripted-upstream.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

const PUSHER = 'pusher-token-0123456789';
const READER = 'reader-token-0123456789';
const ADMIN = 'admin-token-0123456789';
const LAYER = Buffer.from('a layer');
const LAYER_DIGEST = digestOf(LAYER);

describe('local repository writes through app.inject', { timeout: 10_000 }, () => {
  let upstream: Server;
  const seen: string[] = [];
  let cacheDir: string;
  let services: Services;
  let app: FastifyInstance;

  before(async () => {
    upstream = createServer((req, res) => {
      seen.push(`${req.method} ${req.url}`);
      const found = req.url === `/v2/amd64/node/blobs/${LAYER_DIGEST}` || req.url === '/v2/';
      res.writeHead(found ? 200 : 404, { 'content-length': found ? LAYER.length : 0, 'content-type': 'application/octet-stream' });
      res.end();
    });
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    cacheDir = await tempDir('archway-local-inject-');
    const config = parseConfig({
      upstreams: { 'docker.io': { url: `http://127.0.0.1:${(upstream.address() as AddressInfo).port}` } },
      defaultUpstream: 'docker.io',
      cache: { dir: cacheDir },
      auth: {
        tokens: [
          { name: 'pusher', token: PUSHER, repositories: ['team/**', 'amd64/**'] },
          { name: 'reader', token: READER },
        ],
      },
      local: { namespaces: [{ repositories: ['team/**'], push: ['pusher'] }], maxManifestSize: '2KiB' },
      admin: { token: ADMIN },
    });
    services = await createServices(config, { logger: pino({ level: 'silent' }) });
    app = await createHttpApp(services);
  });

  after(async () => {
    await app.close();
    await services.close();
    await new Promise((resolve) => upstream.close(resolve));
    await removeDir(cacheDir);
  });

  const inject = (method: 'POST' | 'PUT' | 'PATCH' | 'DELETE', url: string, opts: { token?: string; body?: Buffer; contentType?: string } = {}) =>
    app.inject({
      method,
      url,
      headers: { authorization: `Bearer ${opts.token ?? PUSHER}`, ...(opts.contentType ? { 'content-type': opts.contentType } : {}) },
      ...(opts.body ? { payload: opts.body } : {}),
    });
  const code = (r: { json: () => unknown }) => (r.json() as { errors: Array<{ code: string }> }).errors[0]?.code;

  it('mounts a blob the upstream has: 201, Location, Docker-Content-Digest; checked with a HEAD only', async () => {
    const r = await inject('POST', `/v2/team/node/blobs/uploads/?mount=${LAYER_DIGEST}&from=amd64/node`);
    assert.equal(r.statusCode, 201, r.body);
    assert.equal(r.headers.location, `/v2/team/node/blobs/${LAYER_DIGEST}`);
    assert.equal(r.headers['docker-content-digest'], LAYER_DIGEST);
    assert.ok(seen.includes(`HEAD /v2/amd64/node/blobs/${LAYER_DIGEST}`));
    assert.ok(!seen.some((s) => s.startsWith('GET /v2/amd64')), 'never downloaded');
  });

  it('a mount of a blob the upstream lacks, or from a repository the client may not read, is refused', async () => {
    const other = digestOf(Buffer.from('elsewhere'));
    const missing = await inject('POST', `/v2/team/node/blobs/uploads/?mount=${other}&from=amd64/node`);
    assert.equal(missing.statusCode, 404);
    assert.equal(code(missing), 'BLOB_UNKNOWN');
    const ungranted = await inject('POST', `/v2/team/node/blobs/uploads/?mount=${LAYER_DIGEST}&from=secret/node`);
    assert.equal(ungranted.statusCode, 403);
    const badDigest = await inject('POST', `/v2/team/node/blobs/uploads/?mount=sha256:nope&from=amd64/node`);
    assert.equal(code(badDigest), 'DIGEST_INVALID');
    const badReference = await inject('PUT', '/v2/team/node/manifests/sha256:nope', { body: Buffer.from('{}'), contentType: 'application/vnd.oci.image.manifest.v1+json' });
    assert.equal(code(badReference), 'DIGEST_INVALID', 'the local repository’s error, not a 405');
  });

  it('offers no upload session: plain POST 405, PATCH/PUT of an upload 404 BLOB_UPLOAD_UNKNOWN', async () => {
    const post = await inject('POST', '/v2/team/node/blobs/uploads/');
    assert.equal(post.statusCode, 405);
    assert.equal(code(post), 'UNSUPPORTED');
    for (const method of ['PATCH', 'PUT'] as const) {
      const r = await inject(method, `/v2/team/node/blobs/uploads/abc?digest=${LAYER_DIGEST}`, { body: LAYER, contentType: 'application/octet-stream' });
      assert.equal(r.statusCode, 404, method);
      assert.equal(code(r), 'BLOB_UPLOAD_UNKNOWN');
    }
  });

  it('stores a pushed manifest (201, Location, Docker-Content-Digest) and deletes it (202)', async () => {
    // Config blob not mounted: refused first.
    const manifest = imageManifest([{ digest: LAYER_DIGEST, size: LAYER.length }]);
    const refused = await inject('PUT', '/v2/team/node/manifests/1', { body: manifest.bytes, contentType: manifest.mediaType });
    assert.equal(code(refused), 'MANIFEST_BLOB_UNKNOWN');
    const layerOnly = Buffer.from(JSON.stringify({ ...JSON.parse(manifest.bytes.toString()), config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: LAYER_DIGEST, size: LAYER.length } }));
    const put = await inject('PUT', '/v2/team/node/manifests/1', { body: layerOnly, contentType: manifest.mediaType });
    assert.equal(put.statusCode, 201, put.body);
    assert.equal(put.headers['docker-content-digest'], digestOf(layerOnly));
    assert.equal(put.headers.location, `/v2/team/node/manifests/${digestOf(layerOnly)}`);
    const pulled = await app.inject({ method: 'GET', url: '/v2/team/node/manifests/1', headers: { authorization: `Bearer ${READER}`, accept: manifest.mediaType } });
    assert.equal(pulled.statusCode, 200);
    assert.deepEqual(pulled.rawPayload, layerOnly);
    assert.equal((await inject('DELETE', '/v2/team/node/manifests/1', { token: READER })).statusCode, 403, 'no push grant');
    assert.equal((await inject('DELETE', '/v2/team/node/manifests/1')).statusCode, 202);
    const gone = await app.inject({ method: 'GET', url: '/v2/team/node/manifests/1', headers: { authorization: `Bearer ${READER}` } });
    assert.equal(gone.statusCode, 404);
  });

  it('the admin token deletes a local tag (archway purge), and only what it names', async () => {
    const manifest = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json', config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: LAYER_DIGEST, size: LAYER.length }, layers: [] }));
    assert.equal((await inject('POST', `/v2/team/admin/blobs/uploads/?mount=${LAYER_DIGEST}&from=amd64/node`)).statusCode, 201);
    for (const t of ['keep', 'drop']) assert.equal((await inject('PUT', `/v2/team/admin/manifests/${t}`, { body: manifest, contentType: 'application/vnd.oci.image.manifest.v1+json' })).statusCode, 201);
    const whole = await app.inject({ method: 'DELETE', url: '/_archway/cache/team/admin', headers: { authorization: `Bearer ${ADMIN}` } });
    assert.equal(whole.statusCode, 400, 'a whole local repository is not purged');
    const r = await app.inject({ method: 'DELETE', url: '/_archway/cache/team/admin:drop', headers: { authorization: `Bearer ${ADMIN}` } });
    assert.equal(r.statusCode, 200, r.body);
    assert.deepEqual((r.json() as { tags: string[] }).tags, ['drop']);
    const left = (await services.localImages.summary()).repositories.find((x) => x.repository === 'docker.io/team/admin');
    assert.deepEqual(left?.tags.map((t) => t.tag), ['keep']);
  });

  it('refuses a manifest over local.maxManifestSize (413) and keeps nothing', async () => {
    const manifests = async () => (await services.localImages.summary()).repositories.find((x) => x.repository === 'docker.io/team/node')?.manifests;
    const before = await manifests();
    const big = Buffer.from(JSON.stringify({ schemaVersion: 2, pad: 'x'.repeat(4096) }));
    const r = await inject('PUT', `/v2/team/node/manifests/${digestOf(big)}`, { body: big, contentType: 'application/vnd.oci.image.manifest.v1+json' });
    assert.equal(r.statusCode, 413);
    assert.equal(code(r), 'MANIFEST_INVALID');
    assert.equal(await manifests(), before);
  });

  it('a client without the push grant gets 403; writes outside local repositories stay 405', async () => {
    const denied = await inject('POST', `/v2/team/node/blobs/uploads/?mount=${LAYER_DIGEST}&from=amd64/node`, { token: READER });
    assert.equal(denied.statusCode, 403);
    assert.equal(code(denied), 'DENIED');
    const outside = await inject('PUT', '/v2/amd64/node/manifests/1', { body: Buffer.from('{}'), contentType: 'application/vnd.oci.image.manifest.v1+json' });
    assert.equal(outside.statusCode, 405);
    assert.equal(code(outside), 'UNSUPPORTED');
  });
});
