// The platform inspector against a real upstream: GET /_archway/platforms/<image>
// reports exactly what the upstream holds (every platform of an OCI index
// with attestations and of a Docker manifest list, a single-platform image
// read from its config, a virtual image assembled from per-architecture
// repositories), tells which platforms archway has cached as they are pulled,
// refuses what /v2 refuses (bad names, unknown tags, client auth); and
// `archway inspect` prints the same, through a running archway (--url) or
// straight from the config's upstreams (--config).
import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import { startArchway, type ArchwayHandle } from '../harness/archway.ts';
import { archwayEntry, startArchwayProcess, type ArchwayProcess } from '../harness/archway-process.ts';
import { ACCEPT, http, type HttpAnswer } from '../harness/http.ts';
import { ALL_PLATFORMS, buildImage, platformString, type BuiltImage, type BuiltManifest, type Platform } from '../harness/images.ts';
import { DOCKER, OCI } from '../harness/media-types.ts';
import { canonicalPlatform, manifestFor } from '../harness/platforms.ts';
import { run, waitFor, type RunResult } from '../harness/process.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

/** The report as the endpoint documents it; spelled out here, not imported from src/. */
interface Row {
  platform: string;
  digest: string;
  mediaType: string;
  size: number;
  layers: Array<{ digest: string; size: number }>;
  config?: { digest: string; size: number };
  cached: 'yes' | 'partial' | 'no';
  member?: string;
}
interface Report {
  image: string;
  registry: string;
  repository: string;
  virtual: boolean;
  digest: string;
  mediaType: string;
  platforms: Row[];
  attestations: number;
}

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const UPSTREAM = 'docker.io';
const TOKEN = 'inspect-token-0123456789abcdef';
const OTHER_TOKEN = 'inspect-other-fedcba9876543210';
const p = (os: string, architecture: string, variant?: string): Platform => (variant ? { os, architecture, variant } : { os, architecture });
const VIRTUAL = {
  'multi/app': { members: { 'linux/amd64': 'amd64/app', 'linux/arm64/v8': 'arm64v8/app', 'linux/s390x': 's390x/app' } },
};

let work: string;
let registry: RegistryHandle;
/** OCI index, all seven platforms, with attestations (library/all-oci:1). */
let oci: BuiltImage;
/** Docker manifest list, all seven platforms (library/all-docker:1). */
let docker: BuiltImage;
/** Three platforms, two layers each: pulled piece by piece (library/warm:1). */
let warm: BuiltImage;
/** One OCI image manifest for linux/arm/v7, no index (library/armv7-app:latest). */
let single: BuiltImage;
/** Virtual members: amd64/app:2 (Docker, single), arm64v8/app:2 (OCI, single), s390x/app:2 (an index). */
let amd64App: BuiltImage;
let arm64App: BuiltImage;
let s390xApp: BuiltImage;

/** In-process, no client auth: the endpoint tests. */
let archway: ArchwayHandle;
/** In-process with static tokens. */
let guarded: ArchwayHandle;
/** Its own process: what the CLI talks to, and whose config file it reads. */
let proc: ArchwayProcess;

