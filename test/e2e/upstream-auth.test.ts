// archway against a registry that demands Bearer tokens (distribution's
// `auth: token` with a real ES256 token issuer), behind a Docker Hub-like
// front that redirects blob downloads to another origin.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { sha256Digest as sha256 } from '../harness/digest.ts';
import { startArchway, type ArchwayHandle } from '../harness/archway.ts';
import { ACCEPT, http } from '../harness/http.ts';
import { buildImage, type BuiltImage } from '../harness/images.ts';
import { startRedirectFront, type RedirectFront } from '../harness/redirect-front.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';
import { startTokenIssuer, type TokenIssuer } from '../harness/token-issuer.ts';

const USER = 'puller';
const PASSWORD = 's3cret-Pa55word';

let work: string;
let issuer: TokenIssuer;
let registry: RegistryHandle;
let front: RedirectFront;
let built: BuiltImage;

before(async () => {
  work = await tempDir('archway-auth-test-');
  issuer = await startTokenIssuer({ users: { [USER]: PASSWORD, pusher: 'push' }, anonymousPull: false });
  registry = await startRegistry({ tokenAuth: issuer.authConfig });
  front = await startRedirectFront(registry);
  built = await buildImage({
    dir: join(work, 'img'),
    tag: '1',
    platforms: [
      { os: 'linux', architecture: 'amd64' },
      { os: 'linux', architecture: 'arm', variant: 'v7' },
    ],
    format: 'docker',
    layerSizes: [600 * 1024],
    seed: 'auth',
  });
  await pushLayout(built, { hostPort: registry.hostPort, name: 'private/app', creds: 'pusher:push' });
});

after(async () => {
  await front?.stop();
  await registry?.stop();
  await issuer?.stop();
  await removeDir(work);
});

describe('Bearer token upstream with CDN redirects', () => {
  let archway: ArchwayHandle;
  before(async () => {
    const passwordFile = join(work, 'password');
    await writeFile(passwordFile, `${PASSWORD}\n`);
    archway = await startArchway({ upstreams: { 'registry.example': { url: front.url, username: USER, passwordFile } } });
  });
  after(() => archway.stop());

  it('fetches a token with the credentials, pulls manifests and blobs, and follows blob redirects without Authorization', async () => {
    issuer.clearTokenRequests();
    front.clear();
    const index = await http(`${archway.url}/v2/private/app/manifests/1`, { headers: { accept: ACCEPT.all } });
    assert.equal(index.status, 200);
    assert.equal(index.headers['docker-content-digest'], built.topDigest);
    for (const m of built.manifests) {
      for (const layer of m.layers) {
        const b = await http(`${archway.url}/v2/private/app/blobs/${layer.digest}`);
        assert.equal(b.status, 200);
        assert.equal(sha256(b.body), layer.digest);
      }
    }
    const origin = front.blobOriginRequests();
    assert.equal(origin.length, built.manifests.length, 'every blob came from the redirect target');
    assert.ok(origin.every((r) => !r.hadAuthorization && r.status === 200), JSON.stringify(origin));
    const tokens = issuer.tokenRequests();
    assert.ok(tokens.length >= 1);
    assert.ok(tokens.every((t) => t.user === USER && t.scope === 'repository:private/app:pull'), JSON.stringify(tokens));
  });

  it('reuses the cached token instead of asking for one per request', async () => {
    issuer.clearTokenRequests();
    registry.clearRequests();
    const digest = built.manifests[1]!.digest;
    await http(`${archway.url}/v2/private/app/manifests/${digest}`, { headers: { accept: ACCEPT.all } });
    await http(`${archway.url}/v2/private/app/blobs/${built.manifests[1]!.configDigest}`);
    assert.equal(issuer.tokenRequests().length, 0);
    const unauthorized = (await registry.requests()).filter((q) => q.status === 401);
    assert.equal(unauthorized.length, 0, 'the token is sent pre-emptively: no 401 round trips');
  });

  it('never reveals the credentials in answers or logs', async () => {
    const logs = JSON.stringify(archway.logs());
    assert.ok(!logs.includes(PASSWORD));
    assert.ok(!logs.includes(Buffer.from(`${USER}:${PASSWORD}`).toString('base64')));
    const r = await http(`${archway.url}/v2/private/missing/manifests/1`, { headers: { accept: ACCEPT.all } });
    assert.ok(!r.body.toString().includes(PASSWORD));
  });
});

