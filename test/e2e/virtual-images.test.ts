// Virtual multi-platform images with real clients: per-architecture
// repositories named like Docker Hub's organisations (amd64/app,
// arm64v8/app, …) in a real registry, assembled by archway into one index
// per tag. docker (mirror and a forced-s390x listener), containerd's ctr,
// `docker manifest inspect` and skopeo each get the member they should; a
// missing member is left out; manifests and blobs by digest come from the
// member they passed through (also after a restart); a cached virtual tag
// is served stale while the upstream is down.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { startArchway, type ArchwayHandle } from '../harness/archway.ts';
import { ctrImageDigest, ctrPull, ctrRemove } from '../harness/ctr.ts';
import { sha256Digest as sha256 } from '../harness/digest.ts';
import { startDockerd, type DockerdHandle } from '../harness/dockerd.ts';
import { ACCEPT, http, type HttpAnswer } from '../harness/http.ts';
import { ALL_PLATFORMS, MARKER_PATH, buildImage, platformString, type BuiltImage, type BuiltManifest, type Platform } from '../harness/images.ts';
import { DOCKER, OCI } from '../harness/media-types.ts';
import { readLayoutBlob, readLayoutTop } from '../harness/oci-layout.ts';
import { canonicalPlatform, manifestFor } from '../harness/platforms.ts';
import { freePort } from '../harness/ports.ts';
import { run } from '../harness/process.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { copyToLayout, pushLayout } from '../harness/skopeo.ts';
import { maybeGunzip, readTar } from '../harness/tar.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

/** Docker Hub's organisation for each platform of ALL_PLATFORMS (as in the `dockerhub` preset). */
const ORG: Record<string, string> = {
  'linux/amd64': 'amd64',
  'linux/arm64': 'arm64v8',
  'linux/arm/v7': 'arm32v7',
  'linux/arm/v6': 'arm32v6',
  'linux/386': 'i386',
  'linux/ppc64le': 'ppc64le',
  'linux/s390x': 's390x',
};
const orgOf = (p: Platform): string => ORG[canonicalPlatform(p)] ?? assert.fail(`no org for ${platformString(p)}`);

/** One virtual name's members as built and pushed: platform → the image in its repository. */
interface Members {
  name: string;
  byPlatform: Map<string, { platform: Platform; repo: string; image: BuiltImage; manifest: BuiltManifest }>;
}

interface IndexDoc {
  mediaType: string;
  manifests: Array<{ mediaType: string; digest: string; size: number; platform?: Platform }>;
}

let work: string;
let registry: RegistryHandle;
let archway: ArchwayHandle;
/** Listener whose rule resolves every index to linux/s390x. */
let s390xPort: number;
let dockerd: DockerdHandle | undefined;
/** multi/app (template multi/*) and official/app (preset): the same members. */
let app: Members;
/** official/tool (preset dockerhub): its own members. */
let tool: Members;

/**
 * Single-platform images, one repository per platform. The ppc64le member
 * is itself an index (ppc64le + amd64), as some per-architecture
 * repositories are: only its ppc64le entry belongs to the virtual image.
 * Each member has its own seed, so no two members share a digest and the
 * marker file says which member a client got.
 */
async function buildMembers(name: string): Promise<Members> {
  const byPlatform: Members['byPlatform'] = new Map();
  for (const platform of ALL_PLATFORMS) {
    const org = orgOf(platform);
    const nested = org === 'ppc64le';
    const image = await buildImage({
      dir: join(work, `${org}-${name}`),
      tag: '1',
      platforms: nested ? [platform, { os: 'linux', architecture: 'amd64' }] : [platform],
      index: nested,
      format: 'oci',
      layerSizes: [3000],
      seed: `virtual-${name}-${org}`,
    });
    const repo = `${org}/${name}`;
    await pushLayout(image, { hostPort: registry.hostPort, name: repo });
    byPlatform.set(canonicalPlatform(platform), { platform, repo, image, manifest: manifestFor(image, platformString(platform)) });
  }
  return { name, byPlatform };
}

