// Many upstreams in one archway: three real distribution registries — a
// private one (Bearer token auth, credentials in archway, blobs redirected to
// a CDN-like origin), an anonymous one and a slow one (a delaying front) —
// each holding a different image under the SAME repository name team/app.
// containerd reaches each through ?ns=, skopeo through a path prefix, the
// docker daemon the default upstream through registry-mirrors. Nothing but
// configured upstreams is ever contacted, credentials never leave the private
// upstream's origin, and tags of the same name at two registries never mix.
import assert from 'node:assert/strict';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { startArchway, type ArchwayHandle } from '../harness/archway.ts';
import { ctrImageDigest, ctrPull, ctrRemove } from '../harness/ctr.ts';
import { sha256Digest as sha256 } from '../harness/digest.ts';
import { startDockerd, type DockerdHandle } from '../harness/dockerd.ts';
import { startFaultFront, type FaultFront } from '../harness/fault-front.ts';
import { ACCEPT, http, type HttpAnswer } from '../harness/http.ts';
import { MARKER_PATH, buildImage, type BuiltImage } from '../harness/images.ts';
import { startRedirectFront, type RedirectFront } from '../harness/redirect-front.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { copyToDir, inspectRaw, pushLayout, readDirBlob, readDirManifest } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';
import { startTokenIssuer, type TokenIssuer } from '../harness/token-issuer.ts';

const USER = 'archway-puller';
const PASSWORD = 'Upstream-Pa55word-never-shown';
const BASIC = Buffer.from(`${USER}:${PASSWORD}`).toString('base64');
const DELAY_MS = 150;
const amd64 = { os: 'linux', architecture: 'amd64' };
const arm64 = { os: 'linux', architecture: 'arm64', variant: 'v8' };

let work: string;
let issuer: TokenIssuer;
let privateRegistry: RegistryHandle;
let publicRegistry: RegistryHandle;
let slowRegistry: RegistryHandle;
/** Docker Hub-like front of the private registry: blobs are 307s to another origin. */
let privateFront: RedirectFront;
/** Pass-through front of the public registry, recording what reaches it. */
let publicFront: FaultFront;
/** Delaying front of the slow registry. */
let slowFront: FaultFront;
let archway: ArchwayHandle;
let dockerd: DockerdHandle | undefined;

/** team/app:1 at each registry: same name, different content (and formats). */
const images: Record<'private.test' | 'public.test' | 'slow.test', BuiltImage> = {} as never;
/** solo:1 at the public registry: a one-component name. */
let solo: BuiltImage;
/** team/extra:1 at the private registry, fetched only by the credentials test (so its blobs are redirected then). */
let extra: BuiltImage;
const HOSTS = ['private.test', 'public.test', 'slow.test'] as const;