describe('wrong or missing credentials', () => {
  it('an upstream that refuses anonymous pulls answers UNAUTHORIZED', async () => {
    const archway = await startArchway({ upstreams: { 'registry.example': { url: registry.url } } });
    try {
      const r = await http(`${archway.url}/v2/private/app/manifests/1`, { headers: { accept: ACCEPT.all } });
      assert.equal(r.status, 401);
      assert.equal(r.json<{ errors: Array<{ code: string }> }>().errors[0]?.code, 'UNAUTHORIZED');
    } finally {
      await archway.stop();
    }
  });

  it('a wrong password answers UNAUTHORIZED, from the password in the environment', async () => {
    process.env.ARCHWAY_TEST_PASSWORD = 'wrong';
    const archway = await startArchway({
      upstreams: { 'registry.example': { url: registry.url, username: USER, passwordEnv: 'ARCHWAY_TEST_PASSWORD' } },
    });
    try {
      const r = await http(`${archway.url}/v2/private/app/manifests/1`, { headers: { accept: ACCEPT.all } });
      assert.equal(r.status, 401);
      assert.equal(r.json<{ errors: Array<{ code: string }> }>().errors[0]?.code, 'UNAUTHORIZED');
    } finally {
      await archway.stop();
      delete process.env.ARCHWAY_TEST_PASSWORD;
    }
  });
});

describe('Basic auth upstream (htpasswd)', () => {
  it('answers the Basic challenge with the credentials, and refuses a wrong password with UNAUTHORIZED', async () => {
    const basic = await startRegistry({ htpasswd: { [USER]: PASSWORD } });
    const good = await startArchway({ upstreams: { 'basic.example': { url: basic.url, username: USER, password: PASSWORD } } });
    const bad = await startArchway({ upstreams: { 'basic.example': { url: basic.url, username: USER, password: 'nope' } } });
    try {
      await pushLayout(built, { hostPort: basic.hostPort, name: 'private/app', creds: `${USER}:${PASSWORD}` });
      const r = await http(`${good.url}/v2/private/app/manifests/1`, { headers: { accept: ACCEPT.all } });
      assert.equal(r.status, 200);
      assert.equal(r.headers['docker-content-digest'], built.topDigest);
      const layer = built.manifests[0]!.layers[0]!;
      const b = await http(`${good.url}/v2/private/app/blobs/${layer.digest}`);
      assert.equal(sha256(b.body), layer.digest);
      const refused = await http(`${bad.url}/v2/private/app/manifests/1`, { headers: { accept: ACCEPT.all } });
      assert.equal(refused.status, 401);
      assert.equal(refused.json<{ errors: Array<{ code: string }> }>().errors[0]?.code, 'UNAUTHORIZED');
    } finally {
      await good.stop();
      await bad.stop();
      await basic.stop();
    }
  });
});

describe('token expiry', () => {
  it('fetches a new token once the cached one expires', async () => {
    const shortIssuer = await startTokenIssuer({ users: { [USER]: PASSWORD, pusher: 'push' }, expiresIn: 2 });
    const shortRegistry = await startRegistry({ tokenAuth: shortIssuer.authConfig });
    const archway = await startArchway({ upstreams: { 'registry.example': { url: shortRegistry.url, username: USER, password: PASSWORD } } });
    try {
      await pushLayout(built, { hostPort: shortRegistry.hostPort, name: 'private/app', creds: 'pusher:push' });
      shortIssuer.clearTokenRequests();
      const m = built.manifests[0]!;
      await http(`${archway.url}/v2/private/app/manifests/${m.digest}`, { headers: { accept: ACCEPT.all } });
      await http(`${archway.url}/v2/private/app/blobs/${m.configDigest}`);
      assert.equal(shortIssuer.tokenRequests().length, 1, 'one token for both requests');
      // archway refreshes early (half of a short life): past 1 s of the 2 s the token is renewed.
      await sleep(1100);
      const r = await http(`${archway.url}/v2/private/app/blobs/${m.layers[0]!.digest}`);
      assert.equal(sha256(r.body), m.layers[0]!.digest);
      assert.equal(shortIssuer.tokenRequests().length, 2, 'a fresh token after expires_in');
    } finally {
      await archway.stop();
      await shortRegistry.stop();
      await shortIssuer.stop();
    }
  });
});

