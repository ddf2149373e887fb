// HTTPS listeners (server.tls) with a certificate from a test CA made here:
// skopeo with TLS verification on and containerd with the CA in hosts.toml
// pull through archway; SIGHUP re-reads certificate and key, so new
// connections get the new certificate while connections opened before the
// reload keep working (nothing is dropped); a bad pair keeps the old one.
import assert from 'node:assert/strict';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import type { IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, get as httpsGet } from 'node:https';
import { join } from 'node:path';
import { connect as tlsConnect, type PeerCertificate, type TLSSocket } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { startArchway } from '../harness/archway.ts';
import { startArchwayProcess, type ArchwayProcess } from '../harness/archway-process.ts';
import { ctrImageDigest, ctrPull, ctrRemove } from '../harness/ctr.ts';
import { sha256Digest as sha256 } from '../harness/digest.ts';
import { startDockerd, type DockerdHandle } from '../harness/dockerd.ts';
import { buildImage, type BuiltImage } from '../harness/images.ts';
import { freePort } from '../harness/ports.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { copyToDir, inspectRaw, pushLayout, readDirBlob, readDirManifest } from '../harness/skopeo.ts';
import { issueServerCert, makeTestCa, type ServerCert, type TestCa } from '../harness/tls-certs.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

const UPSTREAM = 'registry.test';
const amd64 = { os: 'linux', architecture: 'amd64' };

let work: string;
let ca: TestCa;
let caPem: string;
/** Trusted by skopeo: holds ca.crt only. */
let certDir: string;
let certA: ServerCert;
let certB: ServerCert;
/** The files archway's config names; their content is cert A, later cert B. */
let live: { cert: string; key: string };
let registry: RegistryHandle;
let app: BuiltImage;
let big: BuiltImage;
let proc: ArchwayProcess;

async function install(cert: ServerCert): Promise<void> {
  await copyFile(cert.certPath, live.cert);
  await copyFile(cert.keyPath, live.key);
}

/** The certificate a new TLS connection to `port` is given, verified against the test CA. */
async function presented(port: number): Promise<PeerCertificate> {
  return new Promise((resolve, reject) => {
    const socket = tlsConnect({ host: '127.0.0.1', port, ca: caPem }, () => {
      const cert = socket.getPeerCertificate();
      socket.end();
      resolve(cert);
    });
    socket.once('error', reject);
  });
}

before(async () => {
  work = await tempDir('archway-tls-');
  const pki = join(work, 'pki');
  certDir = join(work, 'certs.d');
  await mkdir(pki);
  await mkdir(certDir);
  ca = await makeTestCa(pki);
  caPem = await readFile(ca.certPath, 'utf8');
  await copyFile(ca.certPath, join(certDir, 'ca.crt'));
  certA = await issueServerCert(ca, { dir: pki, name: 'a', commonName: 'archway-a', serialHex: '1A2B3C' });
  certB = await issueServerCert(ca, { dir: pki, name: 'b', commonName: 'archway-b', serialHex: '4D5E6F' });
  live = { cert: join(work, 'tls.crt'), key: join(work, 'tls.key') };
  await install(certA);

  registry = await startRegistry();
  app = await buildImage({ dir: join(work, 'app'), tag: '1', platforms: [amd64], format: 'oci', layerSizes: [128 * 1024], seed: 'tls-app' });
  big = await buildImage({ dir: join(work, 'big'), tag: '1', platforms: [amd64], format: 'oci', layerSizes: [8 * 1024 * 1024], seed: 'tls-big', index: false });
  await pushLayout(app, { hostPort: registry.hostPort, name: 'team/app' });
  await pushLayout(big, { hostPort: registry.hostPort, name: 'team/big' });
  proc = await startArchwayProcess({
    server: { tls: live },
    upstreams: { [UPSTREAM]: { url: registry.url } },
    defaultUpstream: UPSTREAM,
  });
});

after(async () => {
  await proc?.kill();
  await registry?.stop();
  await removeDir(work);
});

