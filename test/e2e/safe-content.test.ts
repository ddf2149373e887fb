// What archway serves on its origin is never read as a page unless archway made
// it (the status page, which keeps the admin token, lives on the same origin).
// Against archway as its own process and an upstream that labels answers as a
// hostile one would (test/harness/content-upstream.ts): a manifest as
// text/html with a <script> in an annotation is a 502 naming the upstream
// unless its own mediaType field says what it is; tag lists and referrers go
// out as JSON whatever the upstream said, or not at all; every answer, on
// every path that writes one, carries nosniff; the status page has a strict
// Content-Security-Policy. A manifest an older archway stored under the
// upstream's word for its type is never served under that type.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startArchwayProcess, type ArchwayProcess } from '../harness/archway-process.ts';
import { startContentUpstream, type ContentUpstream } from '../harness/content-upstream.ts';
import { digestHex, sha256Digest } from '../harness/digest.ts';
import { ACCEPT, http, type HttpAnswer } from '../harness/http.ts';
import { header, rawExchange, rawRequest } from '../harness/raw-http.ts';
import { tempDir } from '../harness/tmp.ts';

const UPSTREAM = 'evil.test';
const TOKEN = 'safe-content-admin-token-0123456789';
const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const SCRIPT = '<script>alert(document.domain)</script>';

const blob = Buffer.from('a layer that is only a few bytes long\n');
const blobDigest = sha256Digest(blob);
const configBytes = Buffer.from('{"architecture":"amd64","os":"linux"}');
const image = (extra: Record<string, unknown>) =>
  Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      ...extra,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256Digest(configBytes), size: configBytes.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: blobDigest, size: blob.length }],
      annotations: { 'org.example.note': SCRIPT },
    }),
  );
/** No mediaType field: only the header could say what it is, and it says text/html. */
const untyped = image({});
/** The same, with the field: archway knows what it is whatever the header says. */
const typed = image({ mediaType: OCI_MANIFEST });
/** A manifest type in the header, but the body says it is something else. */
const selfHtml = image({ mediaType: 'text/html' });
/** Stored by an "older archway" under text/html; the upstream serves it properly. */
const legacy = image({ mediaType: OCI_MANIFEST, annotations: { legacy: 'yes', note: SCRIPT } });
const tagsBody = JSON.stringify({ name: 'app', tags: ['1', SCRIPT] });
const referrersBody = JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [], annotations: { note: SCRIPT } });
const htmlPage = `<!doctype html><html><body>${SCRIPT}</body></html>`;

let upstream: ContentUpstream;
let archway: ArchwayProcess;
/** Every answer the tests below received, for the nosniff check at the end. */
const answers: Array<{ what: string; headers: Record<string, string> }> = [];

async function get(path: string, opts: Parameters<typeof http>[1] = {}): Promise<HttpAnswer> {
  const r = await http(`${archway.url}${path}`, { ...opts, headers: { accept: ACCEPT.all, ...opts.headers } });
  answers.push({ what: `${opts.method ?? 'GET'} ${path} → ${r.status}`, headers: r.headers });
  return r;
}

function assertUpstreamError(r: HttpAnswer, message: RegExp): void {
  assert.equal(r.status, 502, r.body.toString());
  assert.match(r.headers['content-type'] ?? '', /^application\/json/);
  const { errors } = r.json<{ errors: Array<{ code: string; message: string; detail: { upstream?: string } }> }>();
  assert.equal(errors[0]?.code, 'UNAVAILABLE');
  assert.match(errors[0]?.message ?? '', new RegExp(`upstream ${UPSTREAM.replace('.', '\\.')}`));
  assert.match(errors[0]?.message ?? '', message);
  assert.equal(errors[0]?.detail.upstream, UPSTREAM);
  assert.ok(!r.body.toString().includes('<script>'), 'the upstream body is not repeated');
}