describe('repository isolation', () => {
  it('content cached through one private repository is served to another only if the upstream confirms it there', async () => {
    const archway = await startArchway({ upstreams: { 'registry.example': { url: registry.url, username: USER, password: PASSWORD } } });
    try {
      const m = built.manifests[0]!;
      const layer = m.layers[0]!;
      const fromApp = await http(`${archway.url}/v2/private/app/blobs/${layer.digest}`);
      assert.equal(sha256(fromApp.body), layer.digest);
      await http(`${archway.url}/v2/private/app/manifests/${m.digest}`, { headers: { accept: ACCEPT.all } });

      // Knowing the digest is not enough: the upstream says private/secretless lacks it.
      registry.clearRequests();
      const blob = await http(`${archway.url}/v2/private/secretless/blobs/${layer.digest}`);
      assert.equal(blob.status, 404);
      assert.equal(blob.json<{ errors: Array<{ code: string }> }>().errors[0]?.code, 'BLOB_UNKNOWN');
      const manifest = await http(`${archway.url}/v2/private/secretless/manifests/${m.digest}`, { headers: { accept: ACCEPT.all } });
      assert.equal(manifest.status, 404);
      const asked = (await registry.requests()).filter((q) => q.path.startsWith('/v2/private/secretless/'));
      assert.ok(asked.length >= 2 && asked.every((q) => q.method === 'HEAD'), 'asked with HEADs, downloaded nothing');

      // A repository that has it is confirmed once with a HEAD, then served from the cache.
      await pushLayout(built, { hostPort: registry.hostPort, name: 'private/copy', creds: 'pusher:push' });
      registry.clearRequests();
      const confirmed = await http(`${archway.url}/v2/private/copy/blobs/${layer.digest}`);
      assert.equal(sha256(confirmed.body), layer.digest);
      await http(`${archway.url}/v2/private/copy/blobs/${layer.digest}`);
      const copyRequests = (await registry.requests()).filter((q) => q.path.startsWith('/v2/private/copy/blobs/') && q.status === 200);
      assert.deepEqual(copyRequests.map((q) => q.method), ['HEAD'], 'one confirmation, no download, then cached');
    } finally {
      await archway.stop();
    }
  });

  it('confirmations survive a restart: a private image still pulls through its own repository with the upstream down', async () => {
    const archway = await startArchway({ upstreams: { 'registry.example': { url: registry.url, username: USER, password: PASSWORD } } });
    try {
      const m = built.manifests[1]!;
      for (const d of [m.configDigest, ...m.layers.map((l) => l.digest)]) await http(`${archway.url}/v2/private/app/blobs/${d}`);
      await http(`${archway.url}/v2/private/app/manifests/${m.digest}`, { headers: { accept: ACCEPT.all } });
      await registry.stop();
      await archway.restart();
      const r = await http(`${archway.url}/v2/private/app/manifests/${m.digest}`, { headers: { accept: ACCEPT.all } });
      assert.equal(r.status, 200);
      const b = await http(`${archway.url}/v2/private/app/blobs/${m.layers[0]!.digest}`);
      assert.equal(sha256(b.body), m.layers[0]!.digest);
      const other = await http(`${archway.url}/v2/private/elsewhere/blobs/${m.layers[0]!.digest}`);
      assert.equal(other.status, 502, 'unconfirmable while the upstream is down: refused, not served');
    } finally {
      await archway.stop();
      await registry.restart();
    }
  });
});

