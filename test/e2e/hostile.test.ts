// Hostile input: a corpus of hand-written and generated requests, sent over
// raw sockets (no HTTP client normalises them), against archway as its own
// process in front of a real registry. Path traversal in names, tags,
// digests and `ns`; over-long names; bad digests; `ns` with a scheme, port,
// path or userinfo; huge and duplicated headers; malformed and multi-range
// Range; odd methods; request-smuggling shapes. Then a pass with client
// authentication on.
//
// Every answer: no 5xx; 4xx where the request is bad (the spec's error
// envelope when archway answers; Node's own 400/431 when the bytes are not
// HTTP); a complete, correct body where HTTP lets a hostile-looking request
// succeed (an ignored Range, a duplicated Accept). Afterwards: archway still
// alive and serving; canary files outside cache.dir neither read (atime),
// written (mtime, content) nor echoed (their marker in no answer); no new
// file outside cache.dir; the upstream only ever asked for well-formed names.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readdir, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import bcrypt from 'bcryptjs';
import fc from 'fast-check';
import { startArchwayProcess, type ArchwayProcess } from '../harness/archway-process.ts';
import { sha256Digest } from '../harness/digest.ts';
import { setTimeout as sleep } from 'node:timers/promises';
import { startArchway, type ArchwayHandle } from '../harness/archway.ts';
import { ACCEPT, http } from '../harness/http.ts';
import { buildImage, type BuiltImage } from '../harness/images.ts';
import { header, rawExchange, rawRequest, type RawAnswer, type RawResponse } from '../harness/raw-http.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

const TAG = 'latest-real';
const MARKER = `ARCHWAY-CANARY-${randomUUID()}`;
const SPEC_CODES = new Set([
  'BLOB_UNKNOWN', 'BLOB_UPLOAD_INVALID', 'BLOB_UPLOAD_UNKNOWN', 'DIGEST_INVALID', 'MANIFEST_BLOB_UNKNOWN', 'MANIFEST_INVALID',
  'MANIFEST_UNKNOWN', 'NAME_INVALID', 'NAME_UNKNOWN', 'SIZE_INVALID', 'TAG_INVALID', 'UNAUTHORIZED', 'DENIED', 'UNSUPPORTED',
  'TOOMANYREQUESTS', 'RANGE_INVALID',
]);
const USERS = { alice: 'alice-Pa55w0rd', bob: 'bob-Pa55w0rd' };
/** bob may pull library/app only; alice everything. */
const GRANTS = { bob: ['library/app'] };

let work: string;
let registry: RegistryHandle;
let image: BuiltImage;
let open: ArchwayProcess;
let guarded: ArchwayProcess;
/** Canary files outside every cache.dir, each holding MARKER. */
let canaries: string[] = [];
let atimeWorks = false;
let canaryStats: Map<string, { mtimeMs: number; atimeMs: number; size: number }>;
let listingsBefore: Map<string, string[]>;
let sent = 0;
const parserRejections: string[] = [];
/** 400s fastify's router wrote itself (FST_ERR_BAD_URL: malformed percent-encoding), bypassing archway's error handler. */
const badUrlAnswers: string[] = [];

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
const layer = () => image.manifests[0]!.layers[0]!;
const layerBytes = () => readFile(image.blobs.get(layer().digest)!.path);

before(async () => {
  work = await tempDir('archway-hostile-');
  registry = await startRegistry();
  image = await buildImage({
    dir: join(work, 'img'),
    tag: TAG,
    platforms: [{ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm64', variant: 'v8' }, { os: 'linux', architecture: 'arm', variant: 'v7' }],
    format: 'oci',
    layerSizes: [64 * 1024],
    seed: 'hostile',
  });
  await pushLayout(image, { hostPort: registry.hostPort, name: 'library/app' });
  await pushLayout(image, { hostPort: registry.hostPort, name: 'team/app' });
  const htpasswd = join(work, 'htpasswd');
  await writeFile(htpasswd, `${Object.entries(USERS).map(([u, p]) => `${u}:${bcrypt.hashSync(p, 4)}`).join('\n')}\n`);
  const config = {
    upstreams: { 'docker.io': { url: registry.url }, 'registry.test': { url: registry.url } },
    defaultUpstream: 'docker.io',
    server: { trustedProxies: ['127.0.0.1'] },
    platform: {
      rules: [
        { match: { userAgent: '^hostile-arm' }, platform: 'linux/arm64', mode: 'resolve' },
        { match: { userAgent: '^hostile-detect' }, platform: 'detected', mode: 'filter' },
        { match: { clientCidr: '10.9.0.0/16' }, platform: 'linux/arm/v7', mode: 'filter' },
      ],
    },
    log: { level: 'info' },
  };
  open = await startArchwayProcess(config);
  guarded = await startArchwayProcess({ ...config, auth: { htpasswd, users: GRANTS } });

  // Canaries: next to each cache directory, in the test's own directory and at the top of the temp directory.
  canaries = [
    join(dirname(open.cacheDir), 'canary-secret'),
    join(dirname(guarded.cacheDir), 'canary-secret'),
    join(work, 'canary-secret'),
    join(tmpdir(), `archway-canary-${randomUUID()}`),
  ];
  const old = new Date('2020-01-01T00:00:00Z');
  for (const c of canaries) {
    await writeFile(c, `${MARKER}\n`);
    await utimes(c, old, old);
  }
  // Does this filesystem record reads (relatime updates an atime older than the mtime)?
  const probe = join(work, 'atime-probe');
  await writeFile(probe, 'x');
  await utimes(probe, old, old);
  await readFile(probe);
  atimeWorks = (await stat(probe)).atimeMs !== old.getTime();

  // Warm both: the content the corpus aims at is cached, so hits are exercised too.
  for (const [proc, auth] of [[open, undefined], [guarded, basic('alice', USERS.alice)]] as const) {
    const extra: Array<[string, string]> = auth ? [['Authorization', auth]] : [];
    const tag = await exchange(proc, get('/v2/library/app/manifests/' + TAG, extra));
    assert.equal(tag.responses[0]?.status, 200, 'warm-up tag');
    const blob = await exchange(proc, get(`/v2/library/app/blobs/${layer().digest}`, extra));
    assert.equal(blob.responses[0]?.status, 200, 'warm-up blob');
    assert.equal(sha256Digest(blob.responses[0]!.body), layer().digest);
  }

  canaryStats = new Map();
  for (const c of canaries) {
    const s = await stat(c);
    canaryStats.set(c, { mtimeMs: s.mtimeMs, atimeMs: s.atimeMs, size: s.size });
  }
  listingsBefore = new Map();
  for (const [dir, cache] of outsideDirs()) listingsBefore.set(dir, await listOutside(dir, cache));
  registry.clearRequests();
});

after(async () => {
  await open?.kill();
  await guarded?.kill();
  await registry?.stop();
  for (const c of canaries) await rm(c, { force: true });
  await removeDir(work);
});

/** Directories whose files outside cache.dir must not change: each process's own, and the test's. */
function outsideDirs(): Array<[string, string | undefined]> {
  return [
    [dirname(open.cacheDir), open.cacheDir],
    [dirname(guarded.cacheDir), guarded.cacheDir],
    [work, undefined],
  ];
}

async function listOutside(dir: string, cacheDir: string | undefined): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true })) {
    const path = join(e.parentPath, e.name);
    if (cacheDir && (path === cacheDir || path.startsWith(`${cacheDir}/`))) continue;
    if (path === join(work, 'atime-probe')) continue;
    const s = await stat(path);
    // The atime of canaries is checked separately; mtime and size say "written".
    out.push(`${path} ${e.isDirectory() ? 'dir' : `${s.size} ${s.mtimeMs}`}`);
  }
  return out.sort();
}

// ---------------------------------------------------------------------------
// Building requests

type Expect = '4xx' | 'answer';

interface Case {
  group: string;
  what: string;
  bytes: Buffer;
  head?: boolean;
  /** '4xx': the request is bad. 'answer': HTTP lets it succeed; any non-5xx, verified. */
  expect: Expect;
  /** A smuggled request rides in the body: at most one answer may come back. */
  smuggling?: boolean;
  /** Further checks of a 2xx answer; returns problems. */
  verify?: (r: RawResponse) => Promise<string | undefined> | string | undefined;
  /** Checks of the whole exchange (every answer on the connection); returns a problem. */
  verifyAnswer?: (a: RawAnswer) => string | undefined;
  /** Authorization this case sends, for the guarded pass: 401 expected without valid credentials. */
  credentials?: 'none' | 'wrong' | 'valid';
}