before(async () => {
  upstream = await startContentUpstream();
  const html = (body: Buffer | string) => ({ contentType: 'text/html; charset=utf-8', body });
  upstream.answer('/v2/app/manifests/untyped', html(untyped));
  upstream.answer(`/v2/app/manifests/${sha256Digest(untyped)}`, html(untyped));
  upstream.answer('/v2/app/manifests/typed', html(typed));
  upstream.answer('/v2/app/manifests/self-html', { contentType: OCI_MANIFEST, body: selfHtml });
  upstream.answer(`/v2/app/manifests/${sha256Digest(legacy)}`, { contentType: OCI_MANIFEST, body: legacy });
  upstream.answer('/v2/app/tags/list', html(tagsBody));
  upstream.answer('/v2/page/tags/list', html(htmlPage));
  upstream.answer(`/v2/app/referrers/${sha256Digest(typed)}`, html(referrersBody));
  upstream.answer(`/v2/app/referrers/${sha256Digest(untyped)}`, html(htmlPage));
  upstream.answer(`/v2/app/blobs/${blobDigest}`, { contentType: 'text/html', body: blob });

  // What an older archway left in its cache: sound bytes, stored under the upstream's text/html.
  const cacheDir = join(await tempDir('archway-safe-content-'), 'cache');
  const legacyDir = join(cacheDir, 'manifests', encodeURIComponent(UPSTREAM), 'sha256');
  await mkdir(legacyDir, { recursive: true });
  await writeFile(join(legacyDir, digestHex(sha256Digest(legacy))), Buffer.concat([Buffer.from(`${JSON.stringify({ mediaType: 'text/html' })}\n`), legacy]));

  archway = await startArchwayProcess({
    upstreams: { [UPSTREAM]: { url: upstream.url } },
    defaultUpstream: UPSTREAM,
    cache: { dir: cacheDir },
    admin: { token: TOKEN },
    log: { level: 'warn' },
  });
});

after(async () => {
  await archway?.kill();
  await upstream?.stop();
});

describe('manifests are served only under a manifest media type archway checked', () => {
  it('text/html with no mediaType field (a <script> in an annotation): 502 naming the upstream, by tag and by digest', async () => {
    assertUpstreamError(await get('/v2/app/manifests/untyped'), /no manifest media type/);
    assertUpstreamError(await get(`/v2/app/manifests/${sha256Digest(untyped)}`), /no manifest media type/);
    // And nothing was kept that a later request could serve.
    assertUpstreamError(await get(`/v2/app/manifests/${sha256Digest(untyped)}`), /no manifest media type/);
  });

  it('text/html with "mediaType" in the body: served, exact bytes, under the OCI type', async () => {
    for (const path of ['/v2/app/manifests/typed', `/v2/app/manifests/${sha256Digest(typed)}`]) {
      const r = await get(path);
      assert.equal(r.status, 200, r.body.toString());
      assert.equal(r.headers['content-type'], OCI_MANIFEST);
      assert.equal(r.headers['docker-content-digest'], sha256Digest(typed));
      assert.deepEqual(r.body, typed);
      const head = await get(path, { method: 'HEAD' });
      assert.equal(head.status, 200);
      assert.equal(head.headers['content-type'], OCI_MANIFEST);
    }
  });

  it('a manifest header over a body whose own mediaType is text/html: 502', async () => {
    assertUpstreamError(await get('/v2/app/manifests/self-html'), /no manifest media type/);
  });

  it('a manifest an older archway stored as text/html is fetched again and served under the checked type', async () => {
    const before = upstream.requested().length;
    const r = await get(`/v2/app/manifests/${sha256Digest(legacy)}`);
    assert.equal(r.status, 200, r.body.toString());
    assert.equal(r.headers['content-type'], OCI_MANIFEST);
    assert.deepEqual(r.body, legacy);
    assert.ok(upstream.requested().slice(before).includes(`/v2/app/manifests/${sha256Digest(legacy)}`), 'the stored copy was not trusted');
    // The refetched answer replaced the stored one: the next request is a hit under the same type.
    const again = await get(`/v2/app/manifests/${sha256Digest(legacy)}`);
    assert.equal(again.headers['content-type'], OCI_MANIFEST);
  });
});

