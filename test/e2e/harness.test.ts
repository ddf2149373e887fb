// Self-test of the e2e harness, without the proxy: proves that the images we
// build, the registry we count requests on, the token issuer, the redirect
// front, dockerd and containerd behave as the proxy's e2e tests assume.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ctrImageDigest, ctrPull, ctrRemove } from '../harness/ctr.ts';
import { sha256Digest } from '../harness/digest.ts';
import { startDockerd } from '../harness/dockerd.ts';
import type { DockerdHandle } from '../harness/dockerd.ts';
import { ALL_PLATFORMS, buildImage } from '../harness/images.ts';
import type { BuiltImage } from '../harness/images.ts';
import { readLayoutTop } from '../harness/oci-layout.ts';
import { ensureCommands } from '../harness/packages.ts';
import { startRedirectFront } from '../harness/redirect-front.ts';
import type { RedirectFront } from '../harness/redirect-front.ts';
import { startRegistry } from '../harness/registry.ts';
import type { RegistryHandle, RegistryRequest } from '../harness/registry.ts';
import { copyToDir, copyToLayout, inspectRaw, pushLayout, readDirBlob, readDirManifest } from '../harness/skopeo.ts';
import { startTokenIssuer } from '../harness/token-issuer.ts';
import type { TokenIssuer } from '../harness/token-issuer.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

const KIB = 1024;

/** "GET /v2/x/blobs/sha256:.. 200" lines, sorted: order between near-simultaneous requests is not defined. */
function summary(reqs: RegistryRequest[]): string[] {
  return reqs.map((r) => `${r.method} ${r.path} ${r.status}`).sort();
}

/** Parses `Bearer realm="..",service="..",scope=".."`. */
function parseChallenge(header: string | null): Record<string, string> {
  assert.ok(header, 'expected a WWW-Authenticate header');
  assert.match(header, /^Bearer /);
  const params: Record<string, string> = {};
  for (const m of header.matchAll(/(\w+)="([^"]*)"/g)) {
    if (m[1] !== undefined && m[2] !== undefined) params[m[1]] = m[2];
  }
  return params;
}

async function fetchToken(challenge: Record<string, string>, creds?: string): Promise<Response> {
  const url = new URL(challenge.realm ?? '');
  url.searchParams.set('service', challenge.service ?? '');
  url.searchParams.set('scope', challenge.scope ?? '');
  const headers: Record<string, string> = creds ? { authorization: `Basic ${Buffer.from(creds).toString('base64')}` } : {};
  return fetch(url, { headers });
}