describe('HTTPS with a certificate from the test CA', () => {
  it('presents the configured certificate, which verifies against the CA; plain HTTP is not served', async () => {
    assert.match(proc.url, /^https:\/\//);
    const cert = await presented(proc.port);
    assert.equal(cert.serialNumber, certA.serialNumber);
    assert.equal(cert.subject.CN, certA.commonName);
    await assert.rejects(request(`http://${proc.hostPort}/v2/`).then((r) => r.body.text()), 'no plain HTTP on a TLS listener');
  });

  it('skopeo inspect --raw with TLS verification on and the CA in --cert-dir; without the CA it refuses', async () => {
    const raw = await inspectRaw(`${proc.hostPort}/team/app:1`, { tlsVerify: true, certDir });
    assert.ok(raw.equals(app.topBytes));
    await assert.rejects(inspectRaw(`${proc.hostPort}/team/app:1`, { tlsVerify: true }), /certificate|x509/i, 'verification is really on');
  });

  it('skopeo copy over verified TLS fetches every blob intact', async () => {
    const dir = join(work, 'copy');
    await copyToDir(`${proc.hostPort}/team/app:1`, dir, { tlsVerify: true, certDir, all: true });
    assert.ok((await readDirManifest(dir)).equals(app.topBytes));
    const m = app.manifests[0]!;
    for (const d of [m.configDigest, ...m.layers.map((l) => l.digest)]) assert.equal(sha256(await readDirBlob(dir, d)), d);
  });

  describe('containerd', () => {
    let dockerd: DockerdHandle | undefined;
    before(async () => {
      dockerd = await startDockerd({ mirror: proc.url });
    });
    after(async () => {
      await dockerd?.stop();
    });

    it('ctr pulls through an https mirror with the CA in hosts.toml', async () => {
      const opts = { containerdSocket: (dockerd as DockerdHandle).containerdSocket };
      const ref = `${UPSTREAM}/team/app:1`;
      await ctrPull({ ...opts, mirror: proc.url, ca: ca.certPath, ref });
      try {
        assert.equal(await ctrImageDigest(opts, ref), app.topDigest);
        assert.match(proc.output(), new RegExp(`"url":"/v2/team/app/blobs/${app.manifests[0]!.layers[0]!.digest}\\?ns=${UPSTREAM}"`), 'the layer came through archway');
      } finally {
        await ctrRemove(opts, ref);
      }
      // Without the CA, containerd refuses the mirror's certificate.
      await assert.rejects(ctrPull({ ...opts, mirror: proc.url, ref }), /certificate|x509/i);
    });
  });

  it('every listener is HTTPS (server.ports too)', async () => {
    const extra = await freePort();
    const inProcess = await startArchway({ upstreams: { [UPSTREAM]: { url: registry.url } }, ports: [extra], tls: live });
    try {
      assert.match(inProcess.url, /^https:\/\//);
      for (const port of [inProcess.port, extra]) {
        assert.equal((await presented(port)).serialNumber, certA.serialNumber, `port ${port}`);
      }
      const raw = await inspectRaw(`127.0.0.1:${extra}/team/app:1`, { tlsVerify: true, certDir });
      assert.ok(raw.equals(app.topBytes));
      assert.ok((await inProcess.metric('archway_http_requests_total', { route: 'manifest' })) > 0, 'metric() reads /metrics over HTTPS');
    } finally {
      await inProcess.stop();
    }
  });
});

describe('SIGHUP reloads the certificate', () => {
  it('new connections get the new certificate; a download and a keep-alive connection from before carry on', async () => {
    const layer = big.manifests[0]!.layers[0]!;
    const blobPath = `/v2/team/big/blobs/${layer.digest}`;
    // No TLS session resumption: a resumed session reports no peer certificate.
    const keepAlive = new HttpsAgent({ keepAlive: true, maxSockets: 1, ca: caPem, maxCachedSessions: 0 });
    const downloads = new HttpsAgent({ keepAlive: false, ca: caPem, maxCachedSessions: 0 });
    const get = (agent: HttpsAgent, path: string) =>
      new Promise<IncomingMessage>((resolve, reject) => {
        httpsGet({ host: '127.0.0.1', port: proc.port, path, agent }, resolve).once('error', reject);
      });
    const readAll = async (res: IncomingMessage) => {
      const chunks: Buffer[] = [];
      for await (const c of res) chunks.push(c as Buffer);
      return Buffer.concat(chunks);
    };
    try {
      // Warm the cache, so the paused download below is served from disk.
      assert.equal(sha256(await readAll(await get(downloads, blobPath))), layer.digest);

      // A keep-alive connection, idle at the reload.
      const first = await get(keepAlive, '/v2/');
      const idleSocket = first.socket as TLSSocket;
      assert.equal(idleSocket.getPeerCertificate().serialNumber, certA.serialNumber);
      await readAll(first);

      // A download in progress at the reload: read one chunk, then stop reading.
      const inflight = await get(downloads, blobPath);
      const received: Buffer[] = [];
      await new Promise<void>((resolve) => {
        inflight.once('data', (c: Buffer) => {
          received.push(c);
          inflight.pause();
          resolve();
        });
      });
      const inflightSocket = inflight.socket as TLSSocket;
      assert.equal(inflightSocket.getPeerCertificate().serialNumber, certA.serialNumber);
      // archway logs a request when its response is over: only the warm-up is, so far.
      const blobLines = () => proc.output().split('\n').filter((l) => l.includes(`"url":"${blobPath}"`));
      assert.equal(blobLines().length, 1, 'the download is still in progress');

      await install(certB);
      const offset = proc.output().length;
      proc.notify('SIGHUP');
      await proc.waitForOutput(/reloaded TLS certificate/, { fromOffset: offset });

      const fresh = await presented(proc.port);
      assert.equal(fresh.serialNumber, certB.serialNumber, 'a new connection gets certificate B');
      assert.equal(fresh.subject.CN, certB.commonName);

      // The download from before completes, on its original connection.
      inflight.on('data', (c: Buffer) => received.push(c));
      const ended = new Promise<void>((resolve, reject) => {
        inflight.once('end', resolve);
        inflight.once('error', reject);
        inflight.once('aborted', () => reject(new Error('download aborted')));
      });
      inflight.resume();
      await ended;
      const body = Buffer.concat(received);
      assert.equal(body.length, layer.size);
      assert.equal(sha256(body), layer.digest, 'the in-flight download completed intact');
      assert.equal(inflight.complete, true);
      await proc.waitForOutput(new RegExp(`"url":"${blobPath}","status":200,"complete":true[^\n]*\n[^]*"url":"${blobPath}","status":200,"complete":true`));
      assert.equal(blobLines().length, 2);

      // The idle keep-alive connection is still open and still answers.
      const second = await new Promise<{ res: IncomingMessage; reused: boolean }>((resolve, reject) => {
        const req = httpsGet({ host: '127.0.0.1', port: proc.port, path: '/v2/', agent: keepAlive }, (res) => resolve({ res, reused: req.reusedSocket }));
        req.once('error', reject);
      });
      assert.equal(second.res.statusCode, 200);
      assert.equal(second.reused, true, 'the connection opened before the reload was reused');
      assert.equal(second.res.socket, idleSocket);
      assert.equal((second.res.socket as TLSSocket).getPeerCertificate().serialNumber, certA.serialNumber);
      await readAll(second.res);

      // Clients trusting the CA go on pulling, now with certificate B.
      const raw = await inspectRaw(`${proc.hostPort}/team/app:1`, { tlsVerify: true, certDir });
      assert.ok(raw.equals(app.topBytes));
    } finally {
      keepAlive.destroy();
      downloads.destroy();
    }
  });

  it('a bad certificate file on SIGHUP is refused: the current certificate stays in use', async () => {
    await writeFile(live.cert, 'not a certificate\n');
    const offset = proc.output().length;
    proc.notify('SIGHUP');
    await proc.waitForOutput(/reload failed/, { fromOffset: offset });
    const cert = await presented(proc.port);
    assert.equal(cert.serialNumber, certB.serialNumber);
    const r = await inspectRaw(`${proc.hostPort}/team/app:1`, { tlsVerify: true, certDir });
    assert.ok(r.equals(app.topBytes));
    assert.equal(proc.child.exitCode, null, 'archway is still running');
  });
});
