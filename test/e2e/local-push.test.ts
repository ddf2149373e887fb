// The seed's workflow, with the real docker CLI 28: per-architecture images in
// a real registry (amd64/node, ppc64le/node, s390x/node, arm32v6/node) are
// combined through archway with `docker manifest create`/`annotate`/`push`
// into one local tag, team/node:20; a docker daemon (archway as its mirror),
// containerd's ctr and podman each pull their own architecture of it, and
// `docker manifest inspect --verbose` lists all four. A pusher without the
// grant is refused; a push naming a blob archway cannot read fails with a
// spec error and stores nothing.
import assert from 'node:assert/strict';
import { readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import bcrypt from 'bcryptjs';
import { startArchway, type ArchwayHandle } from '../harness/archway.ts';
import { ctrImageDigest, ctrPull } from '../harness/ctr.ts';
import { startDockerd, type DockerdHandle } from '../harness/dockerd.ts';
import { ACCEPT, http } from '../harness/http.ts';
import { MARKER_PATH, buildImage, type BuiltImage, type Platform } from '../harness/images.ts';
import { run, type RunResult } from '../harness/process.ts';
import { startPodman, type Podman } from '../harness/podman.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

const USERS = { alice: 'alice-password', bob: 'bob-password' };
const ADMIN = 'admin-token-0123456789';
const basic = (user: keyof typeof USERS) => `Basic ${Buffer.from(`${user}:${USERS[user]}`).toString('base64')}`;

/** Repository at the upstream → the platform its image is for. */
const MEMBERS: Record<string, Platform> = {
  'amd64/node': { os: 'linux', architecture: 'amd64' },
  'ppc64le/node': { os: 'linux', architecture: 'ppc64le' },
  's390x/node': { os: 'linux', architecture: 's390x' },
  'arm32v6/node': { os: 'linux', architecture: 'arm', variant: 'v6' },
};

let work: string;
let registry: RegistryHandle;
let archway: ArchwayHandle;
let dockerd: DockerdHandle | undefined;
let podman: Podman | undefined;
/** The docker CLI's own config (docker login writes there), private to this test. */
let cliConfig: string;
const images = new Map<string, BuiltImage>();

/** The docker CLI on PATH (28), talking to registries itself; DOCKER_HOST points nowhere it could mistake for a daemon of the machine. */
function docker(args: string[], opts: { input?: string; allowFail?: boolean } = {}): Promise<RunResult> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('DOCKER_')));
  return run('docker', args, {
    env: { ...env, DOCKER_CONFIG: cliConfig, ...(dockerd ? { DOCKER_HOST: `unix://${dockerd.socket}` } : {}) },
    timeoutMs: 120_000,
    ...opts,
  });
}

async function login(user: keyof typeof USERS): Promise<void> {
  await docker(['login', archway.hostPort, '-u', user, '--password-stdin'], { input: USERS[user] });
}

async function buildMember(repo: string, platform: Platform, tag = '20'): Promise<BuiltImage> {
  const image = await buildImage({ dir: join(work, repo.replace('/', '-')), tag, platforms: [platform], index: false, format: 'docker', layerSizes: [2000], seed: `local-${repo}` });
  await pushLayout(image, { hostPort: registry.hostPort, name: repo, tag });
  return image;
}

/** Tags archway holds for a local repository, read from its folder (what a backup copies). */
async function localTags(repository: string): Promise<string[]> {
  return readdir(join(archway.cacheDir, 'local', encodeURIComponent(repository), 'tags')).catch(() => []);
}

before(async () => {
  work = await tempDir('archway-local-');
  cliConfig = join(work, 'docker-cli');
  registry = await startRegistry();
  for (const [repo, platform] of Object.entries(MEMBERS)) images.set(repo, await buildMember(repo, platform));
  const htpasswd = join(work, 'htpasswd');
  await writeFile(htpasswd, `${Object.entries(USERS).map(([u, p]) => `${u}:${bcrypt.hashSync(p, 4)}`).join('\n')}\n`);
  archway = await startArchway({
    upstreams: { 'docker.io': { url: registry.url } },
    auth: { htpasswd },
    admin: { token: ADMIN },
    local: { namespaces: [{ repositories: ['team/**'], push: ['alice'] }] },
  });
  dockerd = await startDockerd({ mirror: archway.url });
});