before(async () => {
  work = await tempDir('archway-inspect-');
  registry = await startRegistry();
  const small = { layerSizes: [900, 300] };
  oci = await buildImage({ dir: join(work, 'oci'), tag: '1', platforms: ALL_PLATFORMS, format: 'oci', attestation: true, seed: 'insp-oci', ...small });
  docker = await buildImage({ dir: join(work, 'docker'), tag: '1', platforms: ALL_PLATFORMS, format: 'docker', seed: 'insp-docker', ...small });
  warm = await buildImage({
    dir: join(work, 'warm'),
    tag: '1',
    platforms: [p('linux', 'amd64'), p('linux', 'arm64', 'v8'), p('linux', 'arm', 'v7')],
    format: 'oci',
    seed: 'insp-warm',
    ...small,
  });
  single = await buildImage({ dir: join(work, 'single'), tag: 'latest', platforms: [p('linux', 'arm', 'v7')], format: 'oci', index: false, seed: 'insp-single', ...small });
  amd64App = await buildImage({ dir: join(work, 'amd64'), tag: '2', platforms: [p('linux', 'amd64')], format: 'docker', index: false, seed: 'insp-v-amd64', ...small });
  arm64App = await buildImage({ dir: join(work, 'arm64'), tag: '2', platforms: [p('linux', 'arm64', 'v8')], format: 'oci', index: false, seed: 'insp-v-arm64', ...small });
  // An index of its own: the virtual image takes its s390x entry.
  s390xApp = await buildImage({ dir: join(work, 's390x'), tag: '2', platforms: [p('linux', 'amd64'), p('linux', 's390x')], format: 'oci', seed: 'insp-v-s390x', ...small });

  const push = (image: BuiltImage, name: string, tag?: string) => pushLayout(image, { hostPort: registry.hostPort, name, ...(tag ? { tag } : {}) });
  await Promise.all([push(oci, 'library/all-oci'), push(docker, 'library/all-docker'), push(warm, 'library/warm'), push(single, 'library/armv7-app')]);
  await Promise.all([push(amd64App, 'amd64/app'), push(arm64App, 'arm64v8/app'), push(s390xApp, 's390x/app')]);
  // Tag 3 exists for one member only.
  await push(amd64App, 'amd64/app', '3');

  const upstreams = { [UPSTREAM]: { url: registry.url } };
  archway = await startArchway({ upstreams, virtual: VIRTUAL });
  guarded = await startArchway({
    upstreams,
    auth: {
      tokens: [
        { name: 'ci', token: TOKEN, repositories: [`${UPSTREAM}/library/all-oci`] },
        { name: 'other', token: OTHER_TOKEN, repositories: [`${UPSTREAM}/library/all-docker`] },
      ],
    },
  });
  proc = await startArchwayProcess({ upstreams, defaultUpstream: UPSTREAM, virtual: VIRTUAL, log: { level: 'warn' } });
});

after(async () => {
  await proc?.kill();
  await guarded?.stop();
  await archway?.stop();
  await registry?.stop();
  await removeDir(work);
});

// ---------------------------------------------------------------------------
// Helpers

function platforms(base: string, image: string, headers: Record<string, string> = {}): Promise<HttpAnswer> {
  return http(`${base}/_archway/platforms/${image}`, { headers });
}

async function reportOf(base: string, image: string, headers: Record<string, string> = {}): Promise<Report> {
  const r = await platforms(base, image, headers);
  assert.equal(r.status, 200, `${image}: ${r.body.toString()}`);
  assert.match(r.headers['content-type'] ?? '', /^application\/json/);
  return r.json<Report>();
}

const errorCode = (r: HttpAnswer) => r.json<{ errors: Array<{ code: string; message: string }> }>().errors[0]?.code;

/** The row the report must hold for a built platform manifest, byte counts from the built blobs. */
function expectedRow(image: BuiltImage, m: BuiltManifest, cached: Row['cached'] = 'no'): Row {
  const config = image.blobs.get(m.configDigest);
  assert.ok(config, `config blob of ${m.digest}`);
  return {
    platform: platformString(m.platform),
    digest: m.digest,
    mediaType: m.mediaType,
    size: m.layers.reduce((sum, l) => sum + l.size, 0),
    layers: m.layers.map((l) => ({ digest: l.digest, size: l.size })),
    config: { digest: m.configDigest, size: config.size },
    cached,
  };
}

function rowFor(report: Report, platform: string): Row {
  const row = report.platforms.find((r) => canonicalPlatform(r.platform) === canonicalPlatform(platform));
  assert.ok(row, `${report.image} has a ${platform} row (has ${report.platforms.map((r) => r.platform).join(', ')})`);
  return row;
}

const cachedColumn = (report: Report) => Object.fromEntries(report.platforms.map((r) => [r.platform, r.cached]));

/** Blob GETs the upstream answered for a repository. */
async function upstreamBlobGets(repository: string): Promise<string[]> {
  return (await registry.requests()).filter((r) => r.method === 'GET' && r.path.startsWith(`/v2/${repository}/blobs/`)).map((r) => r.path);
}

async function pullBlob(base: string, repository: string, digest: string): Promise<void> {
  const r = await http(`${base}/v2/${repository}/blobs/${digest}`);
  assert.equal(r.status, 200, `GET blob ${digest}`);
}