function member(m: Members, platform: string) {
  return m.byPlatform.get(canonicalPlatform(platform)) ?? assert.fail(`${m.name} has no member for ${platform}`);
}

before(async () => {
  work = await tempDir('archway-virtual-');
  registry = await startRegistry();
  app = await buildMembers('app');
  tool = await buildMembers('tool');
  // Tags only one member has, for tags/list and single-entry indexes.
  await pushLayout(member(app, 'linux/amd64').image, { hostPort: registry.hostPort, name: 'amd64/app', tag: 'amd64-only' });
  await pushLayout(member(app, 'linux/arm64').image, { hostPort: registry.hostPort, name: 'arm64v8/app', tag: 'arm64-only' });

  s390xPort = await freePort();
  archway = await startArchway({
    upstreams: { 'docker.io': { url: registry.url } },
    ports: [s390xPort],
    platform: { default: 'linux/amd64', rules: [{ match: { port: s390xPort }, platform: 'linux/s390x', mode: 'resolve' }] },
    virtual: {
      'multi/*': {
        members: {
          'linux/amd64': 'amd64/{name}',
          // Written with the variant: the index entry must say plain arm64.
          'linux/arm64/v8': 'arm64v8/{name}',
          'linux/arm/v7': 'arm32v7/{name}',
          'linux/arm/v6': 'arm32v6/{name}',
          'linux/386': 'i386/{name}',
          'linux/ppc64le': 'ppc64le/{name}',
          'linux/s390x': 's390x/{name}',
          // No such repository upstream: left out of every index.
          'linux/riscv64': 'riscv64/{name}',
        },
      },
      // Also lists arm/v5, riscv64 and mips64le, which nobody pushed.
      'official/*': { members: 'dockerhub' },
    },
  });
});

after(async () => {
  await dockerd?.stop();
  await archway?.stop();
  await registry?.stop();
  await removeDir(work);
});

const SEVEN = ALL_PLATFORMS.map((p) => canonicalPlatform(p)).sort();

function manifestUrl(base: string, name: string, reference: string): string {
  return `${base}/v2/${name}/manifests/${reference}`;
}

async function getIndex(base: string, name: string, reference: string, accept = ACCEPT.all): Promise<{ r: HttpAnswer; doc: IndexDoc }> {
  const r = await http(manifestUrl(base, name, reference), { headers: { accept } });
  assert.equal(r.status, 200, `GET ${name}:${reference}: ${r.body.toString('utf8')}`);
  return { r, doc: r.json<IndexDoc>() };
}

/** The index's entries as platform → digest (platforms canonical, so arm64 and arm64/v8 compare equal). */
function entriesOf(doc: IndexDoc): Map<string, string> {
  return new Map(doc.manifests.map((m) => [canonicalPlatform(m.platform ?? assert.fail(`entry ${m.digest} without platform`)), m.digest]));
}

/** What the index of `m`'s tag 1 must list: each member's own manifest, under the member's platform. */
function expectedEntries(m: Members): Map<string, string> {
  return new Map([...m.byPlatform].map(([p, x]) => [p, x.manifest.digest]));
}

function errorOf(r: HttpAnswer): { code: string; message: string } {
  const [e] = r.json<{ errors: Array<{ code: string; message: string }> }>().errors;
  return e ?? assert.fail(`no error in ${r.body.toString('utf8')}`);
}

function requestLines(from: number): Array<Record<string, unknown>> {
  return archway.logs().slice(from).filter((l) => l.msg === 'request');
}