before(async () => {
  work = await tempDir('archway-multi-');
  issuer = await startTokenIssuer({ users: { [USER]: PASSWORD, pusher: 'push' }, anonymousPull: false });
  [privateRegistry, publicRegistry, slowRegistry] = await Promise.all([
    startRegistry({ tokenAuth: issuer.authConfig }),
    startRegistry(),
    startRegistry(),
  ]);
  privateFront = await startRedirectFront(privateRegistry);
  publicFront = await startFaultFront(publicRegistry);
  slowFront = await startFaultFront(slowRegistry);

  images['private.test'] = await buildImage({ dir: join(work, 'private'), tag: '1', platforms: [amd64], format: 'docker', layerSizes: [192 * 1024], seed: 'multi-private' });
  images['public.test'] = await buildImage({ dir: join(work, 'public'), tag: '1', platforms: [amd64, arm64], format: 'oci', layerSizes: [160 * 1024], seed: 'multi-public' });
  images['slow.test'] = await buildImage({ dir: join(work, 'slow'), tag: '1', platforms: [amd64], format: 'oci', layerSizes: [128 * 1024], seed: 'multi-slow', index: false });
  solo = await buildImage({ dir: join(work, 'solo'), tag: '1', platforms: [amd64], format: 'oci', layerSizes: [16 * 1024], seed: 'multi-solo', index: false });
  extra = await buildImage({ dir: join(work, 'extra'), tag: '1', platforms: [amd64], format: 'docker', layerSizes: [32 * 1024, 48 * 1024], seed: 'multi-extra', index: false });
  await Promise.all([
    pushLayout(images['private.test'], { hostPort: privateRegistry.hostPort, name: 'team/app', creds: 'pusher:push' }),
    pushLayout(images['public.test'], { hostPort: publicRegistry.hostPort, name: 'team/app' }),
    pushLayout(images['slow.test'], { hostPort: slowRegistry.hostPort, name: 'team/app' }),
    pushLayout(solo, { hostPort: publicRegistry.hostPort, name: 'solo' }),
    pushLayout(extra, { hostPort: privateRegistry.hostPort, name: 'team/extra', creds: 'pusher:push' }),
  ]);
  slowFront.setMode({ kind: 'delay', ms: DELAY_MS });

  archway = await startArchway({
    upstreams: {
      'private.test': { url: privateFront.url, username: USER, password: PASSWORD },
      'public.test': { url: publicFront.url, aliases: ['pub-alias.test', 'mirror.public.test'] },
      'slow.test': { url: slowFront.url },
    },
    defaultUpstream: 'public.test',
  });
  dockerd = await startDockerd({ mirror: archway.url });
});

after(async () => {
  await dockerd?.stop();
  await archway?.stop();
  await Promise.all([privateFront?.stop(), publicFront?.stop(), slowFront?.stop()]);
  await Promise.all([privateRegistry?.stop(), publicRegistry?.stop(), slowRegistry?.stop()]);
  await issuer?.stop();
  await removeDir(work);
});

const errorCode = (r: HttpAnswer) => r.json<{ errors: Array<{ code: string }> }>().errors[0]?.code;
const requestLogs = () => archway.logs().filter((l) => l.msg === 'request');
const firstLayer = (image: BuiltImage) => image.manifests[0]!.layers[0]!.digest;

describe('containerd: routed by ?ns= to each upstream', () => {
  for (const host of HOSTS) {
    it(`ctr pull ${host}/team/app:1 gets that registry's image`, async () => {
      const d = dockerd as DockerdHandle;
      const opts = { containerdSocket: d.containerdSocket };
      const ref = `${host}/team/app:1`;
      const image = images[host];
      const started = Date.now();
      await ctrPull({ ...opts, mirror: archway.url, ref });
      const ms = Date.now() - started;
      try {
        assert.equal(await ctrImageDigest(opts, ref), image.topDigest, `the digest of ${host}'s team/app:1`);
        const served = requestLogs().filter((l) => String(l.url).includes(`ns=${host}`));
        assert.ok(served.some((l) => String(l.url).startsWith('/v2/team/app/manifests/') && l.status === 200), `containerd asked archway for the manifest with ns=${host}`);
        assert.ok(
          served.some((l) => String(l.url).startsWith(`/v2/team/app/blobs/${firstLayer(image)}`) && l.status === 200),
          `and for ${host}'s layer`,
        );
        if (host === 'slow.test') assert.ok(ms >= 2 * DELAY_MS, `went through the delaying front (${ms} ms)`);
      } finally {
        await ctrRemove(opts, ref);
      }
    });
  }

  it('the private image was fetched with the configured credentials, its blobs from the redirect origin', async () => {
    const tokens = issuer.tokenRequests();
    assert.ok(tokens.some((t) => t.user === USER && t.status === 200 && t.scope === 'repository:team/app:pull'), JSON.stringify(tokens));
    const origin = privateFront.blobOriginRequests();
    assert.ok(origin.some((r) => r.path === `/blobs/${firstLayer(images['private.test'])}` && r.status === 200), JSON.stringify(origin));
  });
});

