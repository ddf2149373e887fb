// The /v2 routes through fastify's app.inject (no listener, no client): error
// envelopes, headers, conditional requests and ranges. archway builds its own
// UpstreamClient from the config, so the upstream is a tiny registry on
// loopback serving one manifest and one blob; what real clients make of these
// answers is the end-to-end suite's business.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import type { FastifyInstance } from 'fastify';
import { createHttpApp } from '../../src/app.ts';
import { createServices, type Services } from '../../src/services.ts';
import { parseConfig } from '../../src/config/load.ts';
import { digestOf } from '../../src/oci/digest.ts';
import { metricValue } from '../harness/in-process-services.ts';
import { waitFor } from '../harness/process.ts';
import { deterministicBytes } from '../harness/random.ts';
import { imageManifest } from '../harness/scripted-upstream.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

const UPSTREAM = 'upstream.test';
const REPOSITORY = 'team/app';
const BLOB = deterministicBytes('inject-blob', 10_000);
const BLOB_DIGEST = digestOf(BLOB);
const MANIFEST = imageManifest([{ digest: BLOB_DIGEST, size: BLOB.length }]);

/** GET/HEAD of one manifest (by tag `latest` or digest) and one blob in REPOSITORY; the spec's 404 envelope for the rest. */
function tinyRegistry(seen: string[]): Server {
  return createServer((req, res) => {
    const path = req.url ?? '';
    seen.push(`${req.method} ${path}`);
    const send = (status: number, headers: Record<string, string | number>, bytes: Buffer) => {
      res.writeHead(status, { ...headers, 'content-length': bytes.length });
      res.end(req.method === 'HEAD' ? undefined : bytes);
    };
    if (path === '/v2/') return send(200, { 'content-type': 'application/json' }, Buffer.from('{}'));
    if (path === `/v2/${REPOSITORY}/manifests/latest` || path === `/v2/${REPOSITORY}/manifests/${MANIFEST.digest}`) {
      return send(200, { 'content-type': MANIFEST.mediaType, 'docker-content-digest': MANIFEST.digest }, MANIFEST.bytes);
    }
    if (path === `/v2/${REPOSITORY}/blobs/${BLOB_DIGEST}`) return send(200, { 'content-type': 'application/octet-stream' }, BLOB);
    const code = path.includes('/blobs/') ? 'BLOB_UNKNOWN' : 'MANIFEST_UNKNOWN';
    send(404, { 'content-type': 'application/json' }, Buffer.from(JSON.stringify({ errors: [{ code, message: 'unknown', detail: {} }] })));
  });
}

interface Envelope {
  errors: Array<{ code: string; message: string; detail: unknown }>;
}

