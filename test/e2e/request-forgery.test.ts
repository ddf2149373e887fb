// No request forgery through upstream answers: archway as its own process in
// front of hostile upstreams (test/harness/redirecting-upstream.ts) that
// redirect manifests and blobs to 127.0.0.2, name a token realm there, or
// name a realm on another host (127.0.0.3) for Basic credentials. 127.0.0.2
// stands in for a metadata service: `network.deny: [127.0.0.2/32]`, and a
// listener there counts every connection. The same setup without the deny
// (and with tokenRealms) works, so each assertion can fail.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startArchwayProcess, type ArchwayProcess } from '../harness/archway-process.ts';
import { sha256Digest } from '../harness/digest.ts';
import { ACCEPT, http, type HttpAnswer } from '../harness/http.ts';
import { scrapeMetric } from '../harness/metrics.ts';
import {
  contentHandler,
  startCountingListener,
  startRedirectingUpstream,
  tinyImage,
  tokenHandler,
  type CountingListener,
  type RedirectingUpstream,
  type TinyImage,
} from '../harness/redirecting-upstream.ts';

const SIGNATURE = 'X-Amz-Signature=presigned-secret-0c4f';
const USER = 'puller';
const PASSWORD = 'realm-must-not-see-me-42';
const BASIC = `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}`;

let image: TinyImage;
/** 127.0.0.2: content and a token service, where nothing may connect while it is denied. */
let internal: CountingListener;
/** 127.0.0.3: a token realm on another host than the registry. */
let foreignRealm: CountingListener;
/** Redirects manifests and blobs to 127.0.0.2. */
let redirecting: RedirectingUpstream;
/** Demands a token from a realm on 127.0.0.2. */
let internalRealm: RedirectingUpstream;
/** Demands a token from 127.0.0.3, and archway has credentials for it. */
let credentialed: RedirectingUpstream;
let guarded: ArchwayProcess;
let open: ArchwayProcess;

function upstreams(tokenRealms: string[]) {
  return {
    'hostile.example': { url: redirecting.url },
    'realm.example': { url: internalRealm.url },
    'private.example': { url: credentialed.url, username: USER, password: PASSWORD, tokenRealms },
  };
}

before(async () => {
  image = tinyImage('request-forgery');
  const content = contentHandler(image);
  const token = tokenHandler('internal-token');
  internal = await startCountingListener('127.0.0.2', (req, res) => ((req.url ?? '').startsWith('/token') ? token(req, res) : content(req, res)));
  foreignRealm = await startCountingListener('127.0.0.3', tokenHandler('foreign-token'));
  redirecting = await startRedirectingUpstream({ image, redirectTo: internal.url, redirectQuery: `?${SIGNATURE}` });
  internalRealm = await startRedirectingUpstream({ image, bearer: { realm: `${internal.url}/token`, token: 'internal-token' } });
  credentialed = await startRedirectingUpstream({ image, bearer: { realm: `${foreignRealm.url}/token`, token: 'foreign-token' } });
  guarded = await startArchwayProcess({
    upstreams: upstreams([]),
    defaultUpstream: 'hostile.example',
    network: { deny: ['127.0.0.2/32'] },
  });
  open = await startArchwayProcess({ upstreams: upstreams(['127.0.0.3']), defaultUpstream: 'hostile.example' });
});

after(async () => {
  await guarded?.kill();
  await open?.kill();
  for (const s of [redirecting, internalRealm, credentialed, internal, foreignRealm]) await s?.stop();
});

interface Envelope {
  errors: Array<{ code: string; message: string; detail?: Record<string, unknown> }>;
}

/** A 502 spec error that names the upstream by its key and carries no URL, address or presigned query. */
function assertRefused(res: HttpAnswer, upstream: string, what: string): Envelope['errors'][number] {
  assert.equal(res.status, 502, `${what}: ${res.body.toString()}`);
  assert.match(res.headers['content-type'] ?? '', /^application\/json/);
  const error = res.json<Envelope>().errors[0];
  assert.ok(error, what);
  assert.equal(error.code, 'UNAVAILABLE');
  assert.match(error.message, new RegExp(`^upstream ${upstream.replace('.', '\\.')}\\b`));
  assert.doesNotMatch(res.body.toString(), /https?:\/\/|127\.0\.0\.2|presigned/, `${what}: no URL, address or query in the answer`);
  return error;
}