/** Polls the report until the cached column reads as wanted (a fill commits a moment after the client has its bytes). */
async function waitForCached(base: string, image: string, want: Record<string, Row['cached']>): Promise<Report> {
  let last: Report | undefined;
  await waitFor(
    async () => {
      last = await reportOf(base, image);
      return Object.entries(want).every(([platform, state]) => rowFor(last as Report, platform).cached === state);
    },
    { timeoutMs: 5000, description: `cached column ${JSON.stringify(want)}` },
  ).catch((err: unknown) => {
    throw new Error(`${(err as Error).message}\nlast: ${JSON.stringify(last && cachedColumn(last))}`);
  });
  return last as Report;
}

/** `archway inspect ARGS` as a user runs it, from the repository root, without ARCHWAY_* from our environment. */
function cli(args: string[], env: Record<string, string> = {}): Promise<RunResult> {
  const clean = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('ARCHWAY_')));
  return run(process.execPath, [...archwayEntry(), 'inspect', ...args], { allowFail: true, cwd: ROOT, env: { ...clean, ...env }, timeoutMs: 60_000 });
}

function ok(r: RunResult, what: string): string {
  assert.equal(r.code, 0, `${what}: exit ${r.code}\nstderr: ${r.stderr}\nstdout: ${r.stdout}`);
  return r.stdout;
}

interface Table {
  header: string;
  columns: string[];
  rows: Array<Record<string, string>>;
  notes: string[];
}

/** The printed table: header line, column titles, one line per platform (cells split on runs of 2+ spaces), notes. */
function parseTable(out: string): Table {
  const [header = '', titles = '', ...rest] = out.trimEnd().split('\n');
  const columns = titles.trim().split(/ {2,}/);
  const notes = rest.filter((l) => l.startsWith('('));
  const rows = rest
    .filter((l) => !l.startsWith('('))
    .map((l) => {
      const cells = l.trim().split(/ {2,}/);
      assert.equal(cells.length, columns.length, `table line has one cell per column: ${JSON.stringify(l)}`);
      return Object.fromEntries(columns.map((c, i) => [c, cells[i] ?? '']));
    });
  return { header, columns, rows, notes };
}

/** All regular files under a directory, relative paths, sorted. */
async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  return entries
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name).slice(dir.length))
    .sort();
}

// ---------------------------------------------------------------------------

describe('GET /_archway/platforms: multi-platform images', () => {
  const cases = () => [
    { label: 'OCI index with attestations', image: oci, repo: 'all-oci', kind: OCI.index, attestations: ALL_PLATFORMS.length },
    { label: 'Docker manifest list', image: docker, repo: 'all-docker', kind: DOCKER.index, attestations: 0 },
  ];

  it('reports exactly what the upstream holds: top digest and type, one row per platform with digest, type, layers, size; attestations counted, not listed', async () => {
    for (const { label, image, repo, kind, attestations } of cases()) {
      registry.clearRequests();
      const report = await reportOf(archway.url, `${repo}:1`);
      assert.equal(image.topMediaType, kind, label);
      assert.deepEqual(
        report,
        {
          image: `${repo}:1`,
          registry: UPSTREAM,
          repository: `library/${repo}`,
          virtual: false,
          digest: image.topDigest,
          mediaType: image.topMediaType,
          platforms: image.manifests.map((m) => expectedRow(image, m)),
          attestations,
        },
        label,
      );
      assert.deepEqual(
        report.platforms.map((r) => r.platform),
        ['linux/amd64', 'linux/arm64/v8', 'linux/arm/v7', 'linux/arm/v6', 'linux/386', 'linux/ppc64le', 'linux/s390x'],
        label,
      );
      // Inspecting reads manifests only: no layer (nor config) is fetched for an index.
      assert.deepEqual(await upstreamBlobGets(`library/${repo}`), [], `${label}: blobs fetched upstream by an inspection`);
    }
  });

  it('names the same image by digest, with the registry prefix and with ?ns=', async () => {
    const byTag = await reportOf(archway.url, 'all-oci:1');
    for (const image of [`all-oci@${oci.topDigest}`, `${UPSTREAM}/library/all-oci:1`, 'library/all-oci:1?ns=docker.io']) {
      const report = await reportOf(archway.url, image);
      assert.equal(report.image, image.replace(/\?.*$/, ''), image);
      assert.deepEqual({ ...report, image: byTag.image }, byTag, image);
    }
  });

  it('a platform manifest named by digest is one row, its platform read from the config', async () => {
    const m = manifestFor(oci, 'linux/ppc64le');
    const report = await reportOf(archway.url, `all-oci@${m.digest}`);
    assert.equal(report.digest, m.digest);
    assert.equal(report.mediaType, OCI.manifest);
    assert.equal(report.attestations, 0);
    assert.equal(report.platforms.length, 1);
    const { cached, ...row } = report.platforms[0] as Row;
    const { cached: _, ...want } = expectedRow(oci, m);
    assert.deepEqual(row, want);
    // Reading the platform read the config from the upstream without caching it: nothing pulled, "no".
    assert.equal(cached, 'no');
  });
});