describe('the assembled index over HTTP (template multi/*)', () => {
  let indexDigest: string;

  it('HEAD of the tag names an OCI index that GET by that digest answers byte for byte (containerd’s flow)', async () => {
    const head = await http(manifestUrl(archway.url, 'multi/app', '1'), { method: 'HEAD', headers: { accept: ACCEPT.all } });
    assert.equal(head.status, 200);
    assert.equal(head.headers['content-type'], OCI.index);
    indexDigest = head.headers['docker-content-digest'] ?? assert.fail('no Docker-Content-Digest');
    const { r, doc } = await getIndex(archway.url, 'multi/app', indexDigest);
    assert.equal(sha256(r.body), indexDigest, 'the bytes hash to the digest HEAD named');
    assert.equal(Number(head.headers['content-length']), r.body.length);
    assert.equal(r.headers['content-type'], OCI.index);
    assert.equal(doc.mediaType, OCI.index);
    const byTag = await getIndex(archway.url, 'multi/app', '1');
    assert.ok(byTag.r.body.equals(r.body), 'GET of the tag: the same bytes');
  });

  it('has one entry per member that has the tag, platform from the config, digest the member’s own manifest', async () => {
    const { doc } = await getIndex(archway.url, 'multi/app', '1');
    assert.deepEqual([...entriesOf(doc).keys()].sort(), SEVEN, 'seven platforms (riscv64 has no repository)');
    assert.deepEqual(entriesOf(doc), expectedEntries(app));
    for (const e of doc.manifests) {
      const m = [...app.byPlatform.values()].find((x) => x.manifest.digest === e.digest);
      assert.ok(m, `entry ${e.digest} is a member's manifest`);
      assert.equal(e.size, m.manifest.size);
      assert.equal(e.mediaType, OCI.manifest);
    }
    // Normalised: the config says linux/arm64/v8, the index says arm64 without a variant.
    assert.deepEqual(doc.manifests.find((e) => e.platform?.architecture === 'arm64')?.platform, { architecture: 'arm64', os: 'linux' });
    // The ppc64le member is an index: its ppc64le entry is used, not the index nor its amd64 entry.
    const ppc = member(app, 'linux/ppc64le');
    assert.equal(entriesOf(doc).get('linux/ppc64le'), ppc.manifest.digest);
    assert.notEqual(ppc.manifest.digest, ppc.image.topDigest);
  });

  it('a member without the tag (no riscv64/app repository) is left out, with a log line naming it', () => {
    const lines = archway.logs().filter((l) => l.msg === 'virtual image member left out' && l.virtual === 'docker.io/multi/app');
    assert.ok(lines.length > 0, 'a "left out" line');
    assert.ok(lines.every((l) => l.member === 'docker.io/riscv64/app:1' && l.platform === 'linux/riscv64'), JSON.stringify(lines));
  });

  it('a client that accepts Docker’s list but not the OCI index gets a Docker manifest list of the same entries', async () => {
    const accept = `${DOCKER.index}, ${DOCKER.manifest}`;
    const { r, doc } = await getIndex(archway.url, 'multi/app', '1', accept);
    assert.equal(r.headers['content-type'], DOCKER.index);
    assert.equal(doc.mediaType, DOCKER.index);
    assert.deepEqual(entriesOf(doc), expectedEntries(app));
    const digest = r.headers['docker-content-digest'] ?? '';
    assert.equal(sha256(r.body), digest);
    assert.notEqual(digest, indexDigest, 'another document, another digest');
    const byDigest = await http(manifestUrl(archway.url, 'multi/app', digest), { headers: { accept } });
    assert.equal(byDigest.status, 200);
    assert.ok(byDigest.body.equals(r.body), 'kept: GET by its digest answers the same bytes');
  });

  it('an old client (image manifests only) gets the default platform’s member: amd64/app’s manifest', async () => {
    const r = await http(manifestUrl(archway.url, 'multi/app', '1'), { headers: { accept: ACCEPT.imagesOnly } });
    assert.equal(r.status, 200);
    const amd64 = member(app, 'linux/amd64').manifest;
    assert.equal(r.headers['docker-content-digest'], amd64.digest);
    assert.ok(r.body.equals(amd64.bytes), 'the member manifest, byte for byte');
  });

  it('the virtual name is reached through the default route, ?ns=docker.io and a docker.io/ prefix alike', async () => {
    for (const url of [manifestUrl(archway.url, 'multi/app', '1?ns=docker.io'), manifestUrl(archway.url, 'docker.io/multi/app', '1')]) {
      const r = await http(url, { headers: { accept: ACCEPT.all } });
      assert.equal(r.status, 200, url);
      assert.equal(r.headers['docker-content-digest'], indexDigest, url);
    }
  });

  it('tags/list is the union of the members’ tags', async () => {
    const r = await http(`${archway.url}/v2/multi/app/tags/list`);
    assert.equal(r.status, 200, r.body.toString('utf8'));
    assert.deepEqual(r.json(), { name: 'multi/app', tags: ['1', 'amd64-only', 'arm64-only'] });
  });

  it('a tag one member has: an index of that one entry', async () => {
    const { doc } = await getIndex(archway.url, 'multi/app', 'arm64-only');
    assert.deepEqual(entriesOf(doc), new Map([['linux/arm64', member(app, 'linux/arm64').manifest.digest]]));
  });

  it('a tag no member has: 404 MANIFEST_UNKNOWN listing every reference tried', async () => {
    const r = await http(manifestUrl(archway.url, 'multi/app', 'nope'), { headers: { accept: ACCEPT.all } });
    assert.equal(r.status, 404);
    const e = errorOf(r);
    assert.equal(e.code, 'MANIFEST_UNKNOWN');
    for (const org of [...Object.values(ORG), 'riscv64']) assert.ok(e.message.includes(`docker.io/${org}/app:nope`), `${org} in: ${e.message}`);
  });
});