describe('the same repository name at three registries never mixes', () => {
  it('?ns= answers each registry’s own tag, with OCI-Namespace echoed; again from the cache', async () => {
    for (const round of ['first', 'cached']) {
      for (const host of HOSTS) {
        const image = images[host];
        const r = await http(`${archway.url}/v2/team/app/manifests/1?ns=${host}`, { headers: { accept: ACCEPT.all } });
        assert.equal(r.status, 200, `${round} ${host}`);
        assert.equal(r.headers['oci-namespace'], host, `${round} ${host}: OCI-Namespace`);
        assert.equal(r.headers['docker-content-digest'], image.topDigest, `${round} ${host}: digest`);
        assert.ok(r.body.equals(image.topBytes), `${round} ${host}: bytes`);
        const head = await http(`${archway.url}/v2/team/app/manifests/1?ns=${host}`, { method: 'HEAD', headers: { accept: ACCEPT.all } });
        assert.equal(head.headers['docker-content-digest'], image.topDigest, `${round} ${host}: HEAD digest`);
        const blob = await http(`${archway.url}/v2/team/app/blobs/${firstLayer(image)}?ns=${host}`);
        assert.equal(blob.status, 200);
        assert.equal(sha256(blob.body), firstLayer(image));
      }
    }
    const tagHits = requestLogs().filter((l) => String(l.url).startsWith('/v2/team/app/manifests/1?ns=') && l.method === 'GET' && l.cache === 'hit');
    assert.ok(tagHits.length >= HOSTS.length, 'the second round came from the cache');
  });

  it('a path prefix reaches the same three tags, and tags/list is each registry’s own', async () => {
    for (const host of HOSTS) {
      const r = await http(`${archway.url}/v2/${host}/team/app/manifests/1`, { headers: { accept: ACCEPT.all } });
      assert.equal(r.status, 200, host);
      assert.equal(r.headers['docker-content-digest'], images[host].topDigest, host);
      assert.equal(r.headers['oci-namespace'], undefined, 'no ns, no echo');
    }
    const tags = await http(`${archway.url}/v2/slow.test/team/app/tags/list`);
    assert.equal(tags.status, 200);
    assert.deepEqual(tags.json<{ tags: string[] }>().tags, ['1']);
  });
});

describe('skopeo: routed by path prefix', () => {
  it('inspect --raw 127.0.0.1:PORT/<host>/team/app:1 answers each registry’s bytes', async () => {
    for (const host of HOSTS) {
      const raw = await inspectRaw(`${archway.hostPort}/${host}/team/app:1`);
      assert.ok(raw.equals(images[host].topBytes), `${host}: the upstream's exact manifest bytes`);
    }
  });

  it('copy by prefix fetches the private image intact (Docker manifest list, bytes unchanged)', async () => {
    const image = images['private.test'];
    const dir = join(work, 'copy-private');
    await copyToDir(`${archway.hostPort}/private.test/team/app:1`, dir, { all: true });
    assert.ok((await readDirManifest(dir)).equals(image.topBytes));
    for (const m of image.manifests) {
      assert.ok((await readDirManifest(dir, m.digest)).equals(m.bytes));
      for (const d of [m.configDigest, ...m.layers.map((l) => l.digest)]) assert.equal(sha256(await readDirBlob(dir, d)), d);
    }
  });

  it('copy by prefix through the slow upstream', async () => {
    const image = images['slow.test'];
    const dir = join(work, 'copy-slow');
    await copyToDir(`${archway.hostPort}/slow.test/team/app:1`, dir);
    assert.ok((await readDirManifest(dir)).equals(image.topBytes));
    assert.equal(sha256(await readDirBlob(dir, firstLayer(image))), firstLayer(image));
  });
});