describe('GET /_archway/platforms: the cached column follows pulls', () => {
  it('"no" before; "yes" for a platform whose config and layers were pulled; "partial" for one with some blobs', async () => {
    const image = 'warm:1';
    const arm64 = manifestFor(warm, 'linux/arm64/v8');
    const amd64 = manifestFor(warm, 'linux/amd64');
    const before = await reportOf(archway.url, image);
    assert.deepEqual(before.platforms, warm.manifests.map((m) => expectedRow(warm, m, 'no')));

    for (const digest of [arm64.configDigest, ...arm64.layers.map((l) => l.digest)]) await pullBlob(archway.url, 'library/warm', digest);
    const afterArm64 = await waitForCached(archway.url, image, { 'linux/arm64/v8': 'yes' });
    assert.deepEqual(cachedColumn(afterArm64), { 'linux/amd64': 'no', 'linux/arm64/v8': 'yes', 'linux/arm/v7': 'no' });
    // Everything else about the row is unchanged by caching.
    assert.deepEqual(rowFor(afterArm64, 'linux/arm64/v8'), expectedRow(warm, arm64, 'yes'));

    // One layer of amd64, not its config nor its other layer.
    await pullBlob(archway.url, 'library/warm', amd64.layers[0]!.digest);
    const afterPart = await waitForCached(archway.url, image, { 'linux/amd64': 'partial' });
    assert.deepEqual(cachedColumn(afterPart), { 'linux/amd64': 'partial', 'linux/arm64/v8': 'yes', 'linux/arm/v7': 'no' });

    // A config alone is partial too.
    const armv7 = manifestFor(warm, 'linux/arm/v7');
    await pullBlob(archway.url, 'library/warm', armv7.configDigest);
    const afterConfig = await waitForCached(archway.url, image, { 'linux/arm/v7': 'partial' });
    assert.deepEqual(cachedColumn(afterConfig), { 'linux/amd64': 'partial', 'linux/arm64/v8': 'yes', 'linux/arm/v7': 'partial' });

    // The rest of amd64: yes.
    await pullBlob(archway.url, 'library/warm', amd64.configDigest);
    await pullBlob(archway.url, 'library/warm', amd64.layers[1]!.digest);
    await waitForCached(archway.url, image, { 'linux/amd64': 'yes' });
  });
});

describe('GET /_archway/platforms: a single-platform image manifest', () => {
  it('is one row whose platform comes from the config blob; `name` alone means latest; layers are not fetched', async () => {
    registry.clearRequests();
    const [m] = single.manifests as [BuiltManifest];
    const report = await reportOf(archway.url, 'armv7-app');
    const { platforms: rows, ...top } = report;
    assert.deepEqual(top, {
      image: 'armv7-app',
      registry: UPSTREAM,
      repository: 'library/armv7-app',
      virtual: false,
      digest: single.topDigest,
      mediaType: OCI.manifest,
      attestations: 0,
    });
    assert.equal(single.topDigest, m.digest);
    assert.equal(rows.length, 1);
    const { cached, ...row } = rows[0] as Row;
    const { cached: _, ...want } = expectedRow(single, m);
    assert.deepEqual(row, want);
    assert.equal(row.platform, 'linux/arm/v7');
    // The config had to be read; the layers must not have been.
    const gets = await upstreamBlobGets('library/armv7-app');
    for (const l of m.layers) assert.ok(!gets.some((g) => g.endsWith(l.digest)), `layer ${l.digest} fetched by an inspection`);
    // Reading the platform did not cache the config: no client pulled anything, so "no"
    // (as archway inspect without --url says for the same image, see below).
    assert.equal(cached, 'no');
    assert.deepEqual(await reportOf(archway.url, 'armv7-app:latest'), { ...report, image: 'armv7-app:latest' });
  });
});