function headersFor(path: string, extra: Array<[string, string]>, hostPort = '127.0.0.1'): Array<[string, string]> {
  const names = new Set(extra.map(([k]) => k.toLowerCase()));
  const h: Array<[string, string]> = [];
  if (!names.has('host')) h.push(['Host', hostPort]);
  if (!names.has('user-agent')) h.push(['User-Agent', 'archway-hostile-test']);
  if (!names.has('accept') && path.includes('/manifests/')) h.push(['Accept', ACCEPT.all]);
  h.push(...extra);
  if (!names.has('connection')) h.push(['Connection', 'close']);
  return h;
}

function get(path: string, extra: Array<[string, string]> = [], method = 'GET', body?: string): Buffer {
  return rawRequest(method, path, headersFor(path, extra), body);
}

async function exchange(proc: ArchwayProcess, bytes: Buffer, head = false): Promise<RawAnswer> {
  return rawExchange(proc.port, bytes, { headMethod: head, timeoutMs: 10_000 });
}

/** Percent-encode what cannot stand raw in a request line, leave the rest as the attacker wrote it. */
function wire(s: string): string {
  return [...s].map((ch) => (/^[\x21-\x7e]$/.test(ch) && ch !== '#' && ch !== '?' ? ch : encodeURIComponent(ch))).join('');
}

// ---------------------------------------------------------------------------
// Judging answers

function isParserRejection(r: RawResponse): boolean {
  // Node answers an unmet Expect itself (417, no body), before any route runs.
  if (r.status === 417 && r.body.length === 0) return true;
  // fastify's clientError answer for bytes Node's parser refused: no route ever ran.
  if (![400, 413, 414, 431].includes(r.status)) return false;
  if (r.body.length === 0) return true;
  try {
    const b = JSON.parse(r.body.toString('utf8')) as Record<string, unknown>;
    return Object.keys(b).sort().join(',') === 'error,message,statusCode' && b.statusCode === r.status;
  } catch {
    return false;
  }
}

function specProblem(r: RawResponse): string | undefined {
  if (!(header(r, 'content-type') ?? '').startsWith('application/json')) return `content-type ${header(r, 'content-type')}`;
  let body: { errors?: Array<Record<string, unknown>> };
  try {
    body = JSON.parse(r.body.toString('utf8')) as typeof body;
  } catch {
    return `body is not JSON: ${r.body.toString('utf8').slice(0, 120)}`;
  }
  const errors = body.errors;
  if (!Array.isArray(errors) || errors.length === 0) return `no errors[]: ${r.body.toString('utf8').slice(0, 120)}`;
  for (const e of errors) {
    if (typeof e.code !== 'string' || !SPEC_CODES.has(e.code)) return `code ${String(e.code)}`;
    if (typeof e.message !== 'string') return 'message is not a string';
    if (!('detail' in e)) return 'no detail';
  }
  return undefined;
}

async function judge(c: Case, a: RawAnswer, ms: number, proc: ArchwayProcess): Promise<string[]> {
  const problems: string[] = [];
  if (a.raw.includes(MARKER)) problems.push('the canary marker is in the answer');
  const r = a.responses[0];
  if (!r) problems.push(`no HTTP answer (${a.raw.length} bytes, closed by server: ${a.closedByServer})`);
  if (!r) return problems.map((p) => `[${c.group}] ${c.what}: ${p}`);
  if (ms > 5000) problems.push(`took ${Math.round(ms)} ms`);
  const whole = c.verifyAnswer?.(a);
  if (whole) problems.push(whole);
  if (c.smuggling && a.responses.length > 1) problems.push(`${a.responses.length} answers: a smuggled request was executed (${a.responses.map((x) => x.status).join(', ')})`);
  for (const x of a.responses) {
    if (x.status >= 500) problems.push(`status ${x.status} ${x.body.toString('utf8').slice(0, 200)}`);
    if (x.headers.some(([k]) => k === 'x-injected')) problems.push('header injected');
    const ns = header(x, 'oci-namespace');
    if (ns !== undefined && !['docker.io', 'registry.test'].includes(ns.toLowerCase())) problems.push(`OCI-Namespace echoes ${JSON.stringify(ns)}`);
  }
  const is4xx = r.status >= 400 && r.status < 500;
  if (c.expect === '4xx' && !is4xx) problems.push(`expected 4xx, got ${r.status}`);
  if (is4xx) {
    if (isParserRejection(r)) {
      parserRejections.push(`${c.group}: ${c.what}`);
    } else if (r.status === 400 && r.body.includes('"FST_ERR_BAD_URL"')) {
      badUrlAnswers.push(`${c.group}: ${c.what} → ${r.body.toString('utf8').slice(0, 160)}`);
    } else if (!c.head && r.status !== 304) {
      const p = specProblem(r);
      if (p) problems.push(`${r.status} is not a spec error (${p})`);
    }
    if (r.status === 401 && header(r, 'www-authenticate') !== 'Basic realm="archway"') problems.push(`401 without the Basic challenge`);
    if (r.status === 416 && !/^bytes \*\/\d+$/.test(header(r, 'content-range') ?? '')) problems.push(`416 Content-Range ${header(r, 'content-range')}`);
  }
  if (proc === guarded && (c.credentials === 'none' || c.credentials === 'wrong') && r.status >= 200 && r.status < 300) {
    problems.push(`${r.status} without valid credentials`);
  }
  if (r.status >= 200 && r.status < 300 && !c.head) {
    // Whatever succeeds is intact: a body under a digest hashes to it.
    const digest = header(r, 'docker-content-digest');
    if (r.status === 200 && digest?.startsWith('sha256:') && sha256Digest(r.body) !== digest) problems.push('200 body does not match its Docker-Content-Digest');
    const more = await c.verify?.(r);
    if (more) problems.push(more);
  }
  return problems.map((p) => `[${c.group}] ${c.what}: ${p}`);
}