describe('tag lists and referrers are served as JSON only', () => {
  it('a tag list answered as text/html is served as application/json', async () => {
    const r = await get('/v2/app/tags/list');
    assert.equal(r.status, 200, r.body.toString());
    assert.equal(r.headers['content-type'], 'application/json');
    assert.deepEqual(r.json(), JSON.parse(tagsBody));
  });

  it('a tag list that is an HTML page is a 502', async () => {
    assertUpstreamError(await get('/v2/page/tags/list'), /tags answer is not a JSON object/);
  });

  it('referrers answered as text/html are served under the OCI index type; an HTML page is a 502', async () => {
    const r = await get(`/v2/app/referrers/${sha256Digest(typed)}`);
    assert.equal(r.status, 200, r.body.toString());
    assert.equal(r.headers['content-type'], OCI_INDEX);
    assert.deepEqual(r.json(), JSON.parse(referrersBody));
    assertUpstreamError(await get(`/v2/app/referrers/${sha256Digest(untyped)}`), /referrers answer is not a JSON object/);
  });
});

describe('the status page', () => {
  it('has a strict Content-Security-Policy that allows exactly its own inline style and script', async () => {
    const r = await get('/_archway/');
    assert.equal(r.status, 200);
    const csp = r.headers['content-security-policy'] ?? '';
    const directives = new Map(csp.split(';').map((d) => d.trim().split(/\s+/)).map(([name = '', ...values]) => [name, values]));
    assert.deepEqual(directives.get('default-src'), ["'none'"]);
    assert.deepEqual(directives.get('frame-ancestors'), ["'none'"]);
    const html = r.body.toString('utf8');
    const hashOf = (tag: string) => {
      const inline = [...html.matchAll(new RegExp(`<${tag}[^>]*>([\\s\\S]*?)</${tag}>`, 'g'))];
      assert.equal(inline.length, 1, `one inline <${tag}>`);
      return `'sha256-${createHash('sha256').update(inline[0]?.[1] ?? '', 'utf8').digest('base64')}'`;
    };
    assert.deepEqual(directives.get('script-src'), [hashOf('script')]);
    assert.deepEqual(directives.get('style-src'), [hashOf('style')]);
    assert.ok(!/\s(?:style|on\w+)=/i.test(html), 'no inline style or event-handler attributes (the policy would refuse them)');
    assert.ok(!/unsafe-|https?:|\*/.test(csp), `nothing unsafe, nothing from elsewhere: ${csp}`);
    assert.equal(r.headers['x-frame-options'], 'DENY');
  });
});

describe('every answer carries X-Content-Type-Options: nosniff', () => {
  it('routes, errors, 404s, the health and metrics endpoints', async () => {
    await get('/v2/');
    await get('/v2/no/such/endpoint/at/all');
    await get('/nothing-here');
    await get('/healthz');
    await get('/metrics');
    await get(`/v2/app/blobs/sha256:${'0'.repeat(64)}`);
    await get('/v2/app/manifests/1', { method: 'PUT', body: '{}' });
    await get('/_archway/status');
  });

  it('a blob from the upstream, and again from the cache (the direct path)', async () => {
    const before = upstream.requested().filter((p) => p.includes(blobDigest)).length;
    for (let i = 0; i < 2; i++) {
      const r = await get(`/v2/app/blobs/${blobDigest}`);
      assert.equal(r.status, 200);
      assert.deepEqual(r.body, blob);
      assert.equal(r.headers['content-type'], 'application/octet-stream');
    }
    assert.equal(upstream.requested().filter((p) => p.includes(blobDigest)).length - before, 1, 'the second answer came from the cache');
  });

  it('every answer above had it', () => {
    assert.ok(answers.length >= 20, `${answers.length} answers`);
    const without = answers.filter((a) => a.headers['x-content-type-options'] !== 'nosniff').map((a) => a.what);
    assert.deepEqual(without, []);
  });

  it('answers written below fastify: a URL it cannot decode, CONNECT, bytes the parser refuses', async () => {
    const cases: Array<[string, Buffer | string, number]> = [
      ['bad percent-encoding', rawRequest('GET', '/v2/app/manifests/%E0%A4%A', [['Host', 'x']]), 400],
      ['CONNECT', rawRequest('CONNECT', 'example.com:443', [['Host', 'example.com:443']]), 405],
      ['not HTTP', 'GET / HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n', 400],
    ];
    for (const [what, bytes, status] of cases) {
      const a = await rawExchange(archway.port, bytes, { timeoutMs: 5000 });
      const r = a.responses[0];
      assert.ok(r, `${what}: an answer (${a.raw.toString('latin1').slice(0, 200)})`);
      assert.equal(r.status, status, what);
      assert.equal(header(r, 'x-content-type-options'), 'nosniff', what);
    }
  });
});
