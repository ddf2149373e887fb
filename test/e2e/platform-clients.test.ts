// Platform awareness with real clients: a docker daemon on this amd64
// machine pulls foreign platforms through a listener whose rules force them
// (resolve), and amd64 through the default listener; containerd's ctr pulls
// through a filter listener (HEAD the tag, then GET by the narrowed digest);
// skopeo inspects the narrowed index; the narrowed digest survives a restart.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startArchway, type ArchwayHandle } from '../harness/archway.ts';
import { ctrImageDigest, ctrPull, ctrRemove } from '../harness/ctr.ts';
import { sha256Digest as sha256 } from '../harness/digest.ts';
import { startDockerd, type DockerdHandle } from '../harness/dockerd.ts';
import { ACCEPT, http } from '../harness/http.ts';
import { ALL_PLATFORMS, MARKER_PATH, buildImage, type BuiltImage } from '../harness/images.ts';
import { attestationFor, canonicalPlatform, manifestFor, parsePlatformString } from '../harness/platforms.ts';
import { freePort } from '../harness/ports.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { inspectRaw, pushLayout } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

let work: string;
let registry: RegistryHandle;
let archway: ArchwayHandle;
let dockerd: DockerdHandle | undefined;
let image: BuiltImage;
/** Resolve listener: arm64 unless a repository rule before it says otherwise. */
let resolvePort: number;
/** Filter listener: arm64. */
let filterPort: number;

before(async () => {
  work = await tempDir('archway-platform-clients-');
  registry = await startRegistry();
  image = await buildImage({
    dir: join(work, 'multi'),
    tag: '1',
    platforms: ALL_PLATFORMS,
    format: 'oci',
    attestation: true,
    layerSizes: [96 * 1024],
    seed: 'platform-clients',
  });
  // One index under several names: repository rules pick the platform per name.
  for (const name of ['library/multi', 'library/pi-img', 'library/mainframe', 'library/power']) {
    await pushLayout(image, { hostPort: registry.hostPort, name });
  }
  resolvePort = await freePort();
  filterPort = await freePort();
  archway = await startArchway({
    upstreams: { 'docker.io': { url: registry.url } },
    ports: [resolvePort, filterPort],
    platform: {
      default: 'linux/amd64',
      rules: [
        // Before the listener's catch-all rule: first match wins.
        { match: { port: resolvePort, repository: 'library/pi-*' }, platform: 'linux/arm/v6', mode: 'resolve' },
        { match: { port: resolvePort, repository: 'library/mainframe' }, platform: 'linux/s390x', mode: 'resolve' },
        { match: { port: resolvePort, repository: '**/power' }, platform: 'linux/ppc64le', mode: 'resolve' },
        { match: { port: resolvePort }, platform: 'linux/arm64', mode: 'resolve' },
        { match: { port: filterPort }, platform: 'linux/arm64', mode: 'filter' },
      ],
    },
  });
});

after(async () => {
  await dockerd?.stop();
  await archway?.stop();
  await registry?.stop();
  await removeDir(work);
});

const mirror = (port: number) => `http://127.0.0.1:${port}`;

/** `docker image inspect` as os/arch[/variant]. */
async function inspectedPlatform(d: DockerdHandle, ref: string): Promise<string> {
  const { stdout } = await d.docker(['image', 'inspect', '-f', '{{.Os}}/{{.Architecture}}{{if .Variant}}/{{.Variant}}{{end}}', ref]);
  return stdout.trim();
}

describe('docker daemon whose mirror is a resolve listener', () => {
  before(async () => {
    dockerd = await startDockerd({ mirror: mirror(resolvePort) });
  });
  after(async () => {
    await dockerd?.stop();
    dockerd = undefined;
  });

  const cases = [
    { ref: 'multi:1', name: 'library/multi', platform: 'linux/arm64/v8', why: 'the listener’s rule' },
    { ref: 'pi-img:1', name: 'library/pi-img', platform: 'linux/arm/v6', why: 'repository library/pi-*' },
    { ref: 'mainframe:1', name: 'library/mainframe', platform: 'linux/s390x', why: 'repository library/mainframe' },
    { ref: 'power:1', name: 'library/power', platform: 'linux/ppc64le', why: 'repository **/power' },
  ];
  for (const { ref, name, platform, why } of cases) {
    it(`docker pull ${ref} gets ${platform} (${why}) with the image’s real digest`, async () => {
      const d = dockerd as DockerdHandle;
      await d.pull(ref);
      const want = manifestFor(image, platform);
      assert.equal(canonicalPlatform(await inspectedPlatform(d, ref)), canonicalPlatform(platform), 'docker image inspect');
      assert.equal(await d.fileFromImage(ref, MARKER_PATH), image.fileContent(parsePlatformString(platform)), 'the platform’s layer content');
      const repo = ref.split(':')[0];
      assert.ok((await d.repoDigests(ref)).includes(`${repo}@${want.digest}`), `repo digest is the ${platform} manifest’s own`);
      const served = archway.logs().filter((l) => l.msg === 'request' && l.url === `/v2/${name}/manifests/1` && l.status === 200);
      assert.ok(served.length > 0, 'the daemon asked the mirror for the tag');
      assert.ok(
        served.every((l) => typeof l.platform === 'string' && canonicalPlatform(String(l.platform).replace(/^resolve:/, '')) === canonicalPlatform(platform)),
        `every tag answer was resolved for ${platform}: ${JSON.stringify(served.map((l) => l.platform))}`,
      );
    });
  }
});