describe('docker daemon through registry-mirrors: the default upstream', () => {
  it('docker pull team/app:1 gets public.test’s image (defaultUpstream)', async () => {
    const d = dockerd as DockerdHandle;
    await d.pull('team/app:1');
    const image = images['public.test'];
    assert.ok((await d.repoDigests('team/app:1')).includes(`team/app@${image.topDigest}`), 'the repo digest is public.test’s index');
    assert.equal(await d.fileFromImage('team/app:1', MARKER_PATH), image.fileContent(amd64));
    assert.ok(requestLogs().some((l) => l.url === '/v2/team/app/manifests/1' && l.status === 200), 'the daemon used the mirror, without ns or prefix');
    // The daemon is done: free its resources for the rest of the run.
    await d.stop();
    dockerd = undefined;
  });

  it('Docker Hub’s library/ rule is only for docker.io: a one-component name is asked as is', async () => {
    publicFront.clearRequests();
    for (const url of [`${archway.url}/v2/solo/manifests/1`, `${archway.url}/v2/solo/manifests/1?ns=public.test`, `${archway.url}/v2/public.test/solo/manifests/1`]) {
      const r = await http(url, { headers: { accept: ACCEPT.all } });
      assert.equal(r.status, 200, url);
      assert.equal(r.headers['docker-content-digest'], solo.topDigest, url);
    }
    const asked = publicFront.requests().map((q) => q.url);
    assert.ok(asked.some((u) => u.startsWith('/v2/solo/manifests/')), JSON.stringify(asked));
    assert.ok(!asked.some((u) => u.includes('library/')), JSON.stringify(asked));
  });
});

describe('aliases', () => {
  it('an alias of public.test reaches it by ?ns= and by path prefix', async () => {
    const image = images['public.test'];
    for (const alias of ['pub-alias.test', 'mirror.public.test']) {
      const byNs = await http(`${archway.url}/v2/team/app/manifests/1?ns=${alias}`, { headers: { accept: ACCEPT.all } });
      assert.equal(byNs.status, 200, alias);
      assert.equal(byNs.headers['docker-content-digest'], image.topDigest, `ns=${alias}`);
      assert.equal(byNs.headers['oci-namespace'], alias);
      const byPrefix = await http(`${archway.url}/v2/${alias}/team/app/manifests/1`, { headers: { accept: ACCEPT.all } });
      assert.equal(byPrefix.status, 200, `prefix ${alias}`);
      assert.equal(byPrefix.headers['docker-content-digest'], image.topDigest, `prefix ${alias}`);
      const blob = await http(`${archway.url}/v2/${alias}/team/app/blobs/${firstLayer(image)}`);
      assert.equal(sha256(blob.body), firstLayer(image));
    }
    const raw = await inspectRaw(`${archway.hostPort}/pub-alias.test/team/app:1`);
    assert.ok(raw.equals(image.topBytes), 'skopeo through the alias prefix');
  });
});