describe('real clients', () => {
  before(async () => {
    // One daemon for the file: its mirror is the default listener, the
    // s390x listener is addressed as a registry of its own (127.0.0.0/8 is
    // an insecure registry to dockerd by default).
    dockerd = await startDockerd({ mirror: archway.url });
  });

  /** `docker image inspect` as os/arch[/variant]. */
  async function inspectedPlatform(d: DockerdHandle, ref: string): Promise<string> {
    const { stdout } = await d.docker(['image', 'inspect', '-f', '{{.Os}}/{{.Architecture}}{{if .Variant}}/{{.Variant}}{{end}}', ref]);
    return stdout.trim();
  }

  it('docker pull multi/app:1 through the mirror gets the amd64 member, recorded under the assembled index’s digest', async () => {
    const d = dockerd as DockerdHandle;
    await d.pull('multi/app:1');
    const amd64 = member(app, 'linux/amd64');
    assert.equal(await inspectedPlatform(d, 'multi/app:1'), 'linux/amd64');
    assert.equal(await d.fileFromImage('multi/app:1', MARKER_PATH), amd64.image.fileContent(amd64.platform), 'amd64/app’s layer');
    const head = await http(manifestUrl(archway.url, 'multi/app', '1'), { method: 'HEAD', headers: { accept: ACCEPT.all } });
    assert.ok((await d.repoDigests('multi/app:1')).includes(`multi/app@${head.headers['docker-content-digest']}`), 'repo digest is the virtual index’s');
  });

  it('docker pull through the listener forced to linux/s390x gets the s390x member', async () => {
    const d = dockerd as DockerdHandle;
    const ref = `127.0.0.1:${s390xPort}/multi/app:1`;
    const logStart = archway.logs().length;
    await d.pull(ref);
    const s390x = member(app, 'linux/s390x');
    assert.equal(await inspectedPlatform(d, ref), 'linux/s390x');
    assert.equal(await d.fileFromImage(ref, MARKER_PATH), s390x.image.fileContent(s390x.platform), 's390x/app’s layer');
    assert.ok((await d.repoDigests(ref)).includes(`127.0.0.1:${s390xPort}/multi/app@${s390x.manifest.digest}`), 'the member manifest’s own digest');
    const tagAnswers = requestLines(logStart).filter((l) => l.url === '/v2/multi/app/manifests/1' && l.status === 200);
    assert.ok(tagAnswers.length > 0 && tagAnswers.every((l) => l.platform === 'resolve:linux/s390x'), JSON.stringify(tagAnswers));
  });

  it('docker pull official/tool:1 (members: dockerhub) gets tool’s amd64 member; arm/v5, riscv64 and mips64le are left out', async () => {
    const d = dockerd as DockerdHandle;
    await d.pull('official/tool:1');
    const amd64 = member(tool, 'linux/amd64');
    assert.equal(await d.fileFromImage('official/tool:1', MARKER_PATH), amd64.image.fileContent(amd64.platform));
    const { doc } = await getIndex(archway.url, 'official/tool', '1');
    assert.deepEqual(entriesOf(doc), expectedEntries(tool), 'the seven pushed members, each its own manifest');
    const leftOut = archway.logs().filter((l) => l.msg === 'virtual image member left out' && l.virtual === 'docker.io/official/tool');
    assert.deepEqual(
      [...new Set(leftOut.map((l) => String(l.member)))].sort(),
      ['docker.io/arm32v5/tool:1', 'docker.io/mips64le/tool:1', 'docker.io/riscv64/tool:1'],
    );
  });

  it('ctr images pull --platform linux/ppc64le (hosts.toml mirror) gets the ppc64le entry of the member that is an index', async () => {
    const opts = { containerdSocket: (dockerd as DockerdHandle).containerdSocket };
    const ref = 'docker.io/multi/app:1';
    const logStart = archway.logs().length;
    await ctrPull({ ...opts, mirror: archway.url, ref, platform: 'linux/ppc64le' });
    const served = requestLines(logStart).map((l) => `${String(l.method)} ${String(l.url)} ${String(l.status)}`);

    const head = await http(manifestUrl(archway.url, 'multi/app', '1'), { method: 'HEAD', headers: { accept: ACCEPT.all } });
    const indexDigest = head.headers['docker-content-digest'] ?? '';
    assert.equal(await ctrImageDigest(opts, ref), indexDigest, 'containerd recorded the virtual index');
    assert.ok(served.some((s) => /^HEAD \/v2\/multi\/app\/manifests\/1\?ns=docker\.io 200$/.test(s)), `resolved with HEAD:\n${served.join('\n')}`);
    assert.ok(served.some((s) => s === `GET /v2/multi/app/manifests/${indexDigest}?ns=docker.io 200`), `then GET by digest:\n${served.join('\n')}`);

    // What containerd stored: its index → the ppc64le entry → first layer → the marker file.
    const content = async (digest: string) =>
      (await run('ctr', ['-a', opts.containerdSocket, '-n', 'archway-test', 'content', 'get', digest], { timeoutMs: 30_000 })).stdoutBuffer;
    const stored = JSON.parse((await content(indexDigest)).toString('utf8')) as IndexDoc;
    const entry = stored.manifests.find((m) => m.platform?.architecture === 'ppc64le') ?? assert.fail('no ppc64le entry');
    const ppc = member(app, 'linux/ppc64le');
    assert.equal(entry.digest, ppc.manifest.digest);
    const manifest = JSON.parse((await content(entry.digest)).toString('utf8')) as { layers: Array<{ digest: string }> };
    const layer = await content(manifest.layers[0]?.digest ?? assert.fail('no layer'));
    const marker = readTar(maybeGunzip(layer)).find((e) => e.name === MARKER_PATH.slice(1));
    assert.equal(marker?.data.toString('utf8'), ppc.image.fileContent(ppc.platform), 'ppc64le/app’s ppc64le layer');
    await ctrRemove(opts, ref);
  });

  it('docker manifest inspect --insecure lists every member’s platform', async () => {
    const d = dockerd as DockerdHandle;
    // A CLI-side command: the docker CLI talks to archway as a registry itself.
    const { stdout } = await d.docker(['manifest', 'inspect', '--insecure', `${archway.hostPort}/multi/app:1`], { timeoutMs: 60_000 });
    const doc = JSON.parse(stdout) as IndexDoc;
    assert.deepEqual(entriesOf(doc), expectedEntries(app));
  });

  it('skopeo copy --all yields an index whose entries are the members’ manifests under the configured platforms', async () => {
    const dir = join(work, 'skopeo-all');
    await copyToLayout(`${archway.hostPort}/multi/app:1`, dir, { all: true });
    const top = await readLayoutTop(dir, '1');
    const doc = JSON.parse(top.bytes.toString('utf8')) as IndexDoc;
    assert.deepEqual(entriesOf(doc), expectedEntries(app));
    // skopeo fetched every manifest and blob under the virtual name and checked their digests.
    for (const m of app.byPlatform.values()) {
      assert.ok((await readLayoutBlob(dir, m.manifest.digest)).equals(m.manifest.bytes), `${m.repo}: manifest bytes`);
      for (const l of m.manifest.layers) assert.equal(sha256(await readLayoutBlob(dir, l.digest)), l.digest);
    }
  });
});

