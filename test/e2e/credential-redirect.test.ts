// A hostile redirect target: the upstream (a real registry with Basic auth,
// behind a front) redirects blob downloads to an origin that answers 401
// with a challenge of its own. archway must never send it credentials, nor
// follow its realm, now or later.
// archway runs as its own process; the password appears nowhere in its output.
import assert from 'node:assert/strict';
import { createServer, request as httpRequest, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startArchwayProcess, type ArchwayProcess } from '../harness/archway-process.ts';
import { sha256Digest as sha256 } from '../harness/digest.ts';
import { ACCEPT, http } from '../harness/http.ts';
import { buildImage, type BuiltImage } from '../harness/images.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

const USER = 'puller';
const PASSWORD = 'never-leave-home-77';
let work: string;
let registry: RegistryHandle;
let archway: ArchwayProcess;
let built: BuiltImage;
const seenByEvil: Array<{ url: string; authorization: string | undefined }> = [];
let closeAll: () => Promise<void>;

async function listen(handler: (req: IncomingMessage, res: import('node:http').ServerResponse) => void) {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, url: `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

before(async () => {
  work = await tempDir('archway-cred-redirect-');
  registry = await startRegistry({ htpasswd: { [USER]: PASSWORD } });
  built = await buildImage({ dir: join(work, 'img'), tag: '1', platforms: [{ os: 'linux', architecture: 'amd64' }], format: 'oci', layerSizes: [64 * 1024], seed: 'cred-redirect' });
  await pushLayout(built, { hostPort: registry.hostPort, name: 'private/app', creds: `${USER}:${PASSWORD}` });
  // The hostile origin: challenges everybody, with a realm of its own.
  const evil = await listen((req, res) => {
    seenByEvil.push({ url: req.url ?? '', authorization: req.headers.authorization });
    res.writeHead(401, { 'www-authenticate': `Bearer realm="http://127.0.0.1:${(evil.server.address() as AddressInfo).port}/token",service="evil"` });
    res.end();
  });
  // The front: everything to the registry, but blob GETs redirect to the hostile origin.
  const front = await listen((req, res) => {
    if (req.method === 'GET' && /\/blobs\/sha256:/.test(req.url ?? '')) {
      res.writeHead(307, { location: `${evil.url}/cdn${req.url}` });
      res.end();
      return;
    }
    const upstream = httpRequest(`${registry.url}${req.url}`, { method: req.method, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    req.pipe(upstream);
  });
  archway = await startArchwayProcess({
    upstreams: { 'private.example': { url: front.url, username: USER, password: PASSWORD } },
    defaultUpstream: 'private.example',
  });
  closeAll = async () => {
    for (const s of [evil.server, front.server]) {
      s.closeAllConnections();
      await new Promise<void>((resolve) => s.close(() => resolve()));
    }
  };
});

after(async () => {
  await archway?.kill();
  await closeAll?.();
  await registry?.stop();
  await removeDir(work);
});

describe('a redirect target that asks for credentials', () => {
  it('gets none: the blob fails with 502, the manifest path keeps working, and the realm is never learned', async () => {
    const manifest = await http(`${archway.url}/v2/private/app/manifests/1`, { headers: { accept: ACCEPT.all } });
    assert.equal(manifest.status, 200, 'Basic auth against the real registry works');
    const layer = built.manifests[0]!.layers[0]!;
    for (let i = 0; i < 2; i++) {
      const blob = await http(`${archway.url}/v2/private/app/blobs/${layer.digest}`);
      assert.equal(blob.status, 502);
      assert.match(blob.json<{ errors: Array<{ message: string }> }>().errors[0]?.message ?? '', /redirect target refused/);
    }
    assert.ok(seenByEvil.length >= 2);
    assert.ok(seenByEvil.every((r) => r.authorization === undefined), JSON.stringify(seenByEvil));
    assert.ok(!seenByEvil.some((r) => r.url.startsWith('/token')), 'its token realm was never called');
    // Later requests to the real upstream still use its own Basic scheme.
    const again = await http(`${archway.url}/v2/private/app/manifests/${built.manifests[0]!.digest}`, { headers: { accept: ACCEPT.all } });
    assert.equal(again.status, 200);
    assert.equal(sha256(again.body), built.manifests[0]!.digest);
    assert.ok(!archway.output().includes(PASSWORD), 'the password is never logged');
    assert.ok(!archway.output().includes(Buffer.from(`${USER}:${PASSWORD}`).toString('base64')), 'nor its Basic encoding');
  });
});