describe('request forgery: only configured upstreams are ever contacted', () => {
  let recorders: Server[] = [];
  const connections: Array<{ local: string; remote: string }> = [];
  let port = 0;

  before(async () => {
    const listen = (host: string, p: number) =>
      new Promise<Server>((resolve, reject) => {
        const server = createServer((socket: Socket) => {
          connections.push({ local: `${socket.localAddress}:${socket.localPort}`, remote: `${socket.remoteAddress}:${socket.remotePort}` });
          socket.destroy();
        });
        server.once('error', reject);
        server.listen(p, host, () => resolve(server));
      });
    const v4 = await listen('127.0.0.1', 0);
    port = (v4.address() as { port: number }).port;
    recorders = [v4];
    // localhost may resolve to ::1: listen there too when the machine has IPv6.
    await listen('::1', port).then(
      (v6) => recorders.push(v6),
      () => undefined,
    );
  });
  after(async () => {
    await Promise.all(recorders.map((s) => new Promise((resolve) => s.close(resolve))));
  });

  it('ns or prefix naming an IP, a port, localhost, a scheme or userinfo: NAME_UNKNOWN (or NAME_INVALID), and no connection', async () => {
    const digest = firstLayer(images['public.test']);
    const hostile = [
      `127.0.0.1:${port}`,
      `localhost:${port}`,
      `LOCALHOST:${port}`,
      `[::1]:${port}`,
      `http://127.0.0.1:${port}`,
      `https://127.0.0.1:${port}`,
      `//127.0.0.1:${port}`,
      `user:pw@127.0.0.1:${port}`,
      `public.test@127.0.0.1:${port}`,
      `127.0.0.1:${port}/v2/`,
      `127.0.0.1:${port}#public.test`,
      `127.0.0.1:${port}?x=public.test`,
      `unknown.test`,
    ];
    const answers: Array<{ url: string; status: number; code: string | undefined }> = [];
    const ask = async (url: string, method: 'GET' | 'HEAD' = 'GET') => {
      const r = await http(`${archway.url}${url}`, { method, headers: { accept: ACCEPT.all } });
      answers.push({ url, status: r.status, code: method === 'HEAD' ? undefined : errorCode(r) });
      return r;
    };
    for (const ns of hostile) {
      const q = `ns=${encodeURIComponent(ns)}`;
      for (const url of [
        `/v2/x/manifests/1?${q}`,
        `/v2/team/app/blobs/${digest}?${q}`,
        `/v2/team/app/tags/list?${q}`,
        `/v2/team/app/referrers/${images['public.test'].topDigest}?${q}`,
      ]) {
        const r = await ask(url);
        assert.equal(r.status, 404, `${url}: ${r.body}`);
        assert.equal(errorCode(r), 'NAME_UNKNOWN', url);
      }
      assert.equal((await ask(`/v2/x/manifests/1?${q}`, 'HEAD')).status, 404);
    }
    // A repeated ns is ambiguous (which registry?): refused outright.
    const doubled = await ask(`/v2/team/app/manifests/1?ns=127.0.0.1:${port}&ns=public.test`);
    assert.equal(doubled.status, 400);
    assert.equal(errorCode(doubled), 'NAME_INVALID');
    // Path prefixes: a host:port fails the name grammar (NAME_INVALID); a bare host is not configured.
    for (const url of [
      `/v2/127.0.0.1:${port}/x/manifests/1`,
      `/v2/localhost:${port}/x/manifests/1`,
      `/v2/127.0.0.1:${port}/x/blobs/${digest}`,
      `/v2/127.0.0.1/x/manifests/1`,
      `/v2/localhost/x/manifests/1`,
      `/v2/unknown.test/team/app/manifests/1`,
    ]) {
      const r = await ask(url);
      assert.ok(
        (r.status === 404 && errorCode(r) === 'NAME_UNKNOWN') || (r.status === 400 && errorCode(r) === 'NAME_INVALID'),
        `${url}: ${r.status} ${r.body}`,
      );
    }
    // The Host header plays no part in routing.
    const viaHost = await http(`${archway.url}/v2/x/manifests/1`, { headers: { host: `127.0.0.1:${port}`, accept: ACCEPT.all } });
    assert.equal(viaHost.status, 404, 'x is unknown at the default upstream, not looked up at the Host');
    assert.ok(answers.length > 60, 'all requests were made');
    // A direct connection to each recorder, made after every request above: the recorders see
    // connections, and one of archway's would have been accepted before ours (no waiting for nothing).
    const direct: string[] = [];
    for (const recorder of recorders) {
      const host = (recorder.address() as { address: string }).address;
      await new Promise<void>((resolve, reject) => {
        const socket = connect(port, host, () => {
          direct.push(`${socket.localAddress}:${socket.localPort}`);
          socket.end();
        });
        socket.once('close', () => resolve()).once('error', reject);
      });
    }
    for (const deadline = Date.now() + 5000; connections.length < direct.length && Date.now() < deadline; ) await sleep(10);
    assert.deepEqual(connections.map((c) => c.remote).sort(), direct.sort(), `only our own connections: ${JSON.stringify(connections)}`);
  });
});