describe('manifests and blobs by digest under the virtual name', () => {
  it('a blob of the arm64 member, after its manifest passed through, is served from arm64v8/app', async () => {
    const arm64 = member(app, 'linux/arm64');
    await getIndex(archway.url, 'multi/app', '1');
    const m = await http(manifestUrl(archway.url, 'multi/app', arm64.manifest.digest), { headers: { accept: ACCEPT.all } });
    assert.equal(m.status, 200);
    assert.ok(m.body.equals(arm64.manifest.bytes));
    const layer = arm64.manifest.layers[0] ?? assert.fail('no layer');
    const logStart = archway.logs().length;
    const r = await http(`${archway.url}/v2/multi/app/blobs/${layer.digest}`);
    assert.equal(r.status, 200);
    assert.ok(r.body.equals(await readLayoutBlob(arm64.image.layoutDir, layer.digest)), 'the layer’s bytes');
    assert.ok(requestLines(logStart).some((l) => l.url === `/v2/multi/app/blobs/${layer.digest}` && l.status === 200));
  });

  it('digests that came from no member: a random one, and content of the ppc64le repository outside the virtual image', async () => {
    const random = sha256(`nothing-${Date.now()}`);
    const blob = await http(`${archway.url}/v2/multi/app/blobs/${random}`);
    assert.equal(blob.status, 404);
    assert.equal(errorOf(blob).code, 'BLOB_UNKNOWN');
    const manifest = await http(manifestUrl(archway.url, 'multi/app', random), { headers: { accept: ACCEPT.all } });
    assert.equal(manifest.status, 404);
    assert.equal(errorOf(manifest).code, 'MANIFEST_UNKNOWN');
    // The ppc64le member's amd64 entry exists upstream but is no part of multi/app.
    const foreign = manifestFor(member(app, 'linux/ppc64le').image, 'linux/amd64');
    const m = await http(manifestUrl(archway.url, 'multi/app', foreign.digest), { headers: { accept: ACCEPT.all } });
    assert.equal(m.status, 404);
    assert.equal(errorOf(m).code, 'MANIFEST_UNKNOWN');
    const b = await http(`${archway.url}/v2/multi/app/blobs/${foreign.layers[0]?.digest}`);
    assert.equal(b.status, 404);
    assert.equal(errorOf(b).code, 'BLOB_UNKNOWN');
  });

  it('provenance survives a restart: the arm64 manifest and config by digest, no tag asked first', async () => {
    await archway.restart();
    const arm64 = member(app, 'linux/arm64');
    const m = await http(manifestUrl(archway.url, 'multi/app', arm64.manifest.digest), { headers: { accept: ACCEPT.all } });
    assert.equal(m.status, 200, m.body.toString('utf8'));
    assert.ok(m.body.equals(arm64.manifest.bytes));
    const config = await http(`${archway.url}/v2/multi/app/blobs/${arm64.manifest.configDigest}`);
    assert.equal(config.status, 200, config.body.toString('utf8'));
    assert.equal(sha256(config.body), arm64.manifest.configDigest);
    // Still nothing for what never passed through.
    const foreign = manifestFor(member(app, 'linux/ppc64le').image, 'linux/amd64');
    assert.equal((await http(`${archway.url}/v2/multi/app/blobs/${foreign.configDigest}`)).status, 404);
  });

  it('two virtual names over the same members (multi/app, official/app) each serve the members by digest', async () => {
    // Same members in the same order: the two indexes are the same bytes, so
    // whatever is remembered per index digest must still be recorded per name.
    const multi = await getIndex(archway.url, 'multi/app', '1');
    const official = await getIndex(archway.url, 'official/app', '1');
    assert.equal(official.r.headers['docker-content-digest'], multi.r.headers['docker-content-digest']);
    const arm64 = member(app, 'linux/arm64');
    const m = await http(manifestUrl(archway.url, 'official/app', arm64.manifest.digest), { headers: { accept: ACCEPT.all } });
    assert.equal(m.status, 200, `GET official/app@${arm64.manifest.digest}: ${m.body.toString('utf8')}`);
    assert.ok(m.body.equals(arm64.manifest.bytes));
  });
});

