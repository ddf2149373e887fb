// HTTPS upstreams: the real distribution registry serving TLS. `ca` trusts a private CA's
// certificate, without it the same upstream is refused (502, nothing cached); `insecure`
// accepts a self-signed certificate nothing could verify.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startArchway, type ArchwayHandle } from '../harness/archway.ts';
import { sha256Digest as sha256 } from '../harness/digest.ts';
import { ACCEPT, http, type HttpAnswer } from '../harness/http.ts';
import { buildImage, type BuiltImage } from '../harness/images.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { issueServerCert, makeTestCa, selfSignedServerCert, type TestCa } from '../harness/tls-certs.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

let work: string;
let ca: TestCa;
/** Serves a certificate signed by `ca`. */
let signed: RegistryHandle;
/** Serves a self-signed certificate. */
let selfSigned: RegistryHandle;
let image: BuiltImage;

const errorOf = (r: HttpAnswer) => r.json<{ errors: Array<{ code: string; message: string }> }>().errors[0];

before(async () => {
  work = await tempDir('archway-upstream-tls-');
  ca = await makeTestCa(work, 'archway upstream test CA');
  const cert = await issueServerCert(ca, { dir: work, name: 'registry', commonName: 'registry', serialHex: '0a11' });
  signed = await startRegistry({ tls: cert });
  selfSigned = await startRegistry({ tls: await selfSignedServerCert({ dir: work, name: 'self', commonName: 'self-signed registry' }) });
  image = await buildImage({ dir: join(work, 'img'), tag: '1', platforms: [{ os: 'linux', architecture: 'amd64' }], format: 'oci', layerSizes: [64 * 1024], seed: 'upstream-tls', index: false });
  for (const r of [signed, selfSigned]) await pushLayout(image, { hostPort: r.hostPort, name: 'team/app' });
});

after(async () => {
  await signed?.stop();
  await selfSigned?.stop();
  await removeDir(work);
});

/** Pull the tag and its layer through archway: both byte for byte. */
async function pullThrough(archway: ArchwayHandle): Promise<void> {
  const m = await http(`${archway.url}/v2/team/app/manifests/1`, { headers: { accept: ACCEPT.all } });
  assert.equal(m.status, 200, m.body.toString());
  assert.equal(m.headers['docker-content-digest'], image.topDigest);
  const layer = image.manifests[0]!.layers[0]!;
  const b = await http(`${archway.url}/v2/team/app/blobs/${layer.digest}`);
  assert.equal(b.status, 200);
  assert.equal(sha256(b.body), layer.digest);
}

/** Refused: 502 UNAVAILABLE naming the upstream, no certificate internals or stack, nothing cached. */
async function assertRefused(archway: ArchwayHandle): Promise<void> {
  const m = await http(`${archway.url}/v2/team/app/manifests/1`, { headers: { accept: ACCEPT.all } });
  assert.equal(m.status, 502, m.body.toString());
  assert.equal(errorOf(m)?.code, 'UNAVAILABLE');
  assert.match(errorOf(m)?.message ?? '', /upstream up\.test/);
  assert.doesNotMatch(m.body.toString(), /at \w+ \(|BEGIN CERTIFICATE/, 'no stack trace, no certificate');
  const layer = image.manifests[0]!.layers[0]!;
  assert.equal((await http(`${archway.url}/v2/team/app/blobs/${layer.digest}`)).status, 502);
  assert.equal(await archway.metric('archway_cache_blobs'), 0, 'nothing cached from an upstream that was not trusted');
}

describe('HTTPS upstreams', () => {
  it('ca: a certificate signed by the configured CA is trusted', async () => {
    const archway = await startArchway({ upstreams: { 'up.test': { url: signed.url, ca: ca.certPath } } });
    try {
      assert.match(signed.url, /^https:\/\//);
      await pullThrough(archway);
    } finally {
      await archway.stop();
    }
  });

  it('without ca the same upstream is refused: its CA is not one the system trusts', async () => {
    const archway = await startArchway({ upstreams: { 'up.test': { url: signed.url } } });
    try {
      await assertRefused(archway);
    } finally {
      await archway.stop();
    }
  });

  it('insecure: a self-signed certificate is accepted; without it, or with an unrelated ca, refused', async () => {
    const trusting = await startArchway({ upstreams: { 'up.test': { url: selfSigned.url, insecure: true } } });
    const strict = await startArchway({ upstreams: { 'up.test': { url: selfSigned.url } } });
    const wrongCa = await startArchway({ upstreams: { 'up.test': { url: selfSigned.url, ca: ca.certPath } } });
    try {
      await pullThrough(trusting);
      await assertRefused(strict);
      await assertRefused(wrongCa);
    } finally {
      await Promise.all([trusting.stop(), strict.stop(), wrongCa.stop()]);
    }
  });
});