after(async () => {
  await podman?.close();
  await dockerd?.stop();
  await archway?.stop();
  await registry?.stop();
  await removeDir(work);
});

interface IndexDoc {
  mediaType: string;
  manifests: Array<{ digest: string; platform: Platform }>;
}

describe('docker manifest create/annotate/push to a local repository', () => {
  const target = () => `${archway.hostPort}/team/node:20`;
  const members = () => Object.keys(MEMBERS).map((repo) => `${archway.hostPort}/${repo}:20`);
  let indexDigest = '';

  it('composes one multi-platform tag from four per-architecture images', async () => {
    await login('alice');
    await docker(['manifest', 'create', '--insecure', target(), ...members()]);
    await docker(['manifest', 'annotate', '--variant', 'v6', target(), `${archway.hostPort}/arm32v6/node:20`]);
    const pushed = await docker(['manifest', 'push', '--insecure', target()]);
    indexDigest = pushed.stdout.trim().split('\n').at(-1) ?? '';
    assert.match(indexDigest, /^sha256:[a-f0-9]{64}$/, pushed.stdout);

    const r = await http(`${archway.url}/v2/team/node/manifests/20`, { headers: { accept: ACCEPT.all, authorization: basic('bob') } });
    assert.equal(r.status, 200, r.body.toString());
    assert.equal(r.headers['docker-content-digest'], indexDigest);
    const doc = r.json<IndexDoc>();
    const platforms = doc.manifests.map((m) => [m.platform.os, m.platform.architecture, m.platform.variant].filter(Boolean).join('/')).sort();
    assert.deepEqual(platforms, ['linux/amd64', 'linux/arm/v6', 'linux/ppc64le', 'linux/s390x']);
    for (const [repo, image] of images) {
      assert.ok(doc.manifests.some((m) => m.digest === image.manifests[0]?.digest), `${repo}'s manifest is an entry, as pushed`);
    }
    assert.deepEqual(await localTags('docker.io/team/node'), ['20'], 'kept in the local folder');
    const tags = await http(`${archway.url}/v2/team/node/tags/list`, { headers: { authorization: basic('bob') } });
    assert.deepEqual(tags.json(), { name: 'team/node', tags: ['20'] });

    const summary = (await http(`${archway.url}/_archway/cache`, { headers: { authorization: `Bearer ${ADMIN}` } })).json<{
      local: { repositories: Array<{ repository: string; manifests: number; tags: Array<{ tag: string; platforms: string[] }> }> };
    }>();
    const repo = summary.local.repositories.find((x) => x.repository === 'docker.io/team/node');
    assert.equal(repo?.manifests, 5, 'four members and the index');
    assert.deepEqual(repo?.tags.map((t) => t.platforms.sort()), [['linux/amd64', 'linux/arm/v6', 'linux/ppc64le', 'linux/s390x']]);
  });

  it('a docker daemon with archway as its mirror pulls amd64', async () => {
    assert.ok(dockerd);
    // dockerd sends the mirror the credentials the CLI has for Docker Hub.
    const config = JSON.parse(await readFile(join(dockerd.cliConfig, 'config.json'), 'utf8')) as Record<string, unknown>;
    config.auths = { 'https://index.docker.io/v1/': { auth: Buffer.from(`bob:${USERS.bob}`).toString('base64') } };
    await writeFile(join(dockerd.cliConfig, 'config.json'), JSON.stringify(config));
    await dockerd.pull('team/node:20');
    const { stdout } = await dockerd.docker(['image', 'inspect', '-f', '{{.Os}}/{{.Architecture}}', 'team/node:20']);
    assert.equal(stdout.trim(), 'linux/amd64');
    const amd64 = images.get('amd64/node') as BuiltImage;
    assert.equal(await dockerd.fileFromImage('team/node:20', MARKER_PATH), amd64.fileContent(MEMBERS['amd64/node'] as Platform));
  });

  it('ctr --platform linux/ppc64le pulls ppc64le', async () => {
    assert.ok(dockerd);
    const opts = { containerdSocket: dockerd.containerdSocket, namespace: 'local-push' };
    const ref = 'docker.io/team/node:20';
    const logStart = archway.logs().length;
    await ctrPull({ ...opts, mirror: archway.url, ref, platform: 'linux/ppc64le', user: `bob:${USERS.bob}` });
    assert.equal(await ctrImageDigest(opts, ref), indexDigest);
    const ppc = images.get('ppc64le/node') as BuiltImage;
    const urls = archway.logs().slice(logStart).map((l) => String(l.url));
    const manifest = ppc.manifests[0];
    assert.ok(manifest);
    for (const digest of [manifest.digest, manifest.configDigest, ...manifest.layers.map((l) => l.digest)]) {
      assert.ok(urls.some((u) => u.includes(digest)), `ctr fetched ${digest} (ppc64le's) through archway`);
    }
    const amd = images.get('amd64/node')?.manifests[0];
    assert.ok(!urls.some((u) => amd && u.includes(amd.configDigest)), 'and nothing of amd64');
  });

  it('podman pull --arch s390x pulls s390x', async () => {
    podman = await startPodman();
    await podman.pull(`${archway.hostPort}/team/node:20`, { platform: 'linux/s390x', creds: `bob:${USERS.bob}` });
    const image = await podman.inspect(`${archway.hostPort}/team/node:20`);
    assert.equal(image.architecture, 's390x');
    assert.equal(`sha256:${image.id}`, images.get('s390x/node')?.manifests[0]?.configDigest);
  });

  it('docker manifest inspect --verbose through archway lists every platform', async () => {
    const { stdout } = await docker(['manifest', 'inspect', '--insecure', '--verbose', target()]);
    const entries = JSON.parse(stdout) as Array<{ Descriptor: { digest: string; platform: Platform } }>;
    const platforms = entries.map((e) => [e.Descriptor.platform.os, e.Descriptor.platform.architecture, e.Descriptor.platform.variant].filter(Boolean).join('/')).sort();
    assert.deepEqual(platforms, ['linux/amd64', 'linux/arm/v6', 'linux/ppc64le', 'linux/s390x']);
    // archway's own platform inspector reads the same pushed index.
    const report = await http(`${archway.url}/_archway/platforms/team/node:20`, { headers: { authorization: basic('bob') } });
    assert.equal(report.status, 200, report.body.toString());
    const rows = report.json<{ digest: string; platforms: Array<{ platform: string; cached: string }> }>();
    assert.equal(rows.digest, indexDigest);
    assert.deepEqual(rows.platforms.map((p) => p.platform).sort(), ['linux/amd64', 'linux/arm/v6', 'linux/ppc64le', 'linux/s390x']);
  });

  it('a client without the push grant is refused (403) and nothing changes', async () => {
    await login('bob');
    await docker(['manifest', 'create', '--insecure', `${archway.hostPort}/team/other:1`, ...members().slice(0, 2)]);
    const pushed = await docker(['manifest', 'push', '--insecure', `${archway.hostPort}/team/other:1`], { allowFail: true });
    assert.notEqual(pushed.code, 0);
    assert.match(pushed.stderr, /denied|403/i, pushed.stderr);
    assert.deepEqual(await localTags('docker.io/team/other'), []);
  });

  it('a push naming a blob archway cannot read fails with a spec error and stores nothing', async () => {
    const image = await buildMember('riscv64/node', { os: 'linux', architecture: 'riscv64' });
    await login('alice');
    await docker(['manifest', 'create', '--insecure', `${archway.hostPort}/team/broken:1`, `${archway.hostPort}/riscv64/node:20`, members()[0] as string]);
    // Gone from the upstream after `create` read the manifest: archway's HEAD there finds nothing.
    const layer = image.manifests[0]?.layers[0]?.digest ?? assert.fail('no layer');
    const removed = await http(`${registry.url}/v2/riscv64/node/blobs/${layer}`, { method: 'DELETE' });
    assert.equal(removed.status, 202);
    const pushed = await docker(['manifest', 'push', '--insecure', `${archway.hostPort}/team/broken:1`], { allowFail: true });
    assert.notEqual(pushed.code, 0);
    assert.match(pushed.stderr, /blob unknown|BLOB_UNKNOWN/i, pushed.stderr);
    assert.deepEqual(await localTags('docker.io/team/broken'), [], 'no tag stored');
  });
});