describe('with the upstream down', () => {
  const TTL_MS = 400;
  let stale: ArchwayHandle;
  before(async () => {
    // Its own archway: a short tag TTL, and a cache the tests above never touched.
    stale = await startArchway({
      upstreams: { 'docker.io': { url: registry.url } },
      cache: { tagTtl: `${TTL_MS}ms` },
      virtual: { 'multi/*': { members: { 'linux/amd64': 'amd64/{name}', 'linux/arm64': 'arm64v8/{name}', 'linux/s390x': 's390x/{name}' } } },
    });
  });
  after(async () => {
    await stale?.stop();
  });

  it('a cached virtual tag past its TTL is served stale, and revalidated once the upstream is back', async () => {
    const first = await getIndex(stale.url, 'multi/app', '1');
    const cachedAt = Date.now();
    const digest = first.r.headers['docker-content-digest'] ?? '';
    const amd64 = member(app, 'linux/amd64').manifest;
    assert.equal((await http(manifestUrl(stale.url, 'multi/app', amd64.digest), { headers: { accept: ACCEPT.all } })).status, 200);

    await registry.stop();
    try {
      // The TTL is a duration: nothing to poll for, so wait it out.
      await sleep(Math.max(0, cachedAt + TTL_MS + 200 - Date.now()));
      const logStart = stale.logs().length;
      const again = await getIndex(stale.url, 'multi/app', '1');
      assert.equal(again.r.headers['docker-content-digest'], digest);
      assert.ok(again.r.body.equals(first.r.body), 'the same bytes');
      const lines = stale.logs().slice(logStart);
      assert.equal(lines.filter((l) => l.msg === 'upstream failing; serving cached tag stale').length, 3, 'each member served stale');
      const req = lines.find((l) => l.msg === 'request' && l.url === '/v2/multi/app/manifests/1');
      assert.equal(req?.cache, 'stale');
      // containerd's next step, by digest, needs no upstream either.
      const byDigest = await http(manifestUrl(stale.url, 'multi/app', digest), { headers: { accept: ACCEPT.all } });
      assert.equal(byDigest.status, 200);
      const m = await http(manifestUrl(stale.url, 'multi/app', amd64.digest), { headers: { accept: ACCEPT.all } });
      assert.equal(m.status, 200);
      assert.ok(m.body.equals(amd64.bytes));
    } finally {
      await registry.restart();
    }
    // Cached tags are served stale without asking while the upstream counts
    // as down; uncached content still goes upstream, and that is how archway
    // notices the recovery: amd64's layer (its manifest passed through above).
    const layer = amd64.layers[0] ?? assert.fail('no layer');
    const fresh = await http(`${stale.url}/v2/multi/app/blobs/${layer.digest}`);
    assert.equal(fresh.status, 200, fresh.body.toString('utf8'));
    assert.equal(sha256(fresh.body), layer.digest);
    const logStart = stale.logs().length;
    const back = await getIndex(stale.url, 'multi/app', '1');
    assert.equal(back.r.headers['docker-content-digest'], digest);
    const req = stale.logs().slice(logStart).find((l) => l.msg === 'request' && l.url === '/v2/multi/app/manifests/1');
    assert.equal(req?.cache, 'revalidated', 'the members’ tags confirmed by the upstream again');
  });
});

