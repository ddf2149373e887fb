// Who may pull through archway, and how much: htpasswd (bcrypt) users and
// static bearer tokens, each limited to repository patterns; 401 with a Basic
// challenge that skopeo and containerd answer, 403 DENIED outside a grant;
// health endpoints always open, /metrics optionally protected; per-client
// limits on concurrent requests and requests per second (429 + Retry-After).
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import bcrypt from 'bcryptjs';
import { Agent, request } from 'undici';
import { startArchway, type ArchwayHandle } from '../harness/archway.ts';
import { ctrImageDigest, ctrPull, ctrRemove } from '../harness/ctr.ts';
import { sha256Digest as sha256 } from '../harness/digest.ts';
import { startDockerd, type DockerdHandle } from '../harness/dockerd.ts';
import { startFaultFront, type FaultFront } from '../harness/fault-front.ts';
import { ACCEPT, http, type HttpAnswer } from '../harness/http.ts';
import { buildImage, type BuiltImage } from '../harness/images.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { copyToDir, inspectRaw, pushLayout, readDirBlob, readDirManifest } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

const UPSTREAM = 'registry.test';
const USERS = { alice: 'alice-Pa55', bob: 'bob-Pa55' };
/** bob may pull team/app only; alice (no entry) everything. */
const GRANTS = { bob: ['team/app'] };
/** The token may pull team/other only, written upstream-qualified. */
const TOKEN = 'ci-token-0123456789abcdef';
const OTHER_TOKEN = 'ops-token-fedcba9876543210';
const amd64 = { os: 'linux', architecture: 'amd64' };

let work: string;
let registry: RegistryHandle;
let htpasswd: string;
let app: BuiltImage;
let other: BuiltImage;
/** Auth on, /metrics open. */
let archway: ArchwayHandle;

const basic = (user: string, password: string) => `Basic ${Buffer.from(`${user}:${password}`).toString('base64')}`;
const errorCode = (r: HttpAnswer) => r.json<{ errors: Array<{ code: string }> }>().errors[0]?.code;
const auth = () => ({
  htpasswd,
  users: GRANTS,
  tokens: [
    { name: 'ci', token: TOKEN, repositories: [`${UPSTREAM}/team/other`] },
    { name: 'ops', tokenEnv: 'ARCHWAY_TEST_OPS_TOKEN', repositories: ['**'] },
  ],
});

before(async () => {
  work = await tempDir('archway-client-access-');
  registry = await startRegistry();
  app = await buildImage({ dir: join(work, 'app'), tag: '1', platforms: [amd64], format: 'oci', layerSizes: [96 * 1024], seed: 'access-app' });
  other = await buildImage({ dir: join(work, 'other'), tag: '1', platforms: [amd64], format: 'docker', layerSizes: [96 * 1024], seed: 'access-other' });
  await pushLayout(app, { hostPort: registry.hostPort, name: 'team/app' });
  await pushLayout(other, { hostPort: registry.hostPort, name: 'team/other' });
  htpasswd = join(work, 'htpasswd');
  // As `htpasswd -B` writes it; cost 4 keeps the test fast.
  await writeFile(htpasswd, `${Object.entries(USERS).map(([u, p]) => `${u}:${bcrypt.hashSync(p, 4)}`).join('\n')}\n`);
  process.env.ARCHWAY_TEST_OPS_TOKEN = OTHER_TOKEN;
  archway = await startArchway({ upstreams: { [UPSTREAM]: { url: registry.url } }, auth: auth() });
});

after(async () => {
  await archway?.stop();
  await registry?.stop();
  delete process.env.ARCHWAY_TEST_OPS_TOKEN;
  await removeDir(work);
});