describe('redirects and token realms to a denied address', () => {
  it('a redirected manifest and blob answer 502 naming the upstream, and nothing connects to 127.0.0.2', async () => {
    const manifest = await http(`${guarded.url}/v2/app/manifests/1`, { headers: { accept: ACCEPT.all } });
    const error = assertRefused(manifest, 'hostile.example', 'manifest');
    assert.match(error.message, /redirect or token realm/);
    assert.deepEqual(error.detail, { upstream: 'hostile.example', refused: 'network.deny' });
    const blob = await http(`${guarded.url}/v2/app/blobs/${image.layerDigest}`);
    assertRefused(blob, 'hostile.example', 'blob');
    const head = await http(`${guarded.url}/v2/app/blobs/${image.configDigest}`, { method: 'HEAD' });
    assert.equal(head.status, 502);
    assert.ok(redirecting.requests().some((r) => r.path.includes('/blobs/')), 'the upstream did redirect the blob');
    assert.equal(internal.connections(), 0, 'no connection reached the denied address');
  });

  it('a token realm on the denied address is refused the same way', async () => {
    const res = await http(`${guarded.url}/v2/app/manifests/1?ns=realm.example`, { headers: { accept: ACCEPT.all } });
    assertRefused(res, 'realm.example', 'token realm');
    assert.ok(internalRealm.requests().some((r) => r.authorization === undefined), 'the upstream challenged');
    assert.equal(internal.connections(), 0);
  });

  it('logs each refusal with the upstream and host, never the URL, and counts it', async () => {
    await guarded.waitForOutput(/connection refused by the network policy/);
    const lines = guarded
      .output()
      .split('\n')
      .filter((l) => l.includes('connection refused by the network policy'));
    assert.ok(lines.some((l) => /"upstream":"hostile\.example"/.test(l) && /"host":"127\.0\.0\.2"/.test(l) && /"reason":"network\.deny"/.test(l)), lines.join('\n'));
    assert.doesNotMatch(guarded.output(), /presigned-secret|X-Amz-Signature/, 'the presigned query is in no log line');
    assert.ok((await scrapeMetric(guarded.url, 'archway_upstream_connections_refused_total', { upstream: 'hostile.example', reason: 'network.deny' })) >= 3);
    assert.ok((await scrapeMetric(guarded.url, 'archway_upstream_connections_refused_total', { upstream: 'realm.example', reason: 'network.deny' })) >= 1);
    assert.equal(internal.connections(), 0);
  });

  it('without the deny, the same redirects and realm work (the listener sees the connections)', async () => {
    const manifest = await http(`${open.url}/v2/app/manifests/1`, { headers: { accept: ACCEPT.all } });
    assert.equal(manifest.status, 200, manifest.body.toString());
    assert.equal(sha256Digest(manifest.body), image.manifestDigest);
    const blob = await http(`${open.url}/v2/app/blobs/${image.layerDigest}`);
    assert.equal(blob.status, 200, blob.body.toString());
    assert.equal(sha256Digest(blob.body), image.layerDigest);
    const viaRealm = await http(`${open.url}/v2/app/manifests/1?ns=realm.example`, { headers: { accept: ACCEPT.all } });
    assert.equal(viaRealm.status, 200, viaRealm.body.toString());
    assert.ok(internal.connections() > 0);
    assert.ok(internal.requests().some((r) => r.path.startsWith('/token')));
    assert.ok(internal.requests().some((r) => r.path.startsWith(`/blobs/${image.layerDigest}?${SIGNATURE}`)));
  });
});

describe('Basic credentials and a token realm on another host', () => {
  it('are never sent there unless tokenRealms lists it: the client gets a clear error', async () => {
    const before = foreignRealm.requests().length;
    const res = await http(`${guarded.url}/v2/app/manifests/1?ns=private.example`, { headers: { accept: ACCEPT.all } });
    const error = assertRefused(res, 'private.example', 'foreign realm');
    assert.match(error.message, /credentials not sent/);
    assert.match(error.message, /upstreams\.private\.example\.tokenRealms/);
    assert.equal(foreignRealm.requests().length, before, 'the foreign realm was never asked');
    assert.ok(credentialed.requests().every((r) => r.authorization !== BASIC), 'and the upstream never got them either: it asked for a token');
  });

  it('are sent to a realm tokenRealms lists (the listener sees them), and the pull works', async () => {
    const res = await http(`${open.url}/v2/app/manifests/1?ns=private.example`, { headers: { accept: ACCEPT.all } });
    assert.equal(res.status, 200, res.body.toString());
    assert.equal(sha256Digest(res.body), image.manifestDigest);
    assert.ok(foreignRealm.requests().some((r) => r.authorization === BASIC), JSON.stringify(foreignRealm.requests()));
  });
});