describe('upstream credentials never leak', () => {
  it('the redirect origin and the other upstreams never see Authorization; answers and logs never hold the password', async () => {
    const m = extra.manifests[0]!;
    privateFront.clear();
    const answers: HttpAnswer[] = [];
    const ask = async (url: string) => {
      const r = await http(`${archway.url}${url}`, { headers: { accept: ACCEPT.all } });
      answers.push(r);
      return r;
    };
    // Content nobody fetched yet: its blobs are redirected to the origin now.
    const manifest = await ask('/v2/team/extra/manifests/1?ns=private.test');
    assert.equal(manifest.headers['docker-content-digest'], m.digest);
    for (const d of [m.configDigest, ...m.layers.map((l) => l.digest)]) {
      const blob = await ask(`/v2/private.test/team/extra/blobs/${d}`);
      assert.equal(sha256(blob.body), d);
    }
    assert.equal((await ask('/v2/private.test/team/extra/tags/list')).status, 200);
    assert.equal((await ask(`/v2/private.test/team/extra/referrers/${m.digest}`)).status, 200);
    assert.equal((await ask('/v2/private.test/team/missing/manifests/1')).status, 404);
    assert.equal((await ask(`/v2/private.test/team/extra/blobs/sha256:${'0'.repeat(64)}`)).status, 404);

    const origin = privateFront.blobOriginRequests();
    assert.equal(origin.length, 1 + m.layers.length, 'every blob was redirected to the origin');
    assert.ok(origin.every((r) => !r.hadAuthorization && r.status === 200), JSON.stringify(origin));
    assert.ok(privateFront.redirects().length >= 1);

    for (const [name, front] of [['public.test', publicFront], ['slow.test', slowFront]] as const) {
      const withAuth = front.requests().filter((q) => q.authorization !== undefined);
      assert.ok(front.requests().length > 0, `${name} was used`);
      assert.deepEqual(withAuth, [], `${name} received an Authorization header`);
    }

    const forbidden = [PASSWORD, BASIC, encodeURIComponent(PASSWORD)];
    for (const [i, r] of answers.entries()) {
      const seen = `${JSON.stringify(r.headers)}\n${r.body.toString('latin1')}`;
      for (const secret of forbidden) assert.ok(!seen.includes(secret), `answer ${i} reveals the credentials: ${seen.slice(0, 500)}`);
    }
    const text = JSON.stringify(archway.logs());
    for (const secret of forbidden) assert.ok(!text.includes(secret), `archway logged ${secret === PASSWORD ? 'the password' : 'an encoding of the credentials'}`);
  });
});

describe('cached private content stays private', () => {
  it('a private blob is not served through another repository of the private upstream', async () => {
    const layer = firstLayer(images['private.test']);
    const r = await http(`${archway.url}/v2/team/elsewhere/blobs/${layer}?ns=private.test`);
    assert.equal(r.status, 404);
    assert.equal(errorCode(r), 'BLOB_UNKNOWN');
  });

  it('a private manifest is not served through an anonymous upstream', async () => {
    const digest = images['private.test'].topDigest;
    const r = await http(`${archway.url}/v2/team/app/manifests/${digest}?ns=public.test`, { headers: { accept: ACCEPT.all } });
    assert.equal(r.status, 404);
    assert.equal(errorCode(r), 'MANIFEST_UNKNOWN');
  });

  it('a private blob is not served through an anonymous upstream that does not have it', async () => {
    // The blob is in archway's cache (pulled above through private.test). The
    // public registry does not have it: knowing the digest must not be enough
    // to read private content by naming another upstream.
    const layer = firstLayer(images['private.test']);
    publicFront.clearRequests();
    for (const url of [`/v2/team/app/blobs/${layer}?ns=public.test`, `/v2/public.test/team/app/blobs/${layer}`, `/v2/slow.test/any/thing/blobs/${layer}`]) {
      const r = await http(`${archway.url}${url}`);
      assert.equal(r.status, 404, `${url} answered ${r.status} with ${r.body.length} bytes (sha256 ${sha256(r.body)})`);
      assert.equal(errorCode(r), 'BLOB_UNKNOWN', url);
    }
  });
});