describe('authentication', () => {
  it('without credentials, or with wrong ones: 401 UNAUTHORIZED with a Basic challenge, and the upstream is not asked', async () => {
    registry.clearRequests();
    const manifest = `/v2/team/app/manifests/1`;
    const blob = `/v2/team/app/blobs/${app.manifests[0]!.layers[0]!.digest}`;
    const cases: Array<[string, string, Record<string, string>]> = [
      ['no credentials', '/v2/', {}],
      ['no credentials', manifest, {}],
      ['no credentials', blob, {}],
      ['no credentials', '/v2/team/app/tags/list', {}],
      ['no credentials, ns', `${manifest}?ns=${UPSTREAM}`, {}],
      ['no credentials, prefix', `/v2/${UPSTREAM}/team/app/manifests/1`, {}],
      ['wrong password', '/v2/', { authorization: basic('alice', 'wrong') }],
      ['wrong password', manifest, { authorization: basic('alice', 'wrong') }],
      ['another user’s password', manifest, { authorization: basic('alice', USERS.bob) }],
      ['unknown user', manifest, { authorization: basic('mallory', USERS.alice) }],
      ['no password', manifest, { authorization: `Basic ${Buffer.from('alice').toString('base64')}` }],
      ['wrong token', manifest, { authorization: `Bearer ${TOKEN}x` }],
      ['token as Basic password', manifest, { authorization: basic('ci', TOKEN) }],
      ['empty bearer', manifest, { authorization: 'Bearer ' }],
    ];
    for (const [why, path, headers] of cases) {
      const r = await http(`${archway.url}${path}`, { headers: { accept: ACCEPT.all, ...headers } });
      assert.equal(r.status, 401, `${why}: ${path}`);
      assert.equal(r.headers['www-authenticate'], 'Basic realm="archway"', `${why}: ${path}`);
      assert.equal(errorCode(r), 'UNAUTHORIZED', `${why}: ${path}`);
    }
    const head = await http(`${archway.url}${manifest}`, { method: 'HEAD' });
    assert.equal(head.status, 401);
    assert.equal(head.headers['www-authenticate'], 'Basic realm="archway"');
    assert.deepEqual(await registry.requests(), [], 'nothing reached the upstream');
  });

  it('correct Basic credentials and tokens pull', async () => {
    for (const authorization of [basic('alice', USERS.alice), basic('bob', USERS.bob), `Bearer ${OTHER_TOKEN}`]) {
      const base = await http(`${archway.url}/v2/`, { headers: { authorization } });
      assert.equal(base.status, 200, authorization);
      const r = await http(`${archway.url}/v2/team/app/manifests/1`, { headers: { authorization, accept: ACCEPT.all } });
      assert.equal(r.status, 200, authorization);
      assert.equal(r.headers['docker-content-digest'], app.topDigest);
    }
    const byToken = await http(`${archway.url}/v2/team/other/manifests/1`, { headers: { authorization: `Bearer ${TOKEN}`, accept: ACCEPT.all } });
    assert.equal(byToken.status, 200);
    assert.equal(byToken.headers['docker-content-digest'], other.topDigest);
  });

  it('skopeo --creds answers the challenge; without creds or with a wrong password it fails', async () => {
    const raw = await inspectRaw(`${archway.hostPort}/team/app:1`, { creds: `alice:${USERS.alice}` });
    assert.ok(raw.equals(app.topBytes));
    assert.ok((await inspectRaw(`${archway.hostPort}/${UPSTREAM}/team/app:1`, { creds: `bob:${USERS.bob}` })).equals(app.topBytes), 'bob, by prefix');
    const dir = join(work, 'copy-other');
    await copyToDir(`${archway.hostPort}/team/other:1`, dir, { creds: `alice:${USERS.alice}`, all: true });
    assert.ok((await readDirManifest(dir)).equals(other.topBytes));
    const layer = other.manifests[0]!.layers[0]!.digest;
    assert.equal(sha256(await readDirBlob(dir, layer)), layer);

    await assert.rejects(inspectRaw(`${archway.hostPort}/team/app:1`), /unauthorized|authentication required|401/i, 'no creds');
    await assert.rejects(inspectRaw(`${archway.hostPort}/team/app:1`, { creds: 'alice:wrong' }), /unauthorized|authentication required|401/i, 'wrong password');
  });
});