describe('/v2 routes through app.inject', { timeout: 10_000 }, () => {
  let upstream: Server;
  /** Requests the upstream received. */
  const seen: string[] = [];
  let cacheDir: string;
  // The HTTP app over the services, with no listener: every request is injected.
  let services: Services;
  let app: FastifyInstance;

  before(async () => {
    upstream = tinyRegistry(seen);
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    const { port } = upstream.address() as AddressInfo;
    cacheDir = await tempDir('archway-inject-');
    const config = parseConfig({
      cache: { dir: cacheDir },
      upstreams: { [UPSTREAM]: { url: `http://127.0.0.1:${port}` } },
      defaultUpstream: UPSTREAM,
      timeouts: { connect: '2s', headers: '5s', bodyIdle: '5s' },
    });
    services = await createServices(config, { logger: pino({ level: 'silent' }) });
    app = await createHttpApp(services);
  });
  after(async () => {
    await app.close();
    await services.close();
    await new Promise<void>((resolve) => upstream.close(() => resolve()));
    await removeDir(cacheDir);
  });

  const inject = (method: 'GET' | 'HEAD' | 'PUT' | 'POST', url: string, headers: Record<string, string> = {}, payload?: string) =>
    app.inject({ method, url, headers, ...(payload === undefined ? {} : { payload }) });

  function assertEnvelope(res: Awaited<ReturnType<typeof inject>>, status: number, code: string): Envelope {
    assert.equal(res.statusCode, status, res.body);
    assert.match(String(res.headers['content-type']), /^application\/json/);
    const body = res.json<Envelope>();
    assert.equal(body.errors.length, 1);
    assert.equal(body.errors[0]?.code, code);
    assert.equal(typeof body.errors[0]?.message, 'string');
    assert.doesNotMatch(res.body, /\bat .*\.ts:\d+/, 'no stack trace');
    return body;
  }

  it('answers the base endpoint with the API version header', async () => {
    const res = await inject('GET', '/v2/');
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['docker-distribution-api-version'], 'registry/2.0');
    assert.deepEqual(res.json(), {});
  });

  it('answers NAME_UNKNOWN (404) for a registry that is not configured, without contacting it', async () => {
    const before = seen.length;
    const body = assertEnvelope(await inject('GET', `/v2/${REPOSITORY}/manifests/latest?ns=elsewhere.example`), 404, 'NAME_UNKNOWN');
    assert.deepEqual(body.errors[0]?.detail, { registry: 'elsewhere.example' });
    assertEnvelope(await inject('GET', '/v2/other.example/team/app/manifests/latest'), 404, 'NAME_UNKNOWN');
    assert.equal(seen.length, before, 'nothing went to the upstream');
  });

  it('answers DIGEST_INVALID (400) for a malformed digest', async () => {
    assertEnvelope(await inject('GET', `/v2/${REPOSITORY}/blobs/sha256:not-hex`), 400, 'DIGEST_INVALID');
    assertEnvelope(await inject('GET', `/v2/${REPOSITORY}/manifests/sha256:${'a'.repeat(63)}`), 400, 'DIGEST_INVALID');
  });

  it('refuses writes with UNSUPPORTED (405)', async () => {
    // With bodies, as pushes send them: the answer waits for a body to be drained (see v2-routes.ts).
    const put = assertEnvelope(await inject('PUT', `/v2/${REPOSITORY}/manifests/latest`, { 'content-type': MANIFEST.mediaType }, MANIFEST.bytes.toString()), 405, 'UNSUPPORTED');
    assert.deepEqual(put.errors[0]?.detail, { method: 'PUT' });
    assertEnvelope(await inject('POST', `/v2/${REPOSITORY}/blobs/uploads/`, { 'content-type': 'application/octet-stream' }, 'layer'), 405, 'UNSUPPORTED');
  });

  it('passes the upstream’s 404 on as MANIFEST_UNKNOWN and BLOB_UNKNOWN', async () => {
    assertEnvelope(await inject('GET', `/v2/${REPOSITORY}/manifests/missing`), 404, 'MANIFEST_UNKNOWN');
    assertEnvelope(await inject('GET', `/v2/${REPOSITORY}/blobs/${digestOf(Buffer.from('absent'))}`), 404, 'BLOB_UNKNOWN');
  });

  it('serves a manifest with its digest, ETag, media type and API version; HEAD without the body', async () => {
    const res = await inject('GET', `/v2/${REPOSITORY}/manifests/latest`);
    assert.equal(res.statusCode, 200);
    assert.ok(res.rawPayload.equals(MANIFEST.bytes), 'the exact upstream bytes');
    assert.equal(res.headers['docker-content-digest'], MANIFEST.digest);
    assert.equal(res.headers.etag, `"${MANIFEST.digest}"`);
    assert.equal(res.headers['content-type'], MANIFEST.mediaType);
    assert.equal(res.headers['docker-distribution-api-version'], 'registry/2.0');
    const head = await inject('HEAD', `/v2/${REPOSITORY}/manifests/latest`);
    assert.equal(head.statusCode, 200);
    assert.equal(head.headers['docker-content-digest'], MANIFEST.digest);
    assert.equal(Number(head.headers['content-length']), MANIFEST.bytes.length);
    assert.equal(head.rawPayload.length, 0);
  });

  it('answers 304 to If-None-Match with the manifest’s ETag, and 200 to another', async () => {
    const notModified = await inject('GET', `/v2/${REPOSITORY}/manifests/latest`, { 'if-none-match': `"${MANIFEST.digest}"` });
    assert.equal(notModified.statusCode, 304);
    assert.equal(notModified.rawPayload.length, 0);
    assert.equal(notModified.headers.etag, `"${MANIFEST.digest}"`);
    const other = await inject('GET', `/v2/${REPOSITORY}/manifests/latest`, { 'if-none-match': `"sha256:${'0'.repeat(64)}"` });
    assert.equal(other.statusCode, 200);
    assert.ok(other.rawPayload.equals(MANIFEST.bytes));
  });

  it('answers a Range with 206 and Content-Range, on a miss and on a hit', async () => {
    // First request: a miss, answered from the fill; second: a hit, from the store.
    for (const expected of ['miss', 'hit']) {
      const res = await inject('GET', `/v2/${REPOSITORY}/blobs/${BLOB_DIGEST}`, { range: 'bytes=100-1099' });
      assert.equal(res.statusCode, 206, `${expected}: ${res.body.slice(0, 200)}`);
      assert.equal(res.headers['content-range'], `bytes 100-1099/${BLOB.length}`);
      assert.equal(Number(res.headers['content-length']), 1000);
      assert.equal(res.headers['docker-content-digest'], BLOB_DIGEST);
      assert.equal(res.headers['accept-ranges'], 'bytes');
      assert.equal(res.headers['docker-distribution-api-version'], 'registry/2.0');
      assert.ok(res.rawPayload.equals(BLOB.subarray(100, 1100)), `${expected}: the range's bytes`);
      assert.equal(await metricValue(services.metrics, 'archway_cache_lookups_total', { kind: 'blob', outcome: expected }), 1);
      if (expected === 'miss') await waitCached();
    }
    assert.equal(seen.filter((r) => r === `GET /v2/${REPOSITORY}/blobs/${BLOB_DIGEST}`).length, 1, 'one download');
    const whole = await inject('GET', `/v2/${REPOSITORY}/blobs/${BLOB_DIGEST}`);
    assert.equal(whole.statusCode, 200);
    assert.ok(whole.rawPayload.equals(BLOB));
  });

  it('answers an unsatisfiable Range with 416 and Content-Range: bytes */size', async () => {
    const res = await inject('GET', `/v2/${REPOSITORY}/blobs/${BLOB_DIGEST}`, { range: `bytes=${BLOB.length}-` });
    assertEnvelope(res, 416, 'RANGE_INVALID');
    assert.equal(res.headers['content-range'], `bytes */${BLOB.length}`);
    assert.equal(res.headers['docker-content-digest'], undefined, 'no blob headers on an error');
  });

  /** The fill of the first request is over (its blob committed): the next one is a hit. */
  const waitCached = () =>
    waitFor(async () => (await metricValue(services.metrics, 'archway_blob_fills_inflight')) === 0, {
      timeoutMs: 2000,
      intervalMs: 2,
      description: 'the blob fill to end',
    });
});