describe('repositoryIsolation overrides', () => {
  it('false on a private upstream: what one repository cached is served to another without asking the upstream', async () => {
    const archway = await startArchway({ upstreams: { 'registry.example': { url: registry.url, username: USER, password: PASSWORD, repositoryIsolation: false } } });
    try {
      const layer = built.manifests[0]!.layers[0]!;
      assert.equal(sha256((await http(`${archway.url}/v2/private/app/blobs/${layer.digest}`)).body), layer.digest);
      // The registry logs a request after answering it: let that first GET reach the log before clearing.
      await registry.waitForRequests((reqs) => reqs.some((q) => q.method === 'GET' && q.path.endsWith(layer.digest)));
      registry.clearRequests();
      const shared = await http(`${archway.url}/v2/private/secretless/blobs/${layer.digest}`);
      assert.equal(shared.status, 200, 'isolation off: the digest is enough');
      assert.equal(sha256(shared.body), layer.digest);
      assert.deepEqual(await registry.requests(), [], 'served from the cache, unconfirmed');
    } finally {
      await archway.stop();
    }
  });

  it('true on a public upstream: another repository gets cached content only once the upstream confirms it there', async () => {
    const open = await startRegistry();
    const isolated = await startArchway({ upstreams: { 'public.example': { url: open.url, repositoryIsolation: true } } });
    const shared = await startArchway({ upstreams: { 'public.example': { url: open.url } } });
    try {
      await pushLayout(built, { hostPort: open.hostPort, name: 'team/app' });
      const layer = built.manifests[0]!.layers[0]!;
      for (const a of [isolated, shared]) assert.equal(sha256((await http(`${a.url}/v2/team/app/blobs/${layer.digest}`)).body), layer.digest);
      // By default a public upstream's content is shared by digest: nothing asked.
      // The registry logs a request after answering it: what the test counts is archway's, and only from here on.
      await open.waitForRequests((reqs) => reqs.filter((q) => q.method === 'GET' && q.path.endsWith(layer.digest)).length === 2);
      open.clearRequests();
      assert.equal((await http(`${shared.url}/v2/team/elsewhere/blobs/${layer.digest}`)).status, 200);
      assert.deepEqual(await open.requests(), [], 'public and not isolated: shared from the cache');
      // Isolated: team/elsewhere lacks it upstream, so it is unknown there.
      const refused = await http(`${isolated.url}/v2/team/elsewhere/blobs/${layer.digest}`);
      assert.equal(refused.status, 404);
      assert.equal(refused.json<{ errors: Array<{ code: string }> }>().errors[0]?.code, 'BLOB_UNKNOWN');
      const asked = (await open.requests()).filter((q) => q.path === `/v2/team/elsewhere/blobs/${layer.digest}`);
      assert.deepEqual(asked.map((q) => `${q.method} ${q.status}`), ['HEAD 404'], 'the upstream was asked, nothing downloaded');
      // Once team/elsewhere has it upstream: one HEAD confirms it, the bytes come from the cache.
      await pushLayout(built, { hostPort: open.hostPort, name: 'team/elsewhere' });
      open.clearRequests();
      const confirmed = await http(`${isolated.url}/v2/team/elsewhere/blobs/${layer.digest}`);
      assert.equal(sha256(confirmed.body), layer.digest);
      // skopeo's own requests of the push may reach the log late: only archway's count.
      const byArchway = (await open.requests()).filter((q) => q.userAgent === 'archway');
      assert.deepEqual(byArchway.map((q) => `${q.method} ${q.status}`), ['HEAD 200'], 'confirmed with one HEAD, not downloaded again');
    } finally {
      await Promise.all([isolated.stop(), shared.stop()]);
      await open.stop();
    }
  });
});

describe('isolation across upstreams', () => {
  it('a blob cached from a private upstream is not served through a public one that does not have it', async () => {
    const publicRegistry = await startRegistry();
    const archway = await startArchway({
      upstreams: {
        'public.example': { url: publicRegistry.url },
        'private.example': { url: registry.url, username: USER, password: PASSWORD },
      },
      defaultUpstream: 'public.example',
    });
    try {
      const layer = built.manifests[0]!.layers[0]!;
      const owner = await http(`${archway.url}/v2/private.example/private/app/blobs/${layer.digest}`);
      assert.equal(sha256(owner.body), layer.digest);
      for (const path of [`/v2/private/app/blobs/${layer.digest}`, `/v2/anything/blobs/${layer.digest}`, `/v2/public.example/x/blobs/${layer.digest}`]) {
        const r = await http(`${archway.url}${path}`);
        assert.equal(r.status, 404, path);
        const head = await http(`${archway.url}${path}`, { method: 'HEAD' });
        assert.equal(head.status, 404, `HEAD ${path}`);
      }
      // Once the public upstream really has it, it is served from the cache after one HEAD there.
      await pushLayout(built, { hostPort: publicRegistry.hostPort, name: 'mirror/app' });
      publicRegistry.clearRequests();
      const shared = await http(`${archway.url}/v2/mirror/app/blobs/${layer.digest}`);
      assert.equal(sha256(shared.body), layer.digest);
      const asked = (await publicRegistry.requests()).filter((q) => q.path.includes('/blobs/'));
      assert.deepEqual(asked.map((q) => q.method), ['HEAD']);
    } finally {
      await archway.stop();
      await publicRegistry.stop();
    }
  });
});