describe('authorization: repository patterns', () => {
  it('outside the grant: 403 DENIED, whatever way the repository is named, and the upstream is not asked', async () => {
    registry.clearRequests();
    const layer = other.manifests[0]!.layers[0]!.digest;
    const bob = { authorization: basic('bob', USERS.bob) };
    const ci = { authorization: `Bearer ${TOKEN}` };
    const cases: Array<[string, Record<string, string>, string]> = [
      ['bob', bob, '/v2/team/other/manifests/1'],
      ['bob', bob, `/v2/team/other/manifests/${other.topDigest}`],
      ['bob', bob, `/v2/team/other/blobs/${layer}`],
      ['bob', bob, '/v2/team/other/tags/list'],
      ['bob', bob, `/v2/team/other/referrers/${other.topDigest}`],
      ['bob', bob, `/v2/team/other/manifests/1?ns=${UPSTREAM}`],
      ['bob', bob, `/v2/${UPSTREAM}/team/other/manifests/1`],
      ['bob', bob, '/v2/team/app/extra/manifests/1'],
      ['ci', ci, '/v2/team/app/manifests/1'],
      ['ci', ci, `/v2/${UPSTREAM}/team/app/blobs/${app.manifests[0]!.layers[0]!.digest}`],
    ];
    for (const [who, headers, path] of cases) {
      const r = await http(`${archway.url}${path}`, { headers: { accept: ACCEPT.all, ...headers } });
      assert.equal(r.status, 403, `${who}: ${path}`);
      assert.equal(errorCode(r), 'DENIED', `${who}: ${path}`);
    }
    assert.deepEqual(await registry.requests(), [], 'denied requests never reach the upstream');
    // Within the grants, by every naming.
    for (const path of ['/v2/team/app/manifests/1', `/v2/${UPSTREAM}/team/app/manifests/1`, `/v2/team/app/manifests/1?ns=${UPSTREAM}`]) {
      assert.equal((await http(`${archway.url}${path}`, { headers: { ...bob, accept: ACCEPT.all } })).status, 200, `bob ${path}`);
    }
    for (const path of ['/v2/team/other/manifests/1', `/v2/${UPSTREAM}/team/other/manifests/1`, `/v2/team/other/manifests/1?ns=${UPSTREAM}`]) {
      assert.equal((await http(`${archway.url}${path}`, { headers: { ...ci, accept: ACCEPT.all } })).status, 200, `ci ${path}`);
    }
  });

  it('skopeo as a user outside the grant fails with denied', async () => {
    await assert.rejects(inspectRaw(`${archway.hostPort}/team/other:1`, { creds: `bob:${USERS.bob}` }), /denied|403/i);
  });
});

describe('containerd with an Authorization header in hosts.toml', () => {
  let dockerd: DockerdHandle | undefined;
  before(async () => {
    dockerd = await startDockerd({ mirror: archway.url });
  });
  after(async () => {
    await dockerd?.stop();
  });

  it('pulls with Bearer <token> (ns routing), and the token’s grant holds', async () => {
    const opts = { containerdSocket: (dockerd as DockerdHandle).containerdSocket };
    const ref = `${UPSTREAM}/team/other:1`;
    await ctrPull({ ...opts, mirror: archway.url, ref, headers: { Authorization: `Bearer ${TOKEN}` } });
    try {
      assert.equal(await ctrImageDigest(opts, ref), other.topDigest);
      const served = archway.logs().filter((l) => l.msg === 'request' && String(l.url).includes(`ns=${UPSTREAM}`) && l.status === 200);
      assert.ok(served.some((l) => String(l.url).startsWith(`/v2/team/other/blobs/${other.manifests[0]!.layers[0]!.digest}`)), 'the layer came through archway');
    } finally {
      await ctrRemove(opts, ref);
    }
    await assert.rejects(
      ctrPull({ ...opts, mirror: archway.url, ref: `${UPSTREAM}/team/app:1`, headers: { Authorization: `Bearer ${TOKEN}` } }),
      /./,
      'team/app is outside the token’s grant',
    );
    const denied = archway.logs().filter((l) => l.msg === 'request' && String(l.url).startsWith('/v2/team/app/manifests/1?ns=') && l.status === 403);
    assert.ok(denied.length > 0, 'containerd was refused with 403');
  });
});