describe('docker daemon whose mirror is the default listener', () => {
  before(async () => {
    dockerd = await startDockerd({ mirror: archway.url });
  });
  // Stopped by the file's after(): the containerd tests below use its containerd.

  it('docker pull multi:1 gets linux/amd64 from the index, which passes through untouched', async () => {
    const d = dockerd as DockerdHandle;
    await d.pull('multi:1');
    assert.equal(await inspectedPlatform(d, 'multi:1'), 'linux/amd64');
    assert.equal(await d.fileFromImage('multi:1', MARKER_PATH), image.fileContent({ os: 'linux', architecture: 'amd64' }));
    assert.ok((await d.repoDigests('multi:1')).includes(`multi@${image.topDigest}`), 'repo digest is the upstream index digest');
  });

  it('docker pull --platform linux/s390x still works through it (passthrough)', async () => {
    const d = dockerd as DockerdHandle;
    await d.pull('mainframe:1', { platform: 'linux/s390x' });
    assert.equal(await inspectedPlatform(d, 'mainframe:1'), 'linux/s390x');
    assert.equal(await d.fileFromImage('mainframe:1', MARKER_PATH), image.fileContent({ os: 'linux', architecture: 's390x' }));
  });

  describe('containerd (ctr) through a filter listener', () => {
    const ref = 'docker.io/library/multi:1';
    let filtered: { digest: string; bytes: Buffer };

    it('ctr pull --platform linux/arm64 succeeds; its image is the narrowed index (HEAD the tag, then GET by digest)', async () => {
      const opts = { containerdSocket: (dockerd as DockerdHandle).containerdSocket };
      const logStart = archway.logs().length;
      await ctrPull({ ...opts, mirror: mirror(filterPort), ref, platform: 'linux/arm64' });
      const served = archway.logs().slice(logStart).filter((l) => l.msg === 'request').map((l) => `${String(l.method)} ${String(l.url)} ${String(l.status)}`);

      const r = await http(`${mirror(filterPort)}/v2/library/multi/manifests/1`, { headers: { accept: ACCEPT.all } });
      assert.equal(r.status, 200);
      filtered = { digest: r.headers['docker-content-digest'] ?? '', bytes: r.body };
      assert.equal(filtered.digest, sha256(r.body));
      assert.notEqual(filtered.digest, image.topDigest, 'the narrowed index has its own digest');

      assert.equal(await ctrImageDigest(opts, ref), filtered.digest, 'containerd recorded the narrowed index, not the upstream’s');
      const arm64 = manifestFor(image, 'linux/arm64/v8');
      assert.ok(served.some((s) => s.startsWith('HEAD /v2/library/multi/manifests/1') && s.endsWith(' 200')), `containerd resolved the tag with HEAD:\n${served.join('\n')}`);
      assert.ok(served.some((s) => s.startsWith(`GET /v2/library/multi/manifests/${filtered.digest}`) && s.endsWith(' 200')), `then GET by the narrowed digest:\n${served.join('\n')}`);
      assert.ok(served.some((s) => s.startsWith(`GET /v2/library/multi/manifests/${arm64.digest}`)), 'then the arm64 manifest');
      assert.ok(served.some((s) => s.startsWith(`GET /v2/library/multi/blobs/${arm64.layers[0]?.digest}`)), 'and its layer');
      const other = image.manifests.filter((m) => m.digest !== arm64.digest);
      assert.ok(!served.some((s) => other.some((m) => s.includes(m.digest))), 'no other platform was fetched');
      await ctrRemove(opts, ref);
    });

    it('skopeo inspect --raw shows the narrowed index: the arm64 entry and its attestation', async () => {
      assert.ok(filtered, 'the ctr test ran');
      const raw = await inspectRaw(`127.0.0.1:${filterPort}/library/multi:1`);
      assert.ok(raw.equals(filtered.bytes), 'the bytes the HTTP client got');
      const doc = JSON.parse(raw.toString('utf8')) as { mediaType: string; manifests: Array<{ digest: string; platform?: { os: string; architecture: string; variant?: string } }> };
      const arm64 = manifestFor(image, 'linux/arm64/v8');
      assert.equal(doc.mediaType, image.topMediaType);
      const images = doc.manifests.filter((m) => m.platform?.os !== 'unknown');
      assert.equal(images.length, 1, 'one image entry');
      assert.equal(images[0]?.digest, arm64.digest);
      assert.equal(canonicalPlatform(images[0]?.platform ?? ''), 'linux/arm64');
      assert.deepEqual(
        doc.manifests.map((m) => m.digest),
        [arm64.digest, attestationFor(image, arm64.digest)?.digest],
        'and the attestation that names it',
      );
      // The default listener still answers the upstream index.
      assert.ok((await inspectRaw(`${archway.hostPort}/library/multi:1`)).equals(image.topBytes));
    });

    it('after a restart of archway, GET and HEAD by the narrowed digest answer the same bytes, and ctr pulls again', async () => {
      assert.ok(filtered, 'the ctr test ran');
      await archway.restart();
      const url = `${mirror(filterPort)}/v2/library/multi/manifests/${filtered.digest}`;
      const get = await http(url, { headers: { accept: ACCEPT.all } });
      assert.equal(get.status, 200);
      assert.ok(get.body.equals(filtered.bytes), 'identical bytes');
      assert.equal(get.headers['docker-content-digest'], filtered.digest);
      const head = await http(url, { method: 'HEAD', headers: { accept: ACCEPT.all } });
      assert.equal(head.status, 200);
      assert.equal(head.headers['docker-content-digest'], filtered.digest);
      assert.equal(Number(head.headers['content-length']), filtered.bytes.length);

      const opts = { containerdSocket: (dockerd as DockerdHandle).containerdSocket };
      await ctrPull({ ...opts, mirror: mirror(filterPort), ref, platform: 'linux/arm64' });
      assert.equal(await ctrImageDigest(opts, ref), filtered.digest);
      await ctrRemove(opts, ref);
    });
  });
});