describe('GET /_archway/platforms: a virtual image', () => {
  /** Each member's image manifest for tag 2 as the upstream answers it (for s390x/app, its s390x entry). */
  async function upstreamMemberDigest(repository: string, platform: string): Promise<string> {
    const r = await http(`${registry.url}/v2/${repository}/manifests/2`, { headers: { accept: ACCEPT.all } });
    assert.equal(r.status, 200, `${repository}:2 upstream`);
    const digest = r.headers['docker-content-digest'] ?? '';
    const body = r.json<{ mediaType?: string; manifests?: Array<{ digest: string; platform?: Platform }> }>();
    if (!body.manifests) return digest;
    const entry = body.manifests.find((e) => e.platform && canonicalPlatform(e.platform) === canonicalPlatform(platform));
    assert.ok(entry, `${repository}:2 has ${platform}`);
    return entry.digest;
  }

  it('one row per member, naming the member repository, with the member’s digest upstream', async () => {
    const report = await reportOf(archway.url, 'multi/app:2');
    const members: Array<[string, string, BuiltImage, BuiltManifest]> = [
      ['linux/amd64', 'amd64/app', amd64App, amd64App.manifests[0] as BuiltManifest],
      ['linux/arm64/v8', 'arm64v8/app', arm64App, arm64App.manifests[0] as BuiltManifest],
      ['linux/s390x', 's390x/app', s390xApp, manifestFor(s390xApp, 'linux/s390x')],
    ];
    assert.equal(report.virtual, true);
    assert.equal(report.registry, UPSTREAM);
    assert.equal(report.repository, 'multi/app');
    assert.equal(report.image, 'multi/app:2');
    assert.equal(report.attestations, 0);
    assert.equal(report.platforms.length, members.length, JSON.stringify(report.platforms.map((r) => r.platform)));
    for (const [platform, repository, image, m] of members) {
      const row = rowFor(report, platform);
      assert.equal(row.member, `${UPSTREAM}/${repository}`, platform);
      assert.equal(row.digest, await upstreamMemberDigest(repository, platform), `${platform}: digest of ${repository}:2 upstream`);
      const { platform: _p, ...want } = expectedRow(image, m);
      const { platform: _q, member: _m, ...got } = row;
      assert.deepEqual(got, want, platform);
    }
    // The top digest is the index archway serves for the virtual name.
    const served = await http(`${archway.url}/v2/multi/app/manifests/2`, { headers: { accept: ACCEPT.all } });
    assert.equal(served.status, 200);
    assert.equal(report.digest, served.headers['docker-content-digest']);
    assert.equal(report.mediaType, served.headers['content-type']);
  });

  it('the same virtual image by its digest, with the registry prefix and with ?ns=', async () => {
    const byTag = await reportOf(archway.url, 'multi/app:2');
    for (const image of [`multi/app@${byTag.digest}`, `${UPSTREAM}/multi/app:2`, `multi/app:2?ns=${UPSTREAM}`]) {
      const report = await reportOf(archway.url, image);
      assert.equal(report.image, image.replace(/\?.*$/, ''), image);
      assert.deepEqual({ ...report, image: byTag.image }, byTag, image);
    }
  });

  it('a member’s image manifest by digest under the virtual name (as the table lists it): one row, platform from its config', async () => {
    await reportOf(archway.url, 'multi/app:2');
    const m = amd64App.manifests[0] as BuiltManifest;
    // Before anything pulled its config (a pull would cache it, and the inspector would find it there).
    const r = await platforms(archway.url, `multi/app@${m.digest}`);
    // /v2 serves the manifest and its config under the virtual name (from the member repository) ...
    const manifest = await http(`${archway.url}/v2/multi/app/manifests/${m.digest}`, { headers: { accept: ACCEPT.all } });
    assert.equal(manifest.status, 200);
    assert.equal((await http(`${archway.url}/v2/multi/app/blobs/${m.configDigest}`)).status, 200);
    // ... so the inspector must read that config the same way, not from a repository docker.io/multi/app (there is none).
    assert.equal(r.status, 200, r.body.toString());
    const report = r.json<Report>();
    assert.equal(report.virtual, true);
    assert.equal(report.digest, m.digest);
    assert.deepEqual(
      report.platforms.map((row) => [row.platform, row.digest, row.mediaType]),
      [['linux/amd64', m.digest, DOCKER.manifest]],
    );
  });

  it('a tag only one member has: one row; a tag no member has: 404', async () => {
    const report = await reportOf(archway.url, 'multi/app:3');
    assert.equal(report.virtual, true);
    assert.deepEqual(
      report.platforms.map((r) => [canonicalPlatform(r.platform), r.digest, r.member]),
      [['linux/amd64', amd64App.topDigest, `${UPSTREAM}/amd64/app`]],
    );
    const none = await platforms(archway.url, 'multi/app:nope');
    assert.equal(none.status, 404);
    assert.equal(errorCode(none), 'MANIFEST_UNKNOWN');
  });
});