describe('health and metrics endpoints', () => {
  it('/healthz, /readyz and /metrics are open by default', async () => {
    for (const path of ['/healthz', '/readyz', '/metrics']) {
      assert.equal((await http(`${archway.url}${path}`)).status, 200, path);
    }
  });

  it('protectMetrics: /metrics needs credentials, health stays open', async () => {
    const guarded = await startArchway({ upstreams: { [UPSTREAM]: { url: registry.url } }, auth: { ...auth(), protectMetrics: true } });
    try {
      const anonymous = await http(`${guarded.url}/metrics`);
      assert.equal(anonymous.status, 401);
      assert.equal(anonymous.headers['www-authenticate'], 'Basic realm="archway"');
      assert.ok(!anonymous.body.toString().includes('archway_'), 'no metrics in the refusal');
      assert.equal((await http(`${guarded.url}/metrics`, { headers: { authorization: basic('alice', 'wrong') } })).status, 401);
      const withBasic = await http(`${guarded.url}/metrics`, { headers: { authorization: basic('alice', USERS.alice) } });
      assert.equal(withBasic.status, 200);
      assert.match(withBasic.body.toString(), /archway_/);
      assert.equal((await http(`${guarded.url}/metrics`, { headers: { authorization: `Bearer ${OTHER_TOKEN}` } })).status, 200);
      for (const path of ['/healthz', '/readyz']) assert.equal((await http(`${guarded.url}${path}`)).status, 200, path);
      // Spellings the router treats as /metrics meet the same check.
      for (const path of ['/metrics?x=1', '/metrics#', '/%6detrics', '/metric%73']) {
        const r = await http(`${guarded.url}${path}`);
        assert.ok(r.status === 401 || r.status === 404, `${path} → ${r.status}`);
        assert.ok(!r.body.toString().includes('archway_http'), `${path} leaked metrics`);
      }
    } finally {
      await guarded.stop();
    }
  });
});

describe('grants across upstreams', () => {
  it('an unqualified pattern is about the default upstream only: the same name at another registry is denied', async () => {
    const second = await startRegistry();
    const both = await startArchway({
      upstreams: { [UPSTREAM]: { url: registry.url }, 'second.test': { url: second.url } },
      defaultUpstream: UPSTREAM,
      auth: auth(),
    });
    try {
      await pushLayout(app, { hostPort: second.hostPort, name: 'team/app' });
      const authorization = basic('bob', USERS.bob); // granted team/app, i.e. registry.test/team/app
      const own = await http(`${both.url}/v2/team/app/manifests/1`, { headers: { authorization, accept: ACCEPT.all } });
      assert.equal(own.status, 200);
      for (const path of ['/v2/second.test/team/app/manifests/1', '/v2/team/app/manifests/1?ns=second.test']) {
        const r = await http(`${both.url}${path}`, { headers: { authorization, accept: ACCEPT.all } });
        assert.equal(r.status, 403, path);
        assert.equal(errorCode(r), 'DENIED', path);
      }
    } finally {
      await both.stop();
      await second.stop();
    }
  });
});