async function runCases(proc: ArchwayProcess, cases: Case[], concurrency = 8): Promise<string[]> {
  const problems: string[] = [];
  let next = 0;
  const worker = async () => {
    while (next < cases.length) {
      const c = cases[next++]!;
      const started = performance.now();
      let answer: RawAnswer;
      try {
        answer = await exchange(proc, c.bytes, c.head);
      } catch (err) {
        problems.push(`[${c.group}] ${c.what}: connection failed: ${String(err)}`);
        continue;
      } finally {
        sent++;
      }
      problems.push(...(await judge(c, answer, performance.now() - started, proc)));
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return problems;
}

function report(problems: string[]): void {
  assert.deepEqual(problems, [], `${problems.length} problem(s):\n${problems.join('\n')}`);
}

// ---------------------------------------------------------------------------
// The corpus

/** Traversal payloads aimed at the canaries, from cache.dir and its subdirectories. */
function traversalPayloads(): string[] {
  const absCanary = canaries[3]!;
  const p = [
    '..', '.', '...', '%2e%2e', '%2E%2E', '.%2e', '%2e.', '..%2f', '%2f', '%2F', '%5c', '%5C', '\\', '..\\..\\',
    '%00', 'app%00', '%2500', '%252e%252e', '%c0%ae%c0%ae', '%e2%80%a4%e2%80%a4', '....//', '..;', '%u002e%u002e', '%0d%0a',
  ];
  for (let depth = 1; depth <= 6; depth += 1) {
    p.push(`${'../'.repeat(depth)}canary-secret`);
    p.push(`${'%2e%2e%2f'.repeat(depth)}canary-secret`);
    p.push(`${'..%5c'.repeat(depth)}canary-secret`);
  }
  p.push(`${'../'.repeat(8)}${basename(absCanary)}`, wire(absCanary), encodeURIComponent(absCanary), `%2f${encodeURIComponent(absCanary.slice(1))}`, 'file:%2f%2f%2fetc%2fpasswd');
  return p;
}

function traversalCases(): Case[] {
  const d = layer().digest;
  const templates: Array<[string, (p: string) => string]> = [
    ['name', (p) => `/v2/${p}/manifests/${TAG}`],
    ['inner name', (p) => `/v2/library/${p}/app/blobs/${d}`],
    ['tag', (p) => `/v2/library/app/manifests/${p}`],
    ['digest', (p) => `/v2/library/app/blobs/sha256:${p}`],
    ['tags name', (p) => `/v2/${p}/tags/list`],
    ['referrers digest', (p) => `/v2/library/app/referrers/${p}`],
    ['ns', (p) => `/v2/library/app/manifests/${TAG}?ns=${p}`],
  ];
  const cases: Case[] = [];
  for (const p of traversalPayloads()) {
    for (const [where, path] of templates) {
      cases.push({ group: 'traversal', what: `${where} ${p}`, bytes: get(path(p)), expect: '4xx' });
    }
  }
  // HEAD answers the same way, without a body.
  for (const p of traversalPayloads().slice(0, 12)) {
    cases.push({ group: 'traversal', what: `HEAD name ${p}`, bytes: get(`/v2/${p}/manifests/${TAG}`, [], 'HEAD'), head: true, expect: '4xx' });
    cases.push({ group: 'traversal', what: `HEAD digest ${p}`, bytes: get(`/v2/library/app/blobs/sha256:${p}`, [], 'HEAD'), head: true, expect: '4xx' });
  }
  // Raw bytes a client library would refuse: NUL, CR, non-ASCII, backslashes, spaces in the target.
  const raws: Array<[string, string]> = [
    ['raw NUL in name', `/v2/libr\0ary/app/manifests/${TAG}`],
    ['raw NUL in tag', `/v2/library/app/manifests/${TAG}\0`],
    ['raw CR in path', `/v2/library/app\r/manifests/${TAG}`],
    ['raw UTF-8 in name', `/v2/caf\u00c3\u00a9/manifests/${TAG}`],
    ['raw backslash traversal', `/v2/library\\..\\..\\canary-secret/manifests/${TAG}`],
    ['raw tab in path', `/v2/library/app/manifests/\t${TAG}`],
    ['raw DEL in digest', `/v2/library/app/blobs/sha256:\x7f`],
  ];
  for (const [what, path] of raws) cases.push({ group: 'traversal', what, bytes: rawRequest('GET', path, headersFor(path, [])), expect: '4xx' });
  return cases;
}

/** Not the API at all: the cache directory and the file system are not served. */
function nonApiCases(): Case[] {
  const paths = [
    '/../../canary-secret', '/%2e%2e/%2e%2e/canary-secret', '/canary-secret', '/cache/canary-secret', '/blobs/sha256', '/tags', '/manifests',
    '/etc/passwd', '//etc/passwd', '/v2%2f..%2f..%2fcanary-secret', '/v2/..%2f..%2fcanary-secret', '/v2/../../canary-secret',
    '/healthz/../metrics', '/v2/../metrics', '/.git/config', '/favicon.ico', '/v3/', '/V2/', '/v2//', '/v2/./', `/${encodeURIComponent(canaries[3]!)}`,
    '*', 'v2/',
  ];
  return paths.map((p) => ({ group: 'non-api', what: p, bytes: get(p), expect: '4xx' as const }));
}

function generatedCases(): Case[] {
  const cases: Case[] = [];
  // Strings from an alphabet rich in separators and escapes, placed where names, tags and digests go.
  const nasty = fc.string({ unit: fc.constantFrom(...'abz09._-/:@%\\~.!$&\'()*+,;=[]{}|^`"<> \u0000\u00e9\u2024'.split('')), minLength: 1, maxLength: 48 });
  const samples = fc.sample(nasty, { seed: 20251127, numRuns: 90 });
  samples.forEach((s, i) => {
    const w = wire(s);
    const at = i % 3;
    const path = at === 0 ? `/v2/${w}/manifests/${TAG}%00` : at === 1 ? `/v2/library/app/manifests/${w}%2f..` : `/v2/library/app/blobs/${w}`;
    cases.push({ group: 'generated', what: `${['name', 'tag', 'digest'][at]} ${JSON.stringify(s)}`, bytes: get(path), expect: '4xx' });
  });
  // Any Unicode, fully percent-encoded: exercises decoding of tags and digests.
  const unicode = fc.sample(fc.string({ unit: 'grapheme', minLength: 1, maxLength: 24 }), { seed: 7, numRuns: 40 });
  unicode.forEach((s, i) => {
    const e = encodeURIComponent(s);
    const path = i % 2 === 0 ? `/v2/library/app/manifests/${e}%c0` : `/v2/library/app/blobs/sha256:${e}`;
    cases.push({ group: 'generated', what: `encoded ${JSON.stringify(s)}`, bytes: get(path), expect: '4xx' });
  });
  // Paths assembled from API words and hostile segments, each with at least one hostile segment.
  const words = ['library', 'app', 'manifests', 'blobs', 'tags', 'list', 'referrers', TAG, layer().digest, 'sha256:'];
  const hostile = ['..', '%2e%2e', '%2f', '%00', '\\', '%5c', '.', '', '%252e'];
  const paths = fc.sample(
    fc.tuple(fc.array(fc.constantFrom(...words, ...hostile), { minLength: 1, maxLength: 7 }), fc.constantFrom(...hostile.filter(Boolean)), fc.nat()),
    { seed: 99, numRuns: 60 },
  );
  for (const [segments, bad, at] of paths) {
    const all = [...segments];
    all.splice(at % (all.length + 1), 0, bad);
    const path = `/v2/${all.join('/')}`;
    cases.push({ group: 'generated', what: path, bytes: get(path), expect: '4xx' });
  }
  return cases;
}

function longCases(): Case[] {
  const seg = (n: number) => Array.from({ length: n }, () => 'a').join('/');
  const list: Array<[string, string, Expect]> = [
    ['name of 256', `/v2/${'a'.repeat(256)}/manifests/${TAG}`, '4xx'],
    ['name of 255 (valid, unknown)', `/v2/${'a'.repeat(255)}/manifests/${TAG}`, '4xx'],
    ['128 components', `/v2/${seg(128)}/manifests/${TAG}`, '4xx'],
    ['2000 components', `/v2/${seg(2000)}/manifests/${TAG}`, '4xx'],
    ['name of 1025', `/v2/${'b'.repeat(1025)}/blobs/${layer().digest}`, '4xx'],
    ['name of 5000', `/v2/${'c'.repeat(5000)}/manifests/${TAG}`, '4xx'],
    ['name of 15000', `/v2/${'d'.repeat(15000)}/manifests/${TAG}`, '4xx'],
    ['name of 70000', `/v2/${'e'.repeat(70000)}/manifests/${TAG}`, '4xx'],
    ['tag of 128 (valid, unknown)', `/v2/library/app/manifests/${'t'.repeat(128)}`, '4xx'],
    ['tag of 129', `/v2/library/app/manifests/${'t'.repeat(129)}`, '4xx'],
    ['tag of 5000', `/v2/library/app/manifests/${'t'.repeat(5000)}`, '4xx'],
    ['digest of 10000 hex', `/v2/library/app/blobs/sha256:${'a'.repeat(10000)}`, '4xx'],
    ['query of 14000', `/v2/library/app/tags/list?last=${'x'.repeat(14000)}`, 'answer'],
    ['900 ns parameters', `/v2/library/app/manifests/${TAG}?${'ns=evil.example&'.repeat(900)}`, '4xx'],
  ];
  return list.map(([what, path, expect]) => ({ group: 'long', what, bytes: get(path), expect }));
}

function digestCases(): Case[] {
  const a = (n: number, ch = 'a') => ch.repeat(n);
  const bad = [
    `sha256:${a(63)}`, `sha256:${a(65)}`, `sha256:${a(64, 'A')}`, `sha256:${a(64, 'g')}`, 'sha256:', ':', `:${a(64)}`, `md5:${a(32)}`, `sha1:${a(40)}`,
    `sha384:${a(96)}`, `sha512:${a(127)}`, `SHA256:${a(64)}`, `sha256:${a(64)}%00`, `sha256::${a(64)}`, `sha256:+${a(63)}`, 'sha256:-',
    'sha256:..%2f..%2fcanary-secret', `sha256:${a(64)}%2f..`, `sha256+b64:${'q'.repeat(43)}=`, `blake3:${a(64)}`, 'sha256:%f0%9f%92%a5',
    `sha256:${a(32)}%20${a(31)}`, `sha256%3a${a(63)}`, `sha256:${a(64)}:${a(64)}`, `sha256:${'0x'}${a(62)}`,
  ];
  const unknown = [`sha256:${'0'.repeat(64)}`, `sha512:${'0'.repeat(128)}`, `sha256%3a${'1'.repeat(64)}`, `sha256%3A${'2'.repeat(64)}`];
  const cases: Case[] = [];
  for (const d of [...bad, ...unknown]) {
    cases.push({ group: 'digest', what: `blob ${d.slice(0, 48)}`, bytes: get(`/v2/library/app/blobs/${d}`), expect: '4xx' });
    cases.push({ group: 'digest', what: `manifest ${d.slice(0, 48)}`, bytes: get(`/v2/library/app/manifests/${d}`), expect: '4xx' });
  }
  cases.push({ group: 'digest', what: 'blob digest without algorithm', bytes: get(`/v2/library/app/blobs/${a(64)}`), expect: '4xx' });
  return cases;
}

function nsCases(): Case[] {
  const rp = registry.port;
  const values = [
    'evil.example', 'http://docker.io', 'https://evil.example', 'http%3a%2f%2fdocker.io', 'docker.io:443', 'docker.io:5000', `127.0.0.1:${rp}`,
    `localhost:${rp}`, `[::1]:${rp}`, '127.0.0.1', 'docker.io/evil', 'docker.io%2fevil', 'docker.io/../evil', 'user@docker.io', 'docker.io@evil.example',
    'user:pass@evil.example', 'user%3apass%40docker.io', '', '%00', 'docker.io%00', '..', '%2e%2e', '/', 'docker.io.', 'file:%2f%2f%2fetc%2fpasswd',
    'docker.io%0d%0aX-Injected:%201', 'xn--dckr-9ra.io', 'd%d0%beker.io', `docker.io%23`, 'docker.io%3f', '%20docker.io', 'docker.io%20',
  ];
  const cases: Case[] = [];
  for (const v of values) {
    cases.push({ group: 'ns', what: `manifest ns=${v}`, bytes: get(`/v2/library/app/manifests/${TAG}?ns=${v}`), expect: '4xx' });
    cases.push({ group: 'ns', what: `blob ns=${v}`, bytes: get(`/v2/library/app/blobs/${layer().digest}?ns=${v}`), expect: '4xx' });
  }
  cases.push({ group: 'ns', what: 'ns=evil then ns=docker.io', bytes: get(`/v2/library/app/manifests/${TAG}?ns=evil.example&ns=docker.io`), expect: '4xx' });
  cases.push({ group: 'ns', what: 'tags ns=evil then ns=docker.io', bytes: get(`/v2/library/app/tags/list?ns=evil.example&ns=docker.io`), expect: '4xx' });
  // Path prefixes naming hosts that are not configured (among them the upstream's own address).
  for (const host of [`127.0.0.1:${rp}`, `localhost:${rp}`, 'localhost', 'evil.example', 'evil.example:80', 'docker.io:443', 'docker.io.', 'user@evil.example', 'docker.io@evil.example', '[::1]']) {
    cases.push({ group: 'ns', what: `prefix ${host}`, bytes: get(`/v2/${host}/library/app/manifests/${TAG}`), expect: '4xx' });
  }
  // What HTTP lets through: the same value twice, case, and a parameter that is not ns.
  const fine: Array<[string, string]> = [
    ['ns twice, same', `/v2/library/app/manifests/${TAG}?ns=docker.io&ns=docker.io`],
    ['ns upper case', `/v2/library/app/manifests/${TAG}?ns=DOCKER.IO`],
    ['NS is not ns', `/v2/library/app/manifests/${TAG}?NS=evil.example`],
    ['ns[]', `/v2/library/app/manifests/${TAG}?ns[]=evil.example`],
    ['ns via alias-less prefix', `/v2/registry.test/library/app/manifests/${TAG}`],
  ];
  for (const [what, path] of fine) cases.push({ group: 'ns', what, bytes: get(path), expect: 'answer' });
  return cases;
}

function headerCases(hostPort: string): Case[] {
  const m = `/v2/library/app/manifests/${TAG}`;
  const b = `/v2/library/app/blobs/${layer().digest}`;
  const big = (n: number) => 'a'.repeat(n);
  const many = (count: number, size: number) => Array.from({ length: count }, (_, i) => [`X-H${i}`, big(size)] as [string, string]);
  const bad: Array<[string, Buffer]> = [
    ['60 KiB header', get(m, [['X-Big', big(60 * 1024)]])],
    ['60 KiB Accept', get(m, [['Accept', big(60 * 1024)]])],
    ['60 KiB Range', get(b, [['Range', `bytes=0-${'1'.repeat(60 * 1024)}`]])],
    ['60 KiB Authorization', get(m, [['Authorization', `Basic ${big(60 * 1024)}`]])],
    ['60 KiB User-Agent', get(m, [['User-Agent', big(60 * 1024)]])],
    ['60 KiB Cookie', get(m, [['Cookie', big(60 * 1024)]])],
    ['200 headers of 100 bytes', get(m, many(200, 100))],
    ['3000 tiny headers', get(m, many(3000, 1))],
    ['1 MiB header', get(m, [['X-Huge', big(1024 * 1024)]])],
    ['60 KiB header name', get(m, [[big(60 * 1024), '1']])],
    ['no Host', rawRequest('GET', m, [['Accept', ACCEPT.all], ['Connection', 'close']])],
    ['CR inside a value', Buffer.from(`GET ${m} HTTP/1.1\r\nHost: ${hostPort}\r\nX-A: a\rb\r\nConnection: close\r\n\r\n`)],
    ['NUL inside a value', Buffer.from(`GET ${m} HTTP/1.1\r\nHost: ${hostPort}\r\nX-A: a\0b\r\nConnection: close\r\n\r\n`)],
    ['space in a name', Buffer.from(`GET ${m} HTTP/1.1\r\nHost: ${hostPort}\r\nX A: 1\r\nConnection: close\r\n\r\n`)],
    ['space before the colon', Buffer.from(`GET ${m} HTTP/1.1\r\nHost : ${hostPort}\r\nConnection: close\r\n\r\n`)],
    ['a line without colon', Buffer.from(`GET ${m} HTTP/1.1\r\nHost: ${hostPort}\r\nnocolon\r\nConnection: close\r\n\r\n`)],
    ['@ in a name', Buffer.from(`GET ${m} HTTP/1.1\r\nHost: ${hostPort}\r\nX@Y: 1\r\nConnection: close\r\n\r\n`)],
    ['bare LF line ends', Buffer.from(`GET ${m} HTTP/1.1\nHost: ${hostPort}\nConnection: close\n\n`)],
    ['Content-Length twice', get(m, [['Content-Length', '0'], ['Content-Length', '0']])],
    ['Transfer-Encoding twice', get('/v2/', [['Transfer-Encoding', 'chunked'], ['Transfer-Encoding', 'chunked']], 'POST', '0\r\n\r\n')],
  ];
  const cases: Case[] = bad.map(([what, bytes]) => ({ group: 'headers', what, bytes, expect: '4xx' as const }));
  const blobBody = async (r: RawResponse) => (r.status === 200 && !r.body.equals(await layerBytes()) ? 'blob body differs' : undefined);
  // Hostile-looking but acceptable to HTTP: answered, intact.
  const fine: Array<[string, Buffer, Case['verify']?]> = [
    ['15 KiB header', get(m, [['X-Big', big(15 * 1024)]])],
    ['Accept twice', get(m, [['Accept', 'application/vnd.oci.image.index.v1+json'], ['Accept', 'application/vnd.oci.image.manifest.v1+json']])],
    ['Accept of 10 KiB junk types', get(m, [['Accept', Array.from({ length: 1000 }, (_, i) => `x/y${i}`).join(',')]])],
    ['Accept with parameters and q', get(m, [['Accept', 'application/vnd.oci.image.index.v1+json;q=0.1;x="a,b", */*;q=0']])],
    ['Accept: */*', get(m, [['Accept', '*/*']])],
    ['empty Accept', get(m, [['Accept', '']])],
    ['Range twice', get(b, [['Range', 'bytes=0-9'], ['Range', 'bytes=10-19']]), blobBody],
    ['If-None-Match twice', get(m, [['If-None-Match', '"x"'], ['If-None-Match', '*']])],
    ['If-None-Match of 10 KiB', get(m, [['If-None-Match', Array.from({ length: 1000 }, () => 'W/"x"').join(',')]])],
    ['User-Agent twice', get(m, [['User-Agent', 'hostile-arm'], ['User-Agent', 'docker/1 os/linux arch/amd64']])],
    ['User-Agent detected junk arch', get(m, [['User-Agent', 'hostile-detect os/linux arch/__proto__'], ['Accept', ACCEPT.imagesOnly]])],
    ['User-Agent detected constructor', get(m, [['User-Agent', 'hostile-detect os/constructor arch/constructor']])],
    ['User-Agent of 14 KiB spaces', get(m, [['User-Agent', `hostile-detect${' os/linux'.repeat(1500)} arch/`]])],
    ['User-Agent ReDoS shape', get(m, [['User-Agent', `${'os/'.repeat(4000)}!`]])],
    ['X-Forwarded-For junk', get(m, [['X-Forwarded-For', 'not-an-ip, , ::ffff:zz, 999.1.1.1']])],
    ['X-Forwarded-For 2000 entries', get(m, [['X-Forwarded-For', Array.from({ length: 2000 }, (_, i) => `10.9.${i % 256}.1`).join(', ')]])],
    ['X-Forwarded-For twice', get(m, [['X-Forwarded-For', '10.9.0.1'], ['X-Forwarded-For', '[::1]:99999']])],
    ['X-Forwarded-For matching a filter rule', get(m, [['X-Forwarded-For', '10.9.3.4']])],
    ['Host of another registry', get(m, [['Host', 'registry-1.docker.io']])],
    ['Host with userinfo', get(m, [['Host', 'user:pass@evil.example']])],
    ['Host with a bad port', get(m, [['Host', '127.0.0.1:99999999']])],
    ['Host unbalanced bracket', get(m, [['Host', '[::1']])],
    ['Host empty', get(m, [['Host', '']])],
    ['Host of 10 KiB', get(m, [['Host', big(10 * 1024)]])],
    ['Authorization twice, auth off', get(m, [['Authorization', 'Basic eA=='], ['Authorization', 'Bearer y']])],
    ['Content-Type junk on GET', get(m, [['Content-Type', 'multipart/form-data; boundary=' + big(100)]])],
    ['Expect: 100-continue on GET', get(m, [['Expect', '100-continue']])],
    ['Expect: junk', get(m, [['Expect', 'x-junk']])],
    ['Upgrade: websocket', get('/v2/', [['Upgrade', 'websocket'], ['Connection', 'Upgrade']])],
    ['TE: trailers', get(m, [['TE', 'trailers, deflate;q=0.5']])],
    ['Accept-Encoding junk', get(b, [['Accept-Encoding', 'gzip;q=2, br;q=-1, *;q=x']]), blobBody],
    ['Max-Forwards: 0', get(m, [['Max-Forwards', '0']])],
    ['X-HTTP-Method-Override: DELETE', get(m, [['X-HTTP-Method-Override', 'DELETE']])],
    ['1500 tiny headers', get(m, many(1500, 1))],
  ];
  for (const [what, bytes, verify] of fine) cases.push({ group: 'headers', what, bytes, expect: 'answer', ...(verify ? { verify } : {}) });
  return cases;
}

function rangeCases(size: number): Case[] {
  const b = `/v2/library/app/blobs/${layer().digest}`;
  // Header → what must come back: 206 [start, end], 200 (ignored: whole body), 416.
  const list: Array<[string, [number, number] | 200 | 416]> = [
    ['bytes=0-0,2-3', 200], ['bytes=0-9, 20-29', 200], ['bytes=0-1,0-1,0-1,0-1', 200], [Array.from({ length: 2000 }, (_, i) => `${i}-${i}`).join(',').replace(/^/, 'bytes='), 200],
    ['bytes=--1', 200], ['bytes=1-0', 200], ['bytes=-', 200], ['bytes 0-1', 200], ['bytes=0x10-0x20', 200], ['bytes=1e3-', 200], ['items=0-1', 200],
    [`bytes=${'9'.repeat(30)}-`, 200], ['bytes=0-1;', 200], ['bytes=0-1,', 200], [',bytes=0-1', 200], ['bytes=\u0660-\u0661', 200], ['bytes=+1-2', 200],
    ['bytes=1.5-2', 200], ['bytes=0-1 bytes=2-3', 200], ['=0-1', 200], ['bytes==0-1', 200], [`bytes=${' '.repeat(14000)}x`, 200], ['', 200],
    ['bytes=0-', [0, size - 1]], ['BYTES=0-9', [0, 9]], ['bytes = 5 - 6', [5, 6]], ['bytes=0-1 ', [0, 1]], [`bytes=0-${'9'.repeat(400)}`, [0, size - 1]],
    [`bytes=-${'9'.repeat(400)}`, [0, size - 1]], ['bytes=-1', [size - 1, size - 1]], [`bytes=${size - 1}-`, [size - 1, size - 1]],
    [`bytes=${size}-`, 416], [`bytes=${size}-${size + 10}`, 416], ['bytes=-0', 416], [`bytes=${2 ** 53 - 1}-`, 416],
  ];
  const cases: Case[] = [];
  for (const [range, want] of list) {
    const expect: Expect = want === 416 ? '4xx' : 'answer';
    const verify = async (r: RawResponse): Promise<string | undefined> => {
      const full = await layerBytes();
      if (want === 200) return r.status === 200 && r.body.equals(full) ? undefined : `expected 200 with the whole blob, got ${r.status} (${r.body.length} bytes)`;
      if (want === 416) return undefined;
      const [s, e] = want;
      if (r.status !== 206) return `expected 206 ${s}-${e}, got ${r.status}`;
      if (header(r, 'content-range') !== `bytes ${s}-${e}/${size}`) return `Content-Range ${header(r, 'content-range')}`;
      return r.body.equals(full.subarray(s, e + 1)) ? undefined : 'the 206 body is not that slice';
    };
    cases.push({ group: 'range', what: `blob Range: ${JSON.stringify(range.slice(0, 40))}`, bytes: get(b, [['Range', range]]), expect, verify });
    cases.push({ group: 'range', what: `HEAD Range: ${JSON.stringify(range.slice(0, 40))}`, bytes: get(b, [['Range', range]], 'HEAD'), head: true, expect: 'answer' });
  }
  // On a manifest, Range is not for archway: ignored.
  cases.push({ group: 'range', what: 'manifest Range: bytes=0-1', bytes: get(`/v2/library/app/manifests/${TAG}`, [['Range', 'bytes=0-1']]), expect: 'answer' });
  cases.push({ group: 'range', what: 'manifest Range: bytes=0-1,5-6', bytes: get(`/v2/library/app/manifests/${TAG}`, [['Range', 'bytes=0-1,5-6']]), expect: 'answer' });
  // On an uncached blob's 404.
  cases.push({ group: 'range', what: 'unknown blob with Range', bytes: get(`/v2/library/app/blobs/sha256:${'3'.repeat(64)}`, [['Range', 'bytes=0-1']]), expect: '4xx' });
  return cases;
}

function methodCases(hostPort: string): Case[] {
  const m = `/v2/library/app/manifests/${TAG}`;
  const cases: Case[] = [];
  const odd = ['OPTIONS', 'TRACE', 'PROPFIND', 'PROPPATCH', 'MKCOL', 'COPY', 'MOVE', 'LOCK', 'UNLOCK', 'SEARCH', 'PURGE', 'REPORT', 'MKACTIVITY', 'CHECKOUT', 'MERGE', 'M-SEARCH', 'NOTIFY', 'SUBSCRIBE', 'UNSUBSCRIBE', 'LINK', 'UNLINK', 'ACL', 'BIND', 'REBIND', 'UNBIND', 'MKCALENDAR', 'SOURCE', 'QUERY'];
  for (const method of odd) {
    for (const path of ['/v2/', m]) cases.push({ group: 'methods', what: `${method} ${path}`, bytes: get(path, [], method), expect: '4xx' });
  }
  for (const method of ['get', 'head', 'post', 'Get', 'GETT', 'BREW', 'G-E-T', 'A'.repeat(10000), '']) {
    cases.push({ group: 'methods', what: `method ${JSON.stringify(method.slice(0, 12))}`, bytes: get('/v2/', [], method), expect: '4xx' });
  }
  cases.push({ group: 'methods', what: 'OPTIONS *', bytes: get('*', [], 'OPTIONS'), expect: '4xx' });
  // Writes: refused before any body is read, whatever the body.
  const writes: Array<[string, string, Array<[string, string]>, string | undefined]> = [
    ['POST', '/v2/library/app/blobs/uploads/', [['Content-Length', '0']], ''],
    ['POST', `/v2/library/app/blobs/uploads/?mount=${layer().digest}&from=team/app`, [['Content-Length', '0']], ''],
    ['PUT', m, [['Content-Type', 'application/vnd.oci.image.manifest.v1+json'], ['Content-Length', '2']], '{}'],
    ['PUT', `/v2/library/app/blobs/uploads/x?digest=${layer().digest}`, [['Content-Length', '5']], 'hello'],
    ['PATCH', '/v2/library/app/blobs/uploads/x', [['Transfer-Encoding', 'chunked']], '5\r\nhello\r\n0\r\n\r\n'],
    ['DELETE', m, [], undefined],
    ['DELETE', `/v2/library/app/blobs/${layer().digest}`, [], undefined],
    ['PUT', m, [['Content-Length', '10'], ['Expect', '100-continue']], undefined],
    ['POST', '/v2/', [['Content-Type', 'application/json'], ['Content-Length', '9']], '{"a":1,,}'],
    ['POST', '/v2/', [['Content-Type', 'application/json'], ['Content-Length', '27']], '{"__proto__":{"polluted":1}'],
    ['PUT', m, [['Content-Length', '1000']], 'short'],
    ['DELETE', '/v2/../canary-secret', [], undefined],
    ['PUT', '/v2/library/app/manifests/..%2f..%2fcanary-secret', [['Content-Length', String(MARKER.length)]], MARKER],
  ];
  for (const [method, path, extra, body] of writes) {
    cases.push({ group: 'methods', what: `${method} ${path.slice(0, 60)} ${extra.map(([k, v]) => `${k}=${v}`).join(' ')}`, bytes: get(path, extra, method, body), expect: '4xx' });
  }
  // A 5 MiB upload on a keep-alive connection: refused, its body read and discarded (never taken for
  // requests), and the next request on the connection answered.
  const upload = rawRequest('POST', '/v2/library/app/blobs/uploads/', [['Host', hostPort], ['Content-Length', String(5 * 1024 * 1024)]], Buffer.alloc(5 * 1024 * 1024, 'GET /v2/ HTTP/1.1\r\n\r\n'));
  cases.push({
    group: 'methods',
    what: 'POST a 5 MiB upload on a keep-alive connection, then GET /v2/',
    bytes: Buffer.concat([upload, get('/v2/')]),
    expect: '4xx',
    verifyAnswer: (a) => (a.responses.map((r) => r.status).join(',') === '405,200' ? undefined : `answers ${a.responses.map((r) => r.status).join(',')} (expected 405 then 200)`),
  });
  // Proxy-style requests: archway is no forward proxy.
  for (const target of [`http://127.0.0.1:${registry.port}/v2/library/app/manifests/${TAG}`, 'http://evil.example/v2/', `http://${hostPort}/v2/../../canary-secret`, 'https://evil.example:443/']) {
    cases.push({ group: 'methods', what: `absolute-form ${target}`, bytes: get(target), expect: '4xx' });
  }
  return cases;
}

function smugglingCases(hostPort: string): Case[] {
  const hidden = `GET /v2/library/app/manifests/${TAG} HTTP/1.1\r\nHost: ${hostPort}\r\n\r\n`;
  const start = (method: string, path = '/v2/') => `${method} ${path} HTTP/1.1\r\nHost: ${hostPort}\r\n`;
  const shapes: Array<[string, string]> = [
    ['CL then TE', `${start('POST')}Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${hidden}`],
    ['TE then CL', `${start('POST')}Transfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\n${hidden}`],
    ['GET with CL and TE', `${start('GET')}Content-Length: ${hidden.length + 5}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${hidden}`],
    ['two different CLs', `${start('POST')}Content-Length: 0\r\nContent-Length: ${hidden.length}\r\n\r\n${hidden}`],
    ['two equal CLs', `${start('POST')}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello`],
    ['CL list', `${start('POST')}Content-Length: 5, 5\r\n\r\nhello`],
    ['CL with plus', `${start('POST')}Content-Length: +5\r\n\r\nhello`],
    ['CL negative', `${start('POST')}Content-Length: -1\r\n\r\n`],
    ['CL hex', `${start('POST')}Content-Length: 0x5\r\n\r\nhello`],
    ['CL decimal point', `${start('POST')}Content-Length: 5.0\r\n\r\nhello`],
    ['CL empty', `${start('POST')}Content-Length: \r\n\r\n`],
    ['CL overflow', `${start('POST')}Content-Length: 99999999999999999999999\r\n\r\n`],
    ['TE chunked, identity', `${start('POST')}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n${hidden}`],
    ['TE identity', `${start('POST')}Transfer-Encoding: identity\r\nContent-Length: 0\r\n\r\n${hidden}`],
    ['TE xchunked', `${start('POST')}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n${hidden}`],
    ['TE chunked twice', `${start('POST')}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n${hidden}`],
    ['TE with a tab', `${start('POST')}Transfer-Encoding:\tchunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\n${hidden}`],
    ['TE before a space colon', `${start('POST')}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n${hidden}`],
    ['TE obs-folded', `${start('POST')}Transfer-Encoding: identity\r\n chunked\r\n\r\n0\r\n\r\n${hidden}`],
    ['obs-fold of another header', `${start('GET')}X-Folded: a\r\n b\r\n\r\n`],
    ['obs-fold with tab', `${start('GET')}X-Folded: a\r\n\tb\r\n\r\n`],
    ['chunk size junk', `${start('POST')}Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n`],
    ['chunk size overflow', `${start('POST')}Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\nhello\r\n0\r\n\r\n`],
    ['chunk with LF only', `${start('POST')}Transfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n${hidden}`],
    ['HTTP/1.0 with TE', `POST /v2/ HTTP/1.0\r\nHost: ${hostPort}\r\nTransfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\n${hidden}`],
    ['junk after the version', `GET /v2/ HTTP/1.1 junk\r\nHost: ${hostPort}\r\n\r\n`],
    ['version HTTP/1.x', `GET /v2/ HTTP/1.x\r\nHost: ${hostPort}\r\n\r\n`],
    ['version HTTP/9.9', `GET /v2/ HTTP/9.9\r\nHost: ${hostPort}\r\n\r\n`],
    ['h2 preface', 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n'],
    ['TLS ClientHello on plain HTTP', '\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03'.padEnd(64, '\0')],
    ['binary junk', '\x00\x01\x02\x03\xff\xfe\r\n\r\n'],
    ['request line only LF', `GET /v2/\n\n`],
  ];
  const cases: Case[] = shapes.map(([what, s]) => ({ group: 'smuggling', what, bytes: Buffer.from(s, 'latin1'), expect: '4xx' as const, smuggling: true }));
  // RFC 9112 §3 lets a recipient split the request line on any whitespace: answered, never twice.
  cases.push({ group: 'smuggling', what: 'two spaces in the request line', bytes: Buffer.from(`GET  /v2/  HTTP/1.1\r\nHost: ${hostPort}\r\nConnection: close\r\n\r\n${hidden}`), expect: 'answer', smuggling: true });
  return cases;
}

function queryCases(): Case[] {
  const t = '/v2/library/app/tags/list';
  const list: Array<[string, string]> = [
    ['n=abc', `${t}?n=abc`], ['n=-1', `${t}?n=-1`], ['n=1e9', `${t}?n=1e9`], ['n twice', `${t}?n=1&n=2`], ['last=%00', `${t}?last=%00`],
    ['last traversal', `${t}?last=..%2f..%2fcanary-secret`], ['unknown params', `${t}?a=1&b=2&c`], ['raw &&&', `${t}?&&&==&`],
    ['referrers artifactType junk', `/v2/library/app/referrers/${image.topDigest}?artifactType=%00%0d%0a`],
    ['base with ns=evil', '/v2/?ns=evil.example'], ['base with junk query', '/v2/?%%%'],
  ];
  return list.map(([what, path]) => ({ group: 'query', what, bytes: get(path), expect: 'answer' as const }));
}

/** Requests HTTP lets through but that are ambiguous, each refused by the standard or by the issue. */
function ambiguousCases(hostPort: string): Case[] {
  const m = `/v2/library/app/manifests/${TAG}`;
  return [
    // RFC 9112 §3.2: "A server MUST respond with a 400 (Bad Request) status code to any HTTP/1.1 request message
    // that ... contains more than one Host header field line". Platform rules match on Host.
    { group: 'ambiguous', what: 'two different Host headers', bytes: rawRequest('GET', m, [['Host', hostPort], ['Host', 'evil.example'], ['Accept', ACCEPT.all], ['Connection', 'close']]), expect: '4xx' },
    { group: 'ambiguous', what: 'two equal Host headers', bytes: rawRequest('GET', '/v2/', [['Host', hostPort], ['Host', hostPort], ['Connection', 'close']]), expect: '4xx' },
    // The issue: `ns` repeated gets a 4xx. containerd sends one; two different ones name two registries.
    { group: 'ambiguous', what: 'ns=docker.io then ns=evil.example', bytes: get(`${m}?ns=docker.io&ns=evil.example`), expect: '4xx' },
    { group: 'ambiguous', what: 'ns=docker.io then ns=registry.test', bytes: get(`${m}?ns=docker.io&ns=registry.test`), expect: '4xx' },
    { group: 'ambiguous', what: 'ns then a percent-encoded n%73', bytes: get(`${m}?ns=docker.io&n%73=evil.example`), expect: '4xx' },
    { group: 'ambiguous', what: 'Host and HOST', bytes: rawRequest('GET', m, [['Host', hostPort], ['HOST', 'evil.example'], ['Accept', ACCEPT.all], ['Connection', 'close']]), expect: '4xx' },
    // CONNECT: archway is no proxy; it should say so (405/400) rather than drop the connection unanswered.
    { group: 'ambiguous', what: 'CONNECT host:port', bytes: rawRequest('CONNECT', `127.0.0.1:${registry.port}`, [['Host', `127.0.0.1:${registry.port}`]]), expect: '4xx' },
    { group: 'ambiguous', what: 'CONNECT /v2/', bytes: rawRequest('CONNECT', '/v2/', [['Host', hostPort]]), expect: '4xx' },
  ];
}

// ---------------------------------------------------------------------------

describe('hostile input against an open archway (process)', () => {
  const groups: Array<[string, () => Case[]]> = [
    ['path traversal in names, tags, digests and ns (../, %2e%2e, %2f, %5c, \\, NUL)', traversalCases],
    ['paths outside the API: nothing on disk is served', nonApiCases],
    ['generated names, tags, digests and paths (fast-check, fixed seeds)', generatedCases],
    ['over-long names, tags and digests', longCases],
    ['bad digests and algorithms', digestCases],
    ['ns with a scheme, port, path, userinfo, or not configured; host prefixes', nsCases],
    ['huge, malformed and duplicated headers', () => headerCases(open.hostPort)],
    ['malformed and multi-range Range', () => rangeCases(layer().size)],
    ['odd methods, writes and proxy-style targets', () => methodCases(open.hostPort)],
    ['request-smuggling shapes (raw sockets)', () => smugglingCases(open.hostPort)],
    ['hostile queries passed upstream', queryCases],
  ];
  for (const [title, build] of groups) {
    it(title, async () => {
      const cases = build();
      assert.ok(cases.length > 0);
      report(await runCases(open, cases));
    });
  }

  it('a refused upload from a client that asked to close still gets its 405 (20 × 5 MiB)', async () => {
    // archway answers 405 before reading the body; if it then closes with the body unread, the kernel
    // sends a TCP reset, which can destroy the 405 before the client reads it (RFC 9112 §9.6: a server
    // should half-close and keep reading, a "lingering close"). Keep-alive clients are not affected.
    const body = Buffer.alloc(5 * 1024 * 1024, 'x');
    const lost: number[] = [];
    for (let i = 0; i < 20; i++) {
      const a = await exchange(open, rawRequest('POST', '/v2/library/app/blobs/uploads/', headersFor('/v2/', [['Content-Length', String(body.length)]]), body));
      sent++;
      if (a.responses[0]?.status !== 405) lost.push(i);
    }
    assert.deepEqual(lost, [], `${lost.length} of 20 uploads got no 405 (the connection was reset with the body unread)`);
  });

  it('ambiguous requests are refused: two Host headers, repeated ns, CONNECT', async () => {
    report(await runCases(open, ambiguousCases(open.hostPort)));
  });
});

describe('hostile input against an archway with client authentication (process)', () => {
  const m = `/v2/library/app/manifests/${TAG}`;
  const alice = basic('alice', USERS.alice);

  it('a subset of the corpus without, with wrong, and with valid credentials', async () => {
    const base = [...traversalCases().filter((_, i) => i % 6 === 0), ...digestCases().filter((_, i) => i % 3 === 0), ...nsCases().filter((c) => c.expect === '4xx' && c.what.startsWith('manifest')).slice(0, 12)];
    const cases: Case[] = [];
    for (const c of base) {
      const text = c.bytes.toString('latin1');
      const withAuth = (value: string) => Buffer.from(text.replace('\r\nConnection: close', `\r\nAuthorization: ${value}\r\nConnection: close`), 'latin1');
      cases.push({ ...c, group: 'auth', what: `no credentials: ${c.what}`, credentials: 'none' });
      cases.push({ ...c, group: 'auth', what: `wrong password: ${c.what}`, bytes: withAuth(basic('alice', 'wrong')), credentials: 'wrong' });
      cases.push({ ...c, group: 'auth', what: `valid: ${c.what}`, bytes: withAuth(alice), credentials: 'valid' });
    }
    assert.ok(cases.length >= 100, `${cases.length} cases`);
    report(await runCases(guarded, cases));
  });

  it('hostile Authorization values never authenticate', async () => {
    const b64 = (s: string) => Buffer.from(s, 'latin1').toString('base64');
    const wrong = [
      'Basic', 'Basic ', `Basic ${'A'.repeat(14000)}`, 'Basic !!!not-base64!!!', `Basic ${b64(':' + USERS.alice)}`, `Basic ${b64('alice')}`,
      `Basic ${b64('alice:')}`, `Basic ${b64(`alice:${USERS.alice}\0`)}`, `Basic ${b64(`alice\0:${USERS.alice}`)}`, `Basic ${b64(`ALICE:${USERS.alice}`)}`,
      `Basic ${b64(` alice:${USERS.alice}`)}`, `Basic ${b64(`alice:${USERS.alice.toUpperCase()}`)}`, `Basic ${b64(`alice:${USERS.alice} `)}`,
      `Basic ${b64('alice:' + 'x'.repeat(10000))}`, `Basic ${b64(`bob:${USERS.alice}`)}`, `Basic ${b64(`mallory:${USERS.alice}`)}`,
      `Basic ${b64(`__proto__:${USERS.alice}`)}`, `Basic ${b64(`constructor:x`)}`, `Basic ${b64('alice:x'.repeat(2000))}`,
      'Bearer', 'Bearer ', `Bearer ${'x'.repeat(14000)}`, `Bearer alice:${USERS.alice}`, `Bearer ${b64(`alice:${USERS.alice}`)}`, 'Digest username="alice", realm="archway"',
      'Negotiate YIIBhwYGKwYBBQUCoIIBezCCAXeg', `Basic${b64(`alice:${USERS.alice}`)}`, `NTLM ${b64(`alice:${USERS.alice}`)}`, `${b64(`alice:${USERS.alice}`)}`,
      `Basic ${b64(`alice:${USERS.alice}`).slice(0, -2)}`, 'Basic =', 'Basic ====', `Basic ${b64('\u00ff\u00fe:\u0000')}`,
    ];
    const cases: Case[] = wrong.map((value, i) => ({ group: 'auth-values', what: `#${i} ${value.slice(0, 40)}`, bytes: get(m, [['Authorization', value]]), expect: '4xx' as const, credentials: 'wrong' as const }));
    // Node's parser refuses the oversized ones itself.
    cases.push({ group: 'auth-values', what: '60 KiB Authorization', bytes: get(m, [['Authorization', `Basic ${'A'.repeat(60 * 1024)}`]]), expect: '4xx', credentials: 'wrong' });
    cases.push({ group: 'auth-values', what: 'wrong then valid Authorization', bytes: get(m, [['Authorization', basic('alice', 'wrong')], ['Authorization', alice]]), expect: '4xx', credentials: 'wrong' });
    cases.push({ group: 'auth-values', what: 'Proxy-Authorization only', bytes: get(m, [['Proxy-Authorization', alice]]), expect: '4xx', credentials: 'none' });
    // Metrics and health stay as configured; writes stay refused (401 or 405) even for a valid user.
    cases.push({ group: 'auth-values', what: 'valid user, PUT', bytes: get(m, [['Authorization', alice], ['Content-Length', '2']], 'PUT', '{}'), expect: '4xx', credentials: 'valid' });
    cases.push({ group: 'auth-values', what: 'bob outside his grant', bytes: get(`/v2/team/app/manifests/${TAG}`, [['Authorization', basic('bob', USERS.bob)]]), expect: '4xx', credentials: 'valid' });
    cases.push({ group: 'auth-values', what: 'bob, grant escaped by ..', bytes: get(`/v2/library/app/../../team/app/manifests/${TAG}`, [['Authorization', basic('bob', USERS.bob)]]), expect: '4xx', credentials: 'valid' });
    cases.push({ group: 'auth-values', what: 'bob, grant escaped by prefix', bytes: get(`/v2/docker.io/team/app/manifests/${TAG}`, [['Authorization', basic('bob', USERS.bob)]]), expect: '4xx', credentials: 'valid' });
    cases.push({ group: 'auth-values', what: 'bob, grant escaped by ns', bytes: get(`/v2/team/app/manifests/${TAG}?ns=registry.test`, [['Authorization', basic('bob', USERS.bob)]]), expect: '4xx', credentials: 'valid' });
    report(await runCases(guarded, cases));
  });

  it('lenient spellings of valid credentials may pass, and are intact when they do', async () => {
    const cases: Case[] = [
      ['basic (lower-case scheme)', `basic ${Buffer.from(`alice:${USERS.alice}`).toString('base64')}`],
      ['two spaces after the scheme', `Basic  ${Buffer.from(`alice:${USERS.alice}`).toString('base64')}`],
      ['trailing junk after the credentials', `Basic ${Buffer.from(`alice:${USERS.alice}`).toString('base64')} junk`],
    ].map(([what, value]) => ({ group: 'auth-values', what: what!, bytes: get(m, [['Authorization', value!]]), expect: 'answer' as const, credentials: 'valid' as const }));
    report(await runCases(guarded, cases));
  });

  it('ambiguous credentials are refused: two Authorization headers naming different users, or valid then wrong', async () => {
    const cases: Case[] = [
      { group: 'ambiguous-auth', what: 'valid then wrong Authorization', bytes: get(m, [['Authorization', alice], ['Authorization', basic('alice', 'wrong')]]), expect: '4xx', credentials: 'wrong' },
      { group: 'ambiguous-auth', what: 'Authorization and AUTHORIZATION', bytes: get(m, [['Authorization', alice], ['AUTHORIZATION', basic('bob', USERS.bob)]]), expect: '4xx', credentials: 'wrong' },
      {
        group: 'ambiguous-auth',
        what: 'alice then bob on a repository only alice may pull',
        bytes: get(`/v2/team/app/manifests/${TAG}`, [['Authorization', alice], ['Authorization', basic('bob', USERS.bob)]]),
        expect: '4xx',
      },
    ];
    report(await runCases(guarded, cases));
  });
});

describe('after the corpus', () => {
  it(`at least 300 requests were sent, and archway is alive and serves (count in the message)`, async () => {
    assert.ok(sent >= 300, `only ${sent} requests`);
    for (const proc of [open, guarded]) {
      assert.equal(proc.child.exitCode, null, `archway exited:\n${proc.output().slice(-2000)}`);
      assert.equal(proc.child.signalCode, null);
      const health = await exchange(proc, get('/healthz'));
      assert.equal(health.responses[0]?.status, 200);
      const auth: Array<[string, string]> = proc === guarded ? [['Authorization', basic('alice', USERS.alice)]] : [];
      const tag = await exchange(proc, get(`/v2/library/app/manifests/${TAG}`, auth));
      assert.equal(tag.responses[0]?.status, 200);
      assert.equal(sha256Digest(tag.responses[0]!.body), image.topDigest);
      const blob = await exchange(proc, get(`/v2/library/app/blobs/${layer().digest}`, auth));
      assert.equal(sha256Digest(blob.responses[0]!.body), layer().digest);
    }
    // The console says why (diagnostic, not asserted): how many Node's parser refused before archway saw them.
    console.log(`hostile corpus: ${sent} requests; ${parserRejections.length} refused by Node's HTTP parser`);
  });

  it('malformed percent-encoding is answered with the spec envelope too (not fastify\'s FST_ERR_BAD_URL body)', () => {
    // Still a 400, and answered before authentication with nothing leaked; only the body's shape is wrong.
    assert.deepEqual(badUrlAnswers, [], `${badUrlAnswers.length} answer(s) in fastify's shape:\n${badUrlAnswers.slice(0, 20).join('\n')}`);
  });

  it('archway logged no internal error and answered no 5xx', () => {
    for (const proc of [open, guarded]) {
      const bad = proc
        .output()
        .split('\n')
        .filter((l) => l.startsWith('{'))
        .map((l) => JSON.parse(l) as { level?: number; status?: number; msg?: string })
        .filter((l) => (l.level ?? 0) >= 50 || (l.status ?? 0) >= 500);
      assert.deepEqual(bad, []);
    }
  });

  it('no file outside cache.dir was read, written or created, and no answer carried a canary', async () => {
    for (const c of canaries) {
      const s = await stat(c);
      const was = canaryStats.get(c)!;
      assert.equal(s.mtimeMs, was.mtimeMs, `${c} was written`);
      assert.equal(s.size, was.size, `${c} changed size`);
      if (atimeWorks) assert.equal(s.atimeMs, was.atimeMs, `${c} was read`);
      assert.equal(await readFile(c, 'utf8'), `${MARKER}\n`);
    }
    for (const [dir, cache] of outsideDirs()) assert.deepEqual(await listOutside(dir, cache), listingsBefore.get(dir), `files outside cache.dir changed in ${dir}`);
    const strays = (await readdir(tmpdir())).filter((n) => n.includes('canary') && !canaries.some((c) => basename(c) === n));
    assert.deepEqual(strays, [], 'canary-named files appeared in the temp directory');
    if (!atimeWorks) console.log('note: this filesystem does not record reads (noatime); read-protection rests on the marker check');
  });

  it('the upstream was only ever asked for well-formed names, digests and tags', async () => {
    const NAME = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/;
    const REF = /^(?:[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}|sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/;
    const bad: string[] = [];
    for (const r of await registry.requests()) {
      if (r.path === '/v2/' || r.path === '/v2') continue;
      const m = /^\/v2\/(.+)\/(manifests|blobs|referrers)\/([^/]+)$/.exec(r.path) ?? /^\/v2\/(.+)\/(tags)\/list$/.exec(r.path);
      if (!m || !NAME.test(m[1]!) || m[1]!.length > 255 || (m[3] !== undefined && !REF.test(m[3]))) bad.push(`${r.method} ${r.uri}`);
    }
    assert.deepEqual(bad, []);
  });
});

describe('a client-chosen name cannot make archway think the upstream is down', () => {
  let archway: ArchwayHandle | undefined;
  let dir: string | undefined;
  after(async () => {
    await archway?.stop();
    if (dir) await removeDir(dir);
  });

  it('a 255-character name (263 with library/) is refused, and a moved tag is still seen after it', async () => {
    archway = await startArchway({ upstreams: { 'docker.io': { url: registry.url } }, cache: { tagTtl: '1s' } });
    dir = await tempDir('archway-hostile-moved-');
    const moved = await buildImage({ dir, tag: TAG, platforms: [{ os: 'linux', architecture: 'amd64' }], format: 'oci', layerSizes: [16 * 1024], seed: 'hostile-moved', index: false });
    await pushLayout(image, { hostPort: registry.hostPort, name: 'library/moving' });
    const first = await http(`${archway.url}/v2/moving/manifests/${TAG}`, { headers: { accept: ACCEPT.all } });
    assert.equal(first.headers['docker-content-digest'], image.topDigest);
    await pushLayout(moved, { hostPort: registry.hostPort, name: 'library/moving' });
    await sleep(1200); // past the tag TTL: the next pull revalidates
    const hostile = await http(`${archway.url}/v2/${'a'.repeat(255)}/manifests/${TAG}`, { headers: { accept: ACCEPT.all } });
    const problems: string[] = [];
    if (hostile.status !== 400 && hostile.status !== 404) problems.push(`the 255-character name got ${hostile.status} ${hostile.body.toString('utf8').slice(0, 160)} (expected 400 NAME_INVALID: Docker Hub's library/ makes it 263)`);
    const later = await http(`${archway.url}/v2/moving/manifests/${TAG}`, { headers: { accept: ACCEPT.all } });
    if (later.headers['docker-content-digest'] !== moved.topDigest) {
      problems.push(`after it, the moved tag was answered ${later.headers['docker-content-digest'] === image.topDigest ? 'stale (the old digest): archway took the upstream for down' : later.headers['docker-content-digest']}`);
    }
    assert.deepEqual(problems, []);
  });
});