describe('GET /_archway/platforms: errors', () => {
  it('unknown tag: 404 MANIFEST_UNKNOWN; unknown repository: 404', async () => {
    const r = await platforms(archway.url, 'all-oci:nope');
    assert.equal(r.status, 404);
    assert.equal(errorCode(r), 'MANIFEST_UNKNOWN');
    const digest = `sha256:${'0'.repeat(64)}`;
    const byDigest = await platforms(archway.url, `all-oci@${digest}`);
    assert.equal(byDigest.status, 404);
    assert.equal(errorCode(byDigest), 'MANIFEST_UNKNOWN');
    const repo = await platforms(archway.url, 'no-such-repo:1');
    assert.equal(repo.status, 404);
    assert.ok(['NAME_UNKNOWN', 'MANIFEST_UNKNOWN'].includes(errorCode(repo) ?? ''), errorCode(repo));
  });

  it('invalid names: 400 NAME_INVALID; invalid tag or digest: 400', async () => {
    for (const image of ['Upper/App:1', 'bad..name:1', '-lead:1', 'a//b:1', '']) {
      const r = await platforms(archway.url, image);
      assert.equal(r.status, 400, `"${image}": ${r.body.toString()}`);
      assert.equal(errorCode(r), 'NAME_INVALID', `"${image}"`);
    }
    const tag = await platforms(archway.url, 'all-oci:-bad');
    assert.equal(tag.status, 400, tag.body.toString());
    assert.equal(errorCode(tag), 'TAG_INVALID');
    const digest = await platforms(archway.url, 'all-oci@sha256:xyz');
    assert.equal(digest.status, 400, digest.body.toString());
    assert.equal(errorCode(digest), 'DIGEST_INVALID');
  });

  it('a malformed percent-encoding is a bad name (400), not a server error', async () => {
    const r = await platforms(archway.url, 'all%E0%A4%A-oci:1');
    assert.equal(r.status, 400, r.body.toString());
    assert.equal(errorCode(r), 'NAME_INVALID');
  });
});

describe('GET /_archway/platforms with client authentication', () => {
  it('401 without or with wrong credentials, 403 DENIED outside the token’s repositories (upstream not asked), 200 within', async () => {
    for (const headers of [{}, { authorization: `Bearer ${TOKEN}x` }] as Array<Record<string, string>>) {
      const r = await platforms(guarded.url, 'all-oci:1', headers);
      assert.equal(r.status, 401, JSON.stringify(headers));
      assert.equal(errorCode(r), 'UNAUTHORIZED');
      assert.ok(r.headers['www-authenticate'], 'a challenge');
    }
    registry.clearRequests();
    const other = { authorization: `Bearer ${OTHER_TOKEN}` };
    for (const image of ['all-oci:1', `all-oci@${oci.topDigest}`, `${UPSTREAM}/library/all-oci:1`, `library/all-oci:1?ns=${UPSTREAM}`]) {
      const r = await platforms(guarded.url, image, other);
      assert.equal(r.status, 403, image);
      assert.equal(errorCode(r), 'DENIED', image);
    }
    assert.deepEqual(await registry.requests(), [], 'denied inspections never reach the upstream');
    const mine = await reportOf(guarded.url, 'all-oci:1', { authorization: `Bearer ${TOKEN}` });
    assert.equal(mine.digest, oci.topDigest);
    assert.equal(mine.platforms.length, ALL_PLATFORMS.length);
    // Each token within its own grant; the other token still denied there.
    assert.equal((await reportOf(guarded.url, 'all-docker:1', other)).digest, docker.topDigest);
    assert.equal((await platforms(guarded.url, 'all-docker:1', { authorization: `Bearer ${TOKEN}` })).status, 403);
  });

  it('the CLI sends --token (or ARCHWAY_TOKEN); without one, or with the wrong one, it fails with exit 1', async () => {
    const [withToken, fromEnv, without, denied] = await Promise.all([
      cli(['all-oci:1', '--url', guarded.url, '--token', TOKEN, '--json']),
      cli(['all-oci:1', '--json'], { ARCHWAY_URL: guarded.url, ARCHWAY_TOKEN: TOKEN }),
      cli(['all-oci:1', '--url', guarded.url]),
      cli(['all-oci:1', '--url', guarded.url, '--token', OTHER_TOKEN]),
    ]);
    for (const [r, what] of [[withToken, '--token'], [fromEnv, 'ARCHWAY_TOKEN']] as const) {
      const report = JSON.parse(ok(r, what)) as Report;
      assert.equal(report.digest, oci.topDigest, what);
      assert.deepEqual(report.platforms.map((row) => row.digest), oci.manifests.map((m) => m.digest), what);
    }
    assert.equal(without.code, 1, without.stderr);
    assert.equal(without.stdout, '');
    assert.match(without.stderr, /^archway inspect: .*401.*UNAUTHORIZED/);
    assert.equal(denied.code, 1, denied.stderr);
    assert.match(denied.stderr, /^archway inspect: .*403.*DENIED/);
  });
});