// server.accelRedirect: which blob answers become an X-Accel-Redirect for the nginx in front.
describe('/v2 blob answers with server.accelRedirect', { timeout: 10_000 }, () => {
  const LOCATION = '/_archway_blobs/';
  const MARKER = { 'x-archway-accel': LOCATION };
  const HEX = BLOB_DIGEST.slice('sha256:'.length);
  const FILE = `${LOCATION}sha256/${HEX.slice(0, 2)}/${HEX}`;
  let upstream: Server;
  let cacheDir: string;
  let services: Services;
  let app: FastifyInstance;

  before(async () => {
    upstream = tinyRegistry([]);
    await new Promise<void>((resolve) => upstream.listen(0, '127.0.0.1', resolve));
    const { port } = upstream.address() as AddressInfo;
    cacheDir = await tempDir('archway-inject-accel-');
    const config = parseConfig({
      server: { trustedProxies: ['127.0.0.1'], accelRedirect: { location: LOCATION } },
      cache: { dir: cacheDir },
      upstreams: { [UPSTREAM]: { url: `http://127.0.0.1:${port}` } },
      defaultUpstream: UPSTREAM,
    });
    services = await createServices(config, { logger: pino({ level: 'silent' }) });
    app = await createHttpApp(services);
  });
  after(async () => {
    await app.close();
    await services.close();
    await new Promise<void>((resolve) => upstream.close(() => resolve()));
    await removeDir(cacheDir);
  });

  const get = (headers: Record<string, string> = {}, remoteAddress = '127.0.0.1', method: 'GET' | 'HEAD' = 'GET') =>
    app.inject({ method, url: `/v2/${REPOSITORY}/blobs/${BLOB_DIGEST}`, headers, remoteAddress });
  const redirects = () => metricValue(services.metrics, 'archway_accel_redirects_total');

  it('is refused without trustedProxies, and with a location that is not a /path/', () => {
    const base = { upstreams: { [UPSTREAM]: { url: 'http://127.0.0.1:1' } }, defaultUpstream: UPSTREAM };
    assert.throws(() => parseConfig({ ...base, server: { accelRedirect: { location: LOCATION } } }), /trustedProxies/);
    assert.throws(() => parseConfig({ ...base, server: { trustedProxies: ['127.0.0.1'], accelRedirect: { location: '/no-slash' } } }), /starts and ends with \//);
  });

  it('a cold blob and a stored one not yet verified here are answered with their bytes; then a redirect to the file', async () => {
    // Cold: from the fill. Then the first read back from disk, which verifies the copy.
    for (const round of ['miss', 'unverified']) {
      const res = await get(MARKER);
      assert.equal(res.statusCode, 200, round);
      assert.ok(res.rawPayload.equals(BLOB), round);
      assert.equal(res.headers['x-accel-redirect'], undefined, round);
      await waitFor(async () => (await metricValue(services.metrics, 'archway_blob_fills_inflight')) === 0, { timeoutMs: 2000, intervalMs: 2, description: 'the fill to end' });
    }
    const servedBefore = await metricValue(services.metrics, 'archway_served_bytes_total', { source: 'cache' });
    const res = await get(MARKER);
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['x-accel-redirect'], FILE);
    assert.equal(res.headers['docker-content-digest'], BLOB_DIGEST);
    assert.equal(res.headers['content-type'], 'application/octet-stream');
    assert.equal(res.rawPayload.length, 0, 'nginx sends the body');
    assert.equal(await redirects(), 1);
    assert.equal(await metricValue(services.metrics, 'archway_served_bytes_total', { source: 'cache' }), servedBefore + BLOB.length, 'counted as handed to nginx');
  });

  it('a Range is redirected too (nginx cuts it; the range is what is counted); an unsatisfiable one gets archway’s 416', async () => {
    const servedBefore = await metricValue(services.metrics, 'archway_served_bytes_total', { source: 'cache' });
    const res = await get({ ...MARKER, range: 'bytes=100-1099' });
    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['x-accel-redirect'], FILE);
    assert.equal(await metricValue(services.metrics, 'archway_served_bytes_total', { source: 'cache' }), servedBefore + 1000);
    const unsatisfiable = await get({ ...MARKER, range: `bytes=${BLOB.length}-` });
    assert.equal(unsatisfiable.statusCode, 416);
    assert.equal(unsatisfiable.headers['x-accel-redirect'], undefined);
  });

  it('no redirect without the marker, with another location in it, from an untrusted address, or for HEAD', async () => {
    const before = await redirects();
    for (const [headers, from] of [
      [{}, '127.0.0.1'],
      [{ 'x-archway-accel': '/elsewhere/' }, '127.0.0.1'],
      [MARKER, '127.0.0.2'],
    ] as const) {
      const res = await get(headers, from);
      assert.equal(res.statusCode, 200);
      assert.equal(res.headers['x-accel-redirect'], undefined, JSON.stringify({ headers, from }));
      assert.ok(res.rawPayload.equals(BLOB));
    }
    const head = await get(MARKER, '127.0.0.1', 'HEAD');
    assert.equal(head.headers['x-accel-redirect'], undefined);
    assert.equal(Number(head.headers['content-length']), BLOB.length);
    assert.equal(await redirects(), before);
  });
});