describe('per-client limits', () => {
  let front: FaultFront;
  let otherClient: Agent;
  before(async () => {
    front = await startFaultFront(registry);
    // Another client on the same machine: a second loopback address.
    otherClient = new Agent({ localAddress: '127.0.0.2' });
  });
  after(async () => {
    await otherClient?.close();
    await front?.stop();
  });

  it('concurrentRequests 2: a third request while two are in progress gets 429 TOOMANYREQUESTS with Retry-After', async () => {
    const limited = await startArchway({ upstreams: { [UPSTREAM]: { url: front.url } }, limits: { perClient: { concurrentRequests: 2 } } });
    try {
      // ~1.2 s per blob: two downloads stay in progress while we ask again.
      front.setMode({ kind: 'trickle', chunkBytes: 8 * 1024, pauseMs: 100 });
      const blobs = [
        ['team/app', app.manifests[0]!.layers[0]!.digest],
        ['team/other', other.manifests[0]!.layers[0]!.digest],
      ] as const;
      const slow = await Promise.all(blobs.map(([name, d]) => request(`${limited.url}/v2/${name}/blobs/${d}`)));
      assert.deepEqual(
        slow.map((r) => r.statusCode),
        [200, 200],
      );
      const third = await http(`${limited.url}/v2/team/app/manifests/1`, { headers: { accept: ACCEPT.all } });
      assert.equal(third.status, 429);
      assert.equal(errorCode(third), 'TOOMANYREQUESTS');
      assert.ok(Number(third.headers['retry-after']) >= 1, `Retry-After: ${third.headers['retry-after']}`);
      assert.equal((await http(`${limited.url}/v2/`)).status, 429, 'GET /v2/ counts too');
      assert.equal((await http(`${limited.url}/healthz`)).status, 200, 'health is never limited');
      const fromElsewhere = await http(`${limited.url}/v2/`, { dispatcher: otherClient });
      assert.equal(fromElsewhere.status, 200, 'another client address has its own limit');

      const bodies = await Promise.all(slow.map(async (r) => Buffer.from(await r.body.arrayBuffer())));
      bodies.forEach((b, i) => assert.equal(sha256(b), blobs[i]![1]));
      front.setMode({ kind: 'pass' });
      // A slot is freed when archway sees its response close, a moment after the client's last byte.
      let again = await http(`${limited.url}/v2/team/app/manifests/1`, { headers: { accept: ACCEPT.all } });
      for (const deadline = Date.now() + 2000; again.status === 429 && Date.now() < deadline; await sleep(20)) {
        again = await http(`${limited.url}/v2/team/app/manifests/1`, { headers: { accept: ACCEPT.all } });
      }
      assert.equal(again.status, 200, 'the slots are free once the downloads ended');
    } finally {
      front.setMode({ kind: 'pass' });
      await limited.stop();
    }
  });

  it('requestsPerSecond: a burst gets 429s with Retry-After; after waiting, requests succeed again', async () => {
    const limited = await startArchway({ upstreams: { [UPSTREAM]: { url: registry.url } }, limits: { perClient: { requestsPerSecond: 2 } } });
    try {
      const burst = await Promise.all(Array.from({ length: 10 }, () => http(`${limited.url}/v2/`)));
      const ok = burst.filter((r) => r.status === 200);
      const refused = burst.filter((r) => r.status === 429);
      assert.equal(ok.length + refused.length, burst.length, JSON.stringify(burst.map((r) => r.status)));
      assert.ok(ok.length >= 1 && ok.length <= 3, `${ok.length} of 10 admitted at 2 requests per second`);
      assert.ok(refused.length >= 7);
      for (const r of refused) {
        assert.equal(errorCode(r), 'TOOMANYREQUESTS');
        assert.ok(Number(r.headers['retry-after']) >= 1, `Retry-After: ${r.headers['retry-after']}`);
      }
      assert.equal((await http(`${limited.url}/v2/`, { dispatcher: otherClient })).status, 200, 'another client is not affected');
      const wait = Math.max(...refused.map((r) => Number(r.headers['retry-after'])));
      await sleep(wait * 1000);
      const after = await http(`${limited.url}/v2/team/app/manifests/1`, { headers: { accept: ACCEPT.all } });
      assert.equal(after.status, 200, 'after Retry-After the client is admitted again');
    } finally {
      await limited.stop();
    }
  });

  it('with authentication the limit is per user, wherever the user connects from', async () => {
    const limited = await startArchway({
      upstreams: { [UPSTREAM]: { url: registry.url } },
      auth: auth(),
      limits: { perClient: { requestsPerSecond: 2 } },
    });
    try {
      const alice = { authorization: basic('alice', USERS.alice) };
      const burst = await Promise.all(Array.from({ length: 6 }, () => http(`${limited.url}/v2/`, { headers: alice })));
      assert.ok(burst.some((r) => r.status === 429), JSON.stringify(burst.map((r) => r.status)));
      const aliceElsewhere = await http(`${limited.url}/v2/`, { headers: alice, dispatcher: otherClient });
      assert.equal(aliceElsewhere.status, 429, 'alice from another address shares her limit');
      const bob = await http(`${limited.url}/v2/`, { headers: { authorization: basic('bob', USERS.bob) } });
      assert.equal(bob.status, 200, 'bob from the same address has his own');
    } finally {
      await limited.stop();
    }
  });
});