describe('e2e harness', () => {
  let work = '';
  let ociImage: BuiltImage;
  let dockerImage: BuiltImage;
  let singleImage: BuiltImage;

  before(async () => {
    work = await tempDir('archway-harness-test-');
    const layout = join(work, 'layout');
    ociImage = await buildImage({
      dir: layout,
      tag: 'oci',
      platforms: ALL_PLATFORMS,
      format: 'oci',
      layerSizes: [256 * KIB, 8 * KIB],
      seed: 'oci',
      attestation: true,
    });
    dockerImage = await buildImage({
      dir: layout,
      tag: 'docker',
      platforms: ALL_PLATFORMS,
      format: 'docker',
      layerSizes: [256 * KIB, 8 * KIB],
      seed: 'docker',
    });
    singleImage = await buildImage({
      dir: layout,
      tag: 'single',
      platforms: [{ os: 'linux', architecture: 'arm64', variant: 'v8' }],
      format: 'docker',
      layerSizes: [16 * KIB],
      seed: 'single',
      index: false,
    });
  });
  after(async () => {
    if (work) await removeDir(work);
  });

  describe('packages', () => {
    it('names the install command when it may not install', async () => {
      await ensureCommands([{ command: 'sh', debianPackage: 'dash' }]);
      process.env.ARCHWAY_TEST_NO_INSTALL = '1';
      try {
        await assert.rejects(
          ensureCommands([{ command: 'archway-no-such-tool', debianPackage: 'archway-no-such-pkg' }]),
          { message: "missing archway-no-such-tool: run 'apt-get install -y archway-no-such-pkg'" },
        );
      } finally {
        delete process.env.ARCHWAY_TEST_NO_INSTALL;
      }
    });
  });

  describe('images', () => {
    it('builds distinct, real gzip layers with matching diff_ids', async () => {
      assert.equal(ociImage.manifests.length, ALL_PLATFORMS.length);
      assert.equal(ociImage.attestations.length, ALL_PLATFORMS.length);
      const layerDigests = new Set(ociImage.manifests.flatMap((m) => m.layers.map((l) => l.digest)));
      assert.equal(layerDigests.size, ALL_PLATFORMS.length * 2, 'no layer is shared between platforms');
      const first = ociImage.manifests[0]?.layers[0];
      assert.ok(first);
      // Random content: gzip cannot shrink it below the requested size.
      assert.ok(first.size > 256 * KIB, `layer size ${first.size}`);
      const blob = ociImage.blobs.get(first.digest);
      assert.ok(blob);
      assert.equal(sha256Digest(await readFile(blob.path)), first.digest);
      const top = await readLayoutTop(ociImage.layoutDir, 'oci');
      assert.equal(top.digest, ociImage.topDigest);
      assert.deepEqual(top.bytes, ociImage.topBytes);
      assert.equal(
        ociImage.fileContent({ os: 'linux', architecture: 'arm', variant: 'v7' }),
        'seed=oci platform=linux/arm/v7\n',
      );
    });
  });

  describe('registry + skopeo', () => {
    let registry: RegistryHandle;
    before(async () => {
      registry = await startRegistry();
      await pushLayout(ociImage, { hostPort: registry.hostPort, name: 'test/oci' });
      await pushLayout(dockerImage, { hostPort: registry.hostPort, name: 'test/docker' });
      await pushLayout(singleImage, { hostPort: registry.hostPort, name: 'test/single' });
    });
    after(async () => {
      await registry?.stop();
    });

    it('stores manifests byte for byte with their media types', async () => {
      for (const [name, image] of [
        ['test/oci:oci', ociImage],
        ['test/docker:docker', dockerImage],
        ['test/single:single', singleImage],
      ] as const) {
        const raw = await inspectRaw(`${registry.hostPort}/${name}`);
        assert.equal(sha256Digest(raw), image.topDigest, name);
        assert.deepEqual(raw, image.topBytes, name);
        const res = await fetch(`${registry.url}/v2/${name.replace(':', '/manifests/')}`, {
          headers: { accept: image.topMediaType },
        });
        assert.equal(res.status, 200);
        assert.equal(res.headers.get('content-type'), image.topMediaType);
        assert.equal(res.headers.get('docker-content-digest'), image.topDigest);
      }
      // Every platform manifest (and the attestations) came along with --all.
      for (const m of [...dockerImage.manifests]) {
        const raw = await inspectRaw(`${registry.hostPort}/test/docker@${m.digest}`);
        assert.deepEqual(raw, m.bytes);
      }
      for (const a of ociImage.attestations) {
        const raw = await inspectRaw(`${registry.hostPort}/test/oci@${a.digest}`);
        assert.deepEqual(raw, a.bytes);
      }
    });

    it('stores blobs where blobPath() says', async () => {
      const layer = dockerImage.manifests[2]?.layers[0];
      assert.ok(layer);
      const stored = await readFile(registry.blobPath(layer.digest));
      assert.equal(sha256Digest(stored), layer.digest);
    });

    it('counts requests exactly, including errors and concurrent ones', async () => {
      const m = ociImage.manifests[1];
      const layer = m?.layers[0];
      assert.ok(m && layer);
      const blobPath = `/v2/test/oci/blobs/${layer.digest}`;
      for (let round = 0; round < 3; round++) {
        registry.clearRequests();
        const head = await fetch(`${registry.url}/v2/test/oci/manifests/oci`, {
          method: 'HEAD',
          headers: { accept: ociImage.topMediaType },
        });
        assert.equal(head.status, 200);
        for (let i = 0; i < 2; i++) {
          const res = await fetch(`${registry.url}${blobPath}`);
          assert.equal(sha256Digest(Buffer.from(await res.arrayBuffer())), layer.digest);
        }
        const missing = await fetch(`${registry.url}/v2/test/oci/blobs/sha256:${'0'.repeat(64)}`);
        await missing.arrayBuffer();
        assert.equal(missing.status, 404);
        const reqs = await registry.requests();
        assert.deepEqual(
          summary(reqs),
          [
            `GET ${blobPath} 200`,
            `GET ${blobPath} 200`,
            `GET /v2/test/oci/blobs/sha256:${'0'.repeat(64)} 404`,
            'HEAD /v2/test/oci/manifests/oci 200',
          ].sort(),
        );
        const blobGets = reqs.filter((r) => r.path === blobPath);
        assert.ok(blobGets.every((r) => r.bytes === layer.size), 'full bodies were logged');
      }

      registry.clearRequests();
      await Promise.all(
        Array.from({ length: 20 }, async () => {
          const res = await fetch(`${registry.url}${blobPath}`);
          await res.arrayBuffer();
        }),
      );
      assert.equal((await registry.requests()).filter((r) => r.path === blobPath).length, 20);
    });

    it('copies back byte for byte with copyToDir, platform selection included', async () => {
      const all = join(work, 'copy-all');
      await copyToDir(`${registry.hostPort}/test/docker:docker`, all, { all: true });
      assert.deepEqual(await readDirManifest(all), dockerImage.topBytes);
      const armv6 = dockerImage.manifests.find((m) => m.platform.variant === 'v6');
      assert.ok(armv6);
      assert.deepEqual(await readDirManifest(all, armv6.digest), armv6.bytes);

      const one = join(work, 'copy-one');
      await copyToDir(`${registry.hostPort}/test/docker:docker`, one, { overrideArch: 'arm', overrideVariant: 'v6' });
      assert.deepEqual(await readDirManifest(one), armv6.bytes);
      const layer = armv6.layers[0];
      assert.ok(layer);
      assert.equal(sha256Digest(await readDirBlob(one, layer.digest)), layer.digest);

      // OCI images survive an OCI layout destination unchanged.
      const layout = join(work, 'copy-layout');
      await copyToLayout(`${registry.hostPort}/test/oci:oci`, layout, { all: true });
      assert.equal((await readLayoutTop(layout, 'oci')).digest, ociImage.topDigest);
    });

    it('restarts on the same port and data, also after stop() (an outage)', async () => {
      const port = registry.port;
      await registry.restart();
      assert.equal(registry.port, port);
      assert.deepEqual(await inspectRaw(`${registry.hostPort}/test/docker:docker`), dockerImage.topBytes);
      await registry.stop();
      await assert.rejects(fetch(`${registry.url}/v2/`));
      await registry.restart();
      assert.deepEqual(await inspectRaw(`${registry.hostPort}/test/docker:docker`), dockerImage.topBytes);
    });
  });

  describe('token auth + redirect front', () => {
    let issuer: TokenIssuer;
    let registry: RegistryHandle;
    let front: RedirectFront;
    before(async () => {
      issuer = await startTokenIssuer({ users: { alice: 'wonderland' } });
      registry = await startRegistry({ tokenAuth: issuer.authConfig });
      await pushLayout(ociImage, { hostPort: registry.hostPort, name: 'private/oci', creds: 'alice:wonderland' });
      front = await startRedirectFront(registry);
    });
    after(async () => {
      await front?.stop();
      await registry?.stop();
      await issuer?.stop();
    });

    it('challenges anonymous clients and accepts issued tokens', async () => {
      const manifestUrl = `${registry.url}/v2/private/oci/manifests/oci`;
      const anonymous = await fetch(manifestUrl);
      await anonymous.arrayBuffer();
      assert.equal(anonymous.status, 401);
      const challenge = parseChallenge(anonymous.headers.get('www-authenticate'));
      assert.equal(challenge.realm, `${issuer.url}/token`);
      assert.equal(challenge.service, issuer.authConfig.service);
      assert.equal(challenge.scope, 'repository:private/oci:pull');

      issuer.clearTokenRequests();
      // Anonymous tokens grant nothing here (anonymousPull is off).
      const anonToken = (await (await fetchToken(challenge)).json()) as { token: string };
      const denied = await fetch(manifestUrl, { headers: { authorization: `Bearer ${anonToken.token}` } });
      await denied.arrayBuffer();
      assert.equal(denied.status, 401);

      const bad = await fetchToken(challenge, 'alice:wrong');
      await bad.arrayBuffer();
      assert.equal(bad.status, 401);

      const good = (await (await fetchToken(challenge, 'alice:wonderland')).json()) as Record<string, unknown>;
      assert.equal(good.expires_in, 300);
      assert.equal(good.token, good.access_token);
      const ok = await fetch(manifestUrl, {
        headers: { authorization: `Bearer ${String(good.token)}`, accept: ociImage.topMediaType },
      });
      assert.equal(ok.status, 200);
      assert.deepEqual(Buffer.from(await ok.arrayBuffer()), ociImage.topBytes);

      assert.deepEqual(
        issuer.tokenRequests().map((r) => [r.user, r.hadAuthorization, r.status, r.scope]),
        [
          [null, false, 200, 'repository:private/oci:pull'],
          [null, true, 401, 'repository:private/oci:pull'],
          ['alice', true, 200, 'repository:private/oci:pull'],
        ],
      );
      assert.deepEqual(await inspectRaw(`${registry.hostPort}/private/oci:oci`, { creds: 'alice:wonderland' }), ociImage.topBytes);
    });

    it('redirects authorized blob GETs to an origin that rejects Authorization', async () => {
      const layer = ociImage.manifests[0]?.layers[0];
      assert.ok(layer);
      const blobUrl = `${front.url}/v2/private/oci/blobs/${layer.digest}`;

      // Unauthenticated: the registry's 401 passes through, no redirect.
      const anonymous = await fetch(blobUrl, { redirect: 'manual' });
      await anonymous.arrayBuffer();
      assert.equal(anonymous.status, 401);
      const challenge = parseChallenge(anonymous.headers.get('www-authenticate'));
      const { token } = (await (await fetchToken(challenge, 'alice:wonderland')).json()) as { token: string };
      const auth = { authorization: `Bearer ${token}` };

      // Manifests pass through unchanged.
      const manifest = await fetch(`${front.url}/v2/private/oci/manifests/oci`, {
        headers: { ...auth, accept: ociImage.topMediaType },
      });
      assert.deepEqual(Buffer.from(await manifest.arrayBuffer()), ociImage.topBytes);

      const redirected = await fetch(blobUrl, { headers: auth, redirect: 'manual' });
      await redirected.arrayBuffer();
      assert.equal(redirected.status, 307);
      const location = redirected.headers.get('location');
      assert.equal(location, `${front.originUrl}/blobs/${layer.digest}?sig=x`);

      const leaked = await fetch(location, { headers: auth });
      assert.equal(leaked.status, 403);
      assert.equal(await leaked.text(), 'authorization header sent to blob origin');
      const clean = await fetch(location);
      assert.equal(clean.status, 200);
      assert.equal(sha256Digest(Buffer.from(await clean.arrayBuffer())), layer.digest);
      const ranged = await fetch(location, { headers: { range: 'bytes=10-19' } });
      assert.equal(ranged.status, 206);
      assert.equal((await ranged.arrayBuffer()).byteLength, 10);

      assert.deepEqual(
        front.blobOriginRequests().map((r) => [r.path, r.hadAuthorization, r.status]),
        [
          [`/blobs/${layer.digest}`, true, 403],
          [`/blobs/${layer.digest}`, false, 200],
          [`/blobs/${layer.digest}`, false, 206],
        ],
      );
    });
  });

  describe('dockerd and containerd through a mirror', () => {
    let registry: RegistryHandle;
    let dockerd: DockerdHandle;
    before(async () => {
      registry = await startRegistry();
      await pushLayout(dockerImage, { hostPort: registry.hostPort, name: 'library/harness', tag: '1' });
      await pushLayout(ociImage, { hostPort: registry.hostPort, name: 'library/harness', tag: 'oci' });
      // A plain registry is a valid mirror: docker.io/library/harness:1 is
      // fetched as /v2/library/harness/manifests/1.
      dockerd = await startDockerd({ mirror: registry.url });
    });
    after(async () => {
      await dockerd?.stop();
      await registry?.stop();
    });

    it('docker pulls and extracts a Docker-format list', async () => {
      registry.clearRequests();
      await dockerd.pull('harness:1');
      const amd64 = dockerImage.manifests[0];
      assert.ok(amd64);
      assert.equal(await dockerd.fileFromImage('harness:1', '/etc/archway-test'), dockerImage.fileContent(amd64.platform));
      assert.deepEqual(await dockerd.repoDigests('harness:1'), [`harness@${dockerImage.topDigest}`]);
      assert.equal(await dockerd.imageId('harness:1'), amd64.configDigest);
      const reqs = await registry.requests();
      assert.ok(reqs.some((r) => r.method === 'GET' && r.path === `/v2/library/harness/manifests/${amd64.digest}`));
      await dockerd.rmi('harness:1');
    });

    it('docker pulls an OCI index with attestations, honouring --platform', async () => {
      await dockerd.pull('harness:oci', { platform: 'linux/s390x' });
      const s390x = ociImage.manifests.find((m) => m.platform.architecture === 's390x');
      assert.ok(s390x);
      assert.equal(await dockerd.fileFromImage('harness:oci', '/etc/archway-test'), ociImage.fileContent(s390x.platform));
      await dockerd.rmi('harness:oci');
    });

    it('ctr pulls one platform via hosts.toml', async () => {
      const ctrOpts = { containerdSocket: dockerd.containerdSocket };
      const arm64 = dockerImage.manifests.find((m) => m.platform.architecture === 'arm64');
      const amd64 = dockerImage.manifests[0];
      assert.ok(arm64 && amd64);
      registry.clearRequests();
      await ctrPull({ ...ctrOpts, mirror: registry.url, ref: 'docker.io/library/harness:1', platform: 'linux/arm64' });
      assert.equal(await ctrImageDigest(ctrOpts, 'docker.io/library/harness:1'), dockerImage.topDigest);
      const reqs = await registry.requests();
      const gets = reqs.filter((r) => r.method === 'GET').map((r) => r.path);
      // Fresh content store (isolated from dockerd's manifest cache): index,
      // arm64 manifest, its config and layers, nothing of other platforms.
      assert.deepEqual(
        gets.sort(),
        [
          `/v2/library/harness/manifests/${dockerImage.topDigest}`,
          `/v2/library/harness/manifests/${arm64.digest}`,
          `/v2/library/harness/blobs/${arm64.configDigest}`,
          ...arm64.layers.map((l) => `/v2/library/harness/blobs/${l.digest}`),
        ].sort(),
      );
      assert.ok(reqs.every((r) => r.uri.includes('ns=docker.io')), 'containerd tags mirror requests with ?ns=');
      await ctrRemove(ctrOpts, 'docker.io/library/harness:1');
    });
  });
});