describe('archway inspect (CLI)', () => {
  it('through a running archway: the table shows the header, every platform and digest; --json is the endpoint’s report', async () => {
    const [table, json, virtualTable, endpoint] = await Promise.all([
      cli(['all-oci:1', '--url', proc.url]),
      cli(['all-oci:1', '--url', proc.url, '--json']),
      cli(['multi/app:2', '--url', proc.url]),
      reportOf(proc.url, 'all-oci:1'),
    ]);
    assert.deepEqual(JSON.parse(ok(json, '--json')), endpoint);
    assert.equal(endpoint.digest, oci.topDigest);

    const t = parseTable(ok(table, 'table'));
    assert.equal(t.header, `all-oci:1: ${UPSTREAM}/library/all-oci, OCI index ${oci.topDigest}`);
    assert.deepEqual(t.columns, ['PLATFORM', 'DIGEST', 'MEDIA TYPE', 'LAYERS', 'SIZE', 'CACHED']);
    assert.deepEqual(
      t.rows.map((r) => [r.PLATFORM, r.DIGEST, r['MEDIA TYPE'], r.LAYERS, r.CACHED]),
      oci.manifests.map((m) => [platformString(m.platform), m.digest, 'OCI manifest', String(m.layers.length), 'no']),
    );
    for (const r of t.rows) assert.match(r.SIZE ?? '', /^\d+(\.\d)? (B|KiB|MiB|GiB)$/);
    assert.deepEqual(t.notes, [`(${ALL_PLATFORMS.length} attestation manifests not listed)`]);

    const v = parseTable(ok(virtualTable, 'virtual table'));
    assert.match(v.header, new RegExp(`^multi/app:2: ${UPSTREAM}/multi/app \\(virtual\\), OCI index sha256:[a-f0-9]{64}$`));
    assert.deepEqual(v.columns, ['PLATFORM', 'DIGEST', 'MEDIA TYPE', 'LAYERS', 'SIZE', 'CACHED', 'MEMBER']);
    assert.deepEqual(
      v.rows.map((r) => [canonicalPlatform(r.PLATFORM ?? ''), r.DIGEST, r.MEMBER]).sort(),
      [
        ['linux/amd64', amd64App.topDigest, `${UPSTREAM}/amd64/app`],
        ['linux/arm64', arm64App.topDigest, `${UPSTREAM}/arm64v8/app`],
        ['linux/s390x', manifestFor(s390xApp, 'linux/s390x').digest, `${UPSTREAM}/s390x/app`],
      ].sort(),
    );
    assert.deepEqual(v.notes, []);
  });

  it('straight from the config’s upstreams (--config, no --url): same platforms and digests; cached from the configured cache dir, which it leaves alone', async () => {
    const armv7 = manifestFor(docker, 'linux/arm/v7');
    const s390x = manifestFor(docker, 'linux/s390x');
    // Pulled through the running archway: arm/v7 entirely, s390x one layer.
    for (const d of [armv7.configDigest, ...armv7.layers.map((l) => l.digest), s390x.layers[1]!.digest]) {
      await pullBlob(proc.url, 'library/all-docker', d);
    }
    let endpoint: Report | undefined;
    await waitFor(
      async () => {
        endpoint = await reportOf(proc.url, 'all-docker:1');
        return rowFor(endpoint, 'linux/arm/v7').cached === 'yes' && rowFor(endpoint, 'linux/s390x').cached === 'partial';
      },
      { timeoutMs: 5000, description: 'the running archway to have committed the pulled blobs' },
    );
    const cacheBefore = await filesUnder(proc.cacheDir);
    assert.ok(cacheBefore.length > 0);

    const [json, table, virtualJson, virtualEndpoint] = await Promise.all([
      cli(['all-docker:1', '--config', proc.configPath, '--json']),
      cli(['all-docker:1', '--config', proc.configPath]),
      cli(['multi/app:2', '--config', proc.configPath, '--json']),
      reportOf(proc.url, 'multi/app:2'),
    ]);
    const direct = JSON.parse(ok(json, 'direct --json')) as Report;
    assert.deepEqual(direct, endpoint, 'the same report as the running archway gives');
    assert.deepEqual(
      direct.platforms.map((r) => [r.platform, r.digest, r.mediaType]),
      docker.manifests.map((m) => [platformString(m.platform), m.digest, DOCKER.manifest]),
    );
    assert.deepEqual(cachedColumn(direct), {
      'linux/amd64': 'no',
      'linux/arm64/v8': 'no',
      'linux/arm/v7': 'yes',
      'linux/arm/v6': 'no',
      'linux/386': 'no',
      'linux/ppc64le': 'no',
      'linux/s390x': 'partial',
    });
    const t = parseTable(ok(table, 'direct table'));
    assert.equal(t.header, `all-docker:1: ${UPSTREAM}/library/all-docker, Docker manifest list ${docker.topDigest}`);
    assert.deepEqual(
      t.rows.map((r) => [r.PLATFORM, r.DIGEST, r['MEDIA TYPE'], r.CACHED]),
      direct.platforms.map((r) => [r.platform, r.digest, 'Docker manifest v2', r.cached]),
    );
    assert.deepEqual(t.notes, []);
    // A virtual image, assembled in the CLI's own throw-away archway.
    const virtual = JSON.parse(ok(virtualJson, 'direct virtual --json')) as Report;
    assert.equal(virtual.virtual, true);
    assert.deepEqual(virtual, virtualEndpoint);
    assert.deepEqual(
      virtual.platforms.map((r) => r.member),
      [`${UPSTREAM}/amd64/app`, `${UPSTREAM}/arm64v8/app`, `${UPSTREAM}/s390x/app`],
    );
    assert.deepEqual(await filesUnder(proc.cacheDir), cacheBefore, 'direct mode writes nothing into the configured cache');
  });

  it('direct mode reads a single-platform image’s platform from its config, and reports only blobs in the configured cache', async () => {
    const r = await cli(['armv7-app:latest', '--config', proc.configPath, '--json']);
    const report = JSON.parse(ok(r, 'direct single')) as Report;
    assert.equal(report.digest, single.topDigest);
    assert.deepEqual(report.platforms, [expectedRow(single, single.manifests[0] as BuiltManifest, 'no')]);
  });

  it('failures: exit 1 with the reason on stderr (unknown tag, by URL and direct; unreachable archway); exit 2 for a bad config', async () => {
    const [byUrl, direct, badName, unreachable, badConfig] = await Promise.all([
      cli(['all-oci:nope', '--url', proc.url]),
      cli(['all-oci:nope', '--config', proc.configPath]),
      cli(['Bad/Name:1', '--url', proc.url]),
      cli(['all-oci:1', '--url', 'http://127.0.0.1:1']),
      cli(['all-oci:1', '--config', join(work, 'no-such-config.yaml')]),
    ]);
    for (const [r, what] of [[byUrl, 'by URL'], [direct, 'direct']] as const) {
      assert.equal(r.code, 1, `${what}: ${r.stderr}`);
      assert.equal(r.stdout, '', what);
      assert.match(r.stderr, /^archway inspect: .*404.*MANIFEST_UNKNOWN/, what);
    }
    assert.equal(badName.code, 1, badName.stderr);
    assert.match(badName.stderr, /^archway inspect: .*400.*NAME_INVALID/);
    assert.equal(unreachable.code, 1, unreachable.stderr);
    assert.match(unreachable.stderr, /^archway inspect: \S/);
    assert.equal(badConfig.code, 2, badConfig.stderr);
    assert.match(badConfig.stderr, /^archway: /);
    assert.equal(badConfig.stdout, '');
  });
});