describe('prefetching a virtual image', () => {
  const TOKEN = 'virtual-prefetch-admin-token';
  let warm: ArchwayHandle;
  before(async () => {
    warm = await startArchway({
      upstreams: { 'docker.io': { url: registry.url } },
      admin: { token: TOKEN },
      virtual: { 'multi/*': { members: { 'linux/amd64': 'amd64/{name}', 'linux/arm64': 'arm64v8/{name}', 'linux/s390x': 's390x/{name}' } } },
    });
  });
  after(async () => {
    await warm?.stop();
  });

  it('fetches the chosen members into the cache; with the upstream stopped they pull, the other member does not', async () => {
    const headers = { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' };
    const started = await http(`${warm.url}/_archway/prefetch`, { method: 'POST', headers, body: JSON.stringify({ image: 'multi/app:1', platforms: ['linux/arm64', 'linux/s390x'] }) });
    assert.equal(started.status, 202);
    const id = started.json<{ id: string }>().id;
    let job = started.json<{ state: string; bytes: { done: number; total: number }; error?: string }>();
    for (let i = 0; i < 200 && job.state === 'running'; i++) {
      await sleep(50);
      job = (await http(`${warm.url}/_archway/jobs/${id}`, { headers })).json();
    }
    assert.equal(job.state, 'done', job.error);
    const wanted = ['linux/arm64', 'linux/s390x'].map((p) => member(app, p).manifest);
    const expectedBytes = wanted.reduce((sum, m) => sum + m.layers.reduce((a, l) => a + l.size, 0), 0);
    assert.ok(job.bytes.total >= expectedBytes, `every layer of both members counted (${job.bytes.total} ≥ ${expectedBytes})`);

    await registry.stop();
    try {
      const index = await getIndex(warm.url, 'multi/app', '1');
      assert.equal(index.r.status, 200);
      for (const m of wanted) {
        const got = await http(manifestUrl(warm.url, 'multi/app', m.digest), { headers: { accept: ACCEPT.all } });
        assert.equal(got.status, 200);
        for (const layer of m.layers) {
          const blob = await http(`${warm.url}/v2/multi/app/blobs/${layer.digest}`);
          assert.equal(blob.status, 200, `layer of ${canonicalPlatform(m.platform)} served with the upstream down`);
          assert.equal(sha256(blob.body), layer.digest);
        }
      }
      // Assembling the index read every member's manifest (so amd64's is cached and, asked for, served);
      // only the chosen members' layers were fetched.
      const amd64 = member(app, 'linux/amd64').manifest;
      assert.equal((await http(manifestUrl(warm.url, 'multi/app', amd64.digest), { headers: { accept: ACCEPT.all } })).status, 200);
      const amd64Layer = amd64.layers[0] ?? assert.fail('no layer');
      const notPrefetched = await http(`${warm.url}/v2/multi/app/blobs/${amd64Layer.digest}`);
      assert.ok(notPrefetched.status >= 500, `the member that was not prefetched needs the upstream (${notPrefetched.status})`);
    } finally {
      await registry.restart();
    }
  });
});
