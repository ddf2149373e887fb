// Clients that stop reading, crawl, or never finish a request, against archway
// as its own process (timeouts.clientIdle 2 s) and the real registry holding a
// 64 MiB layer: a raw socket that reads 64 KiB of the cached blob and stops is
// closed by archway within clientIdle and a margin, and with it go the blob's
// file handle and its eviction pin (a purge then removes the blob); a reader
// that takes 64 KiB every 500 ms is never cut; half a request line is closed
// after timeouts.clientHeaders; an idle keep-alive connection after
// timeouts.clientKeepAlive; and beyond server.maxConnections a new
// connection is closed at once.
import assert from 'node:assert/strict';
import { access } from 'node:fs/promises';
import { mkdir, readFile } from 'node:fs/promises';
import { connect, type Socket } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import { Agent } from 'undici';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { startArchwayProcess, type ArchwayProcess } from '../harness/archway-process.ts';
import { digestHex, sha256Digest } from '../harness/digest.ts';
import { ACCEPT, http } from '../harness/http.ts';
import { buildImage, type BuiltImage } from '../harness/images.ts';
import { scrapeMetric } from '../harness/metrics.ts';
import { waitFor } from '../harness/process.ts';
import { fdSnapshot, settledFds } from '../harness/proc-fds.ts';
import { parseResponses } from '../harness/raw-http.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { startFaultFront, type FaultFront } from '../harness/fault-front.ts';
import { freePort } from '../harness/ports.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { issueServerCert, makeTestCa } from '../harness/tls-certs.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

const MiB = 1024 * 1024;
const CLIENT_IDLE_MS = 2000;
const CLIENT_HEADERS_MS = 2000;
const KEEP_ALIVE_MS = 1500;
const SLOW_READ_EVERY_MS = 25;
const TOKEN = 'stalled-clients-admin-token-0123456789';

let work: string;
let registry: RegistryHandle;
let image: BuiltImage;
let archway: ArchwayProcess;
let layerDigest: string;
let layerSize: number;
const figures: string[] = [];

const dropped = (proc: ArchwayProcess, reason: string) => scrapeMetric(proc.url, 'archway_client_connections_dropped_total', { reason });

/** A raw connection to archway, with what it received and whether it ended. */
interface RawClient {
  socket: Socket;
  received: () => number;
  closed: () => boolean;
  closedAt: () => number | undefined;
  /** Everything received, when keep is set. */
  bytes: () => Buffer;
}

function rawClient(port: number, opts: { keep?: boolean } = {}): Promise<RawClient> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    let received = 0;
    let closedAt: number | undefined;
    const chunks: Buffer[] = [];
    socket.on('data', (d: Buffer) => {
      received += d.length;
      if (opts.keep) chunks.push(d);
    });
    socket.on('error', () => undefined);
    socket.on('close', () => (closedAt = performance.now()));
    socket.once('connect', () =>
      resolve({ socket, received: () => received, closed: () => closedAt !== undefined, closedAt: () => closedAt, bytes: () => Buffer.concat(chunks) }),
    );
    socket.once('error', reject);
  });
}

const blobRequest = () => `GET /v2/library/big/blobs/${layerDigest} HTTP/1.1\r\nHost: archway\r\nConnection: keep-alive\r\n\r\n`;

/** Descriptors of archway's process that are the cached blob's file. */
async function blobFileFds(): Promise<number> {
  const snap = await fdSnapshot(archway.child.pid as number);
  return snap.targets.filter((t) => t.includes(digestHex(layerDigest))).length;
}

before(async () => {
  work = await tempDir('archway-stalled-');
  registry = await startRegistry();
  image = await buildImage({ dir: join(work, 'img'), tag: 'latest', platforms: [{ os: 'linux', architecture: 'amd64' }], format: 'oci', layerSizes: [64 * MiB], seed: 'stalled' });
  await pushLayout(image, { hostPort: registry.hostPort, name: 'library/big' });
  const layer = image.manifests[0]?.layers[0];
  assert.ok(layer);
  layerDigest = layer.digest;
  layerSize = image.blobs.get(layerDigest)?.size ?? 0;
  assert.ok(layerSize >= 60 * MiB, `a big layer (${layerSize} bytes)`);
  archway = await startArchwayProcess({
    upstreams: { 'docker.io': { url: registry.url } },
    defaultUpstream: 'docker.io',
    timeouts: { clientIdle: `${CLIENT_IDLE_MS}ms`, clientHeaders: `${CLIENT_HEADERS_MS}ms`, clientKeepAlive: `${KEEP_ALIVE_MS}ms` },
    admin: { token: TOKEN },
    log: { level: 'warn' },
  });
  // Cached before the tests: the stalled reads below are cache hits (the direct file path).
  const top = await http(`${archway.url}/v2/library/big/manifests/latest`, { headers: { accept: ACCEPT.all } });
  assert.equal(top.status, 200);
  const child = await http(`${archway.url}/v2/library/big/manifests/${image.manifests[0]?.digest}`, { headers: { accept: ACCEPT.all } });
  assert.equal(child.status, 200);
  const whole = await http(`${archway.url}/v2/library/big/blobs/${layerDigest}`);
  assert.equal(whole.status, 200);
  assert.equal(whole.body.length, layerSize);
});

after(async () => {
  await archway?.kill();
  await registry?.stop();
  await removeDir(work);
  if (figures.length) console.log(figures.join('\n'));
});

describe('a client that stops reading a cached 64 MiB blob', () => {
  // Slow, but at the pace the kernel lets a sender see: a sender learns of a
  // reader's progress only when its socket's send buffer has half emptied
  // (about 1.4 MB here, whatever size archway writes in), so a reader must take
  // that much per clientIdle to be seen moving. 64 KiB every 500 ms would be
  // seen once every ~11 s, which a 2 s clientIdle cannot tell from a stall;
  // at the default 60 s it is seen in time.
  it('a reader that takes 64 KiB every 25 ms is not cut within 3 × clientIdle', async () => {
    const before = await dropped(archway, 'stalled');
    const client = await rawClient(archway.port);
    let quota = 64 * 1024;
    client.socket.on('data', () => {
      if (client.received() >= quota) client.socket.pause();
    });
    client.socket.write(blobRequest());
    const started = performance.now();
    const progress: number[] = [];
    while (performance.now() - started < 3 * CLIENT_IDLE_MS + 500) {
      await sleep(SLOW_READ_EVERY_MS);
      quota += 64 * 1024;
      client.socket.resume();
      progress.push(client.received());
      assert.ok(!client.closed(), `cut after ${Math.round(performance.now() - started)} ms having read ${client.received()} bytes`);
    }
    // Still moving at the end, and far from done: the client was slow all along.
    assert.ok(progress.at(-1)! > progress.at(-4)!, `still reading: ${progress.at(-1)}`);
    assert.ok(client.received() < layerSize / 2, `slow: ${client.received()} bytes`);
    assert.equal(await dropped(archway, 'stalled'), before, 'no connection was dropped as stalled');
    client.socket.destroy();
  });

  it('is closed within clientIdle and a margin, releasing the file; the blob can then be purged', async () => {
    const pid = archway.child.pid as number;
    const baseline = await settledFds(pid, { total: 0, sockets: 0 }, 500);
    const fileFdsBefore = await blobFileFds();
    const droppedBefore = await dropped(archway, 'stalled');
    const client = await rawClient(archway.port);
    let reading = false;
    client.socket.on('data', () => {
      if (!reading && client.received() >= 64 * 1024) client.socket.pause();
    });
    client.socket.write(blobRequest());
    await waitFor(() => client.received() >= 64 * 1024, { timeoutMs: 5000, description: 'the first 64 KiB' });
    const stoppedAt = performance.now();
    // While it is held, archway has the blob's file open for it.
    await waitFor(async () => (await blobFileFds()) > fileFdsBefore, { timeoutMs: 2000, description: 'the blob file open for the stalled client' });

    const margin = 3000;
    await waitFor(async () => (await dropped(archway, 'stalled')) > droppedBefore, {
      timeoutMs: CLIENT_IDLE_MS * 1.25 + margin,
      intervalMs: 50,
      description: 'archway to drop the stalled client',
    });
    const droppedAfter = performance.now() - stoppedAt;
    figures.push(`stalled client dropped ${(droppedAfter / 1000).toFixed(2)} s after it stopped reading (timeouts.clientIdle ${CLIENT_IDLE_MS / 1000} s)`);
    // Not before it had been stalled for clientIdle (the kernel buffers take a little first, so it is at least that).
    assert.ok(droppedAfter >= CLIENT_IDLE_MS - 100, `dropped after only ${Math.round(droppedAfter)} ms`);

    // The file handle and the socket are gone.
    await waitFor(async () => (await blobFileFds()) === fileFdsBefore, { timeoutMs: 2000, description: 'the blob file closed' });
    const settled = await settledFds(pid, { total: baseline.total, sockets: baseline.sockets });
    assert.ok(settled.total <= baseline.total, `descriptors back to ${baseline.total}: ${settled.total}\n${settled.targets.join('\n')}`);

    // The client, reading again, gets what was in flight and then the end: never the whole blob.
    reading = true;
    client.socket.resume();
    await waitFor(() => client.closed(), { timeoutMs: 5000, description: 'the client to see the connection end' });
    assert.ok(client.received() < layerSize, `cut short: ${client.received()} of ${layerSize}`);

    // The pin went with it: the blob is no longer in use, a purge removes it.
    const file = join(archway.cacheDir, 'blobs', 'sha256', digestHex(layerDigest).slice(0, 2), digestHex(layerDigest));
    await access(file);
    const purge = await http(`${archway.url}/_archway/cache/library/big:latest`, { method: 'DELETE', headers: { authorization: `Bearer ${TOKEN}` } });
    assert.equal(purge.status, 200, purge.body.toString());
    const report = purge.json<{ blobs: number; keptInUse: number }>();
    assert.equal(report.keptInUse, 0);
    assert.ok(report.blobs >= 1, JSON.stringify(report));
    await assert.rejects(access(file), 'the blob file is gone');
  });
});

describe('requests that never finish arriving, and idle connections', () => {
  it('half a request line is answered 408 and closed after timeouts.clientHeaders', async () => {
    const client = await rawClient(archway.port, { keep: true });
    const sentAt = performance.now();
    client.socket.write('GET /v2/library/big/manifests/lat');
    await waitFor(() => client.closed(), { timeoutMs: CLIENT_HEADERS_MS + 3000, intervalMs: 50, description: 'archway to close the half-sent request' });
    const ms = (client.closedAt() as number) - sentAt;
    figures.push(`half-sent request closed ${(ms / 1000).toFixed(2)} s after its first bytes (timeouts.clientHeaders ${CLIENT_HEADERS_MS / 1000} s)`);
    assert.ok(ms >= CLIENT_HEADERS_MS - 100, `closed after only ${Math.round(ms)} ms`);
    const [answer] = parseResponses(client.bytes(), false).responses;
    assert.equal(answer?.status, 408);
    assert.ok(answer?.headers.some(([k, v]) => k === 'x-content-type-options' && v === 'nosniff'));
  });

  it('an idle keep-alive connection is closed after timeouts.clientKeepAlive', async () => {
    const client = await rawClient(archway.port, { keep: true });
    client.socket.write('GET /v2/ HTTP/1.1\r\nHost: archway\r\n\r\n');
    await waitFor(() => parseResponses(client.bytes(), false).responses.length === 1, { timeoutMs: 5000, description: 'the answer' });
    const answeredAt = performance.now();
    await waitFor(() => client.closed(), { timeoutMs: KEEP_ALIVE_MS + 3000, intervalMs: 50, description: 'archway to close the idle connection' });
    const ms = (client.closedAt() as number) - answeredAt;
    assert.ok(ms >= KEEP_ALIVE_MS - 200, `closed after only ${Math.round(ms)} ms`);
  });
});

describe('server.maxConnections', () => {
  let limited: ArchwayProcess;
  const open: RawClient[] = [];
  const LIMIT = 4;

  before(async () => {
    limited = await startArchwayProcess({
      upstreams: { 'docker.io': { url: registry.url } },
      defaultUpstream: 'docker.io',
      server: { maxConnections: LIMIT },
      log: { level: 'warn' },
    });
  });

  after(async () => {
    for (const c of open) c.socket.destroy();
    await limited?.kill();
  });

  /** A connection that got an answer to a request (so archway counts it). */
  async function answered(client: RawClient, timeoutMs = 3000): Promise<boolean> {
    const request = Buffer.from('GET /v2/ HTTP/1.1\r\nHost: archway\r\n\r\n');
    const before = parseResponses(client.bytes(), false).responses.length;
    client.socket.write(request);
    try {
      await waitFor(() => client.closed() || parseResponses(client.bytes(), false).responses.length > before, { timeoutMs, description: 'an answer' });
    } catch {
      return false;
    }
    return parseResponses(client.bytes(), false).responses.length > before;
  }

  it('beyond it a new connection is closed without an answer; once one closes, a new one is served', async () => {
    // The start-up probe's connection may still be closing on archway's side: fill up as it goes.
    while (open.length < LIMIT) {
      const c = await rawClient(limited.port, { keep: true });
      if (await answered(c)) open.push(c);
      else c.socket.destroy();
    }
    for (const c of open) assert.ok(!c.closed(), 'the first connections stay open');

    const extra = await rawClient(limited.port, { keep: true });
    assert.equal(await answered(extra, 2000), false, 'the connection over the limit got no answer');
    assert.ok(extra.closed(), 'and was closed');
    // The ones within the limit still work.
    assert.ok(await answered(open[0] as RawClient));

    (open.pop() as RawClient).socket.destroy();
    let next: RawClient | undefined;
    await waitFor(
      async () => {
        next?.socket.destroy();
        next = await rawClient(limited.port, { keep: true });
        return answered(next, 1000);
      },
      { timeoutMs: 5000, description: 'a new connection to be served' },
    );
    assert.ok(next);
    const count = await new Promise<number>((resolve) => {
      // /metrics over the served connection (a new one would be over the limit).
      const c = next as RawClient;
      const before = c.bytes().length;
      c.socket.write('GET /metrics HTTP/1.1\r\nHost: archway\r\n\r\n');
      const check = setInterval(() => {
        const [r] = parseResponses(c.bytes().subarray(before), false).responses;
        if (!r) return;
        clearInterval(check);
        const line = r.body.toString().split('\n').find((l) => l.startsWith('archway_client_connections_dropped_total{reason="max-connections"}'));
        resolve(Number(line?.split(' ')[1] ?? 0));
      }, 50);
    });
    assert.ok(count >= 1, `counted: ${count}`);
    open.push(next);
  });
});

describe('over HTTPS, on a server.ports listener', () => {
  let secure: ArchwayProcess;
  let extraPort: number;
  let ca: string;
  let dispatcher: Agent;

  before(async () => {
    const pki = join(work, 'pki');
    await mkdir(pki, { recursive: true });
    const testCa = await makeTestCa(pki);
    const cert = await issueServerCert(testCa, { dir: pki, name: 'archway', commonName: 'archway', serialHex: '5A11ED' });
    ca = await readFile(testCa.certPath, 'utf8');
    dispatcher = new Agent({ connect: { ca } });
    extraPort = await freePort();
    secure = await startArchwayProcess({
      upstreams: { 'docker.io': { url: registry.url } },
      defaultUpstream: 'docker.io',
      server: { tls: { cert: cert.certPath, key: cert.keyPath }, ports: [extraPort] },
      timeouts: { clientIdle: `${CLIENT_IDLE_MS}ms` },
      log: { level: 'warn' },
    });
    const base = `https://127.0.0.1:${extraPort}`;
    for (const path of ['manifests/latest', `manifests/${image.manifests[0]?.digest}`, `blobs/${layerDigest}`]) {
      const r = await http(`${base}/v2/library/big/${path}`, { headers: { accept: ACCEPT.all }, dispatcher });
      assert.equal(r.status, 200, path);
    }
  });

  after(async () => {
    await dispatcher?.close();
    await secure?.kill();
  });

  it('a client that stops reading is closed within clientIdle and a margin', async () => {
    const metric = () => scrapeMetric(secure.url, 'archway_client_connections_dropped_total', { reason: 'stalled' }, dispatcher);
    const before = await metric();
    let received = 0;
    const socket = tlsConnect({ host: '127.0.0.1', port: extraPort, ca });
    socket.on('error', () => undefined);
    socket.on('data', (d: Buffer) => {
      received += d.length;
      if (received >= 64 * 1024) socket.pause();
    });
    await new Promise<void>((resolve) => socket.once('secureConnect', () => resolve()));
    socket.write(blobRequest());
    await waitFor(() => received >= 64 * 1024, { timeoutMs: 5000, description: 'the first 64 KiB' });
    const stoppedAt = performance.now();
    await waitFor(async () => (await metric()) > before, { timeoutMs: CLIENT_IDLE_MS * 1.25 + 3000, intervalMs: 50, description: 'archway to drop the stalled TLS client' });
    const ms = performance.now() - stoppedAt;
    figures.push(`stalled HTTPS client (server.ports listener) dropped ${(ms / 1000).toFixed(2)} s after it stopped reading`);
    assert.ok(ms >= CLIENT_IDLE_MS - 100, `dropped after only ${Math.round(ms)} ms`);
    socket.destroy();
  });
});

describe('a client waiting for a slow upstream', () => {
  let front: FaultFront;
  let proc: ArchwayProcess;
  let slow: BuiltImage;

  before(async () => {
    slow = await buildImage({ dir: join(work, 'slow'), tag: 'latest', platforms: [{ os: 'linux', architecture: 'amd64' }], format: 'oci', layerSizes: [96 * 1024], seed: 'slow-fill' });
    await pushLayout(slow, { hostPort: registry.hostPort, name: 'library/slow' });
    front = await startFaultFront(registry);
    proc = await startArchwayProcess({
      upstreams: { 'docker.io': { url: front.url } },
      defaultUpstream: 'docker.io',
      timeouts: { clientIdle: `${CLIENT_IDLE_MS}ms` },
      log: { level: 'warn' },
    });
    assert.equal((await http(`${proc.url}/v2/library/slow/manifests/latest`, { headers: { accept: ACCEPT.all } })).status, 200);
  });

  after(async () => {
    await proc?.kill();
    await front?.stop();
  });

  it('is not cut while archway itself waits for the bytes, longer than clientIdle between chunks', async () => {
    const layer = slow.manifests[0]?.layers[0];
    assert.ok(layer);
    const size = slow.blobs.get(layer.digest)?.size ?? 0;
    const pauseMs = CLIENT_IDLE_MS + 1000;
    front.setMode({ kind: 'trickle', chunkBytes: Math.ceil(size / 3), pauseMs });
    const before = await dropped(proc, 'stalled');
    const started = performance.now();
    const r = await http(`${proc.url}/v2/library/slow/blobs/${layer.digest}`);
    const ms = performance.now() - started;
    front.setMode({ kind: 'pass' });
    assert.equal(r.status, 200);
    assert.equal(sha256Digest(r.body), layer.digest, 'the whole blob');
    assert.ok(ms >= 2 * pauseMs, `the upstream was slow: ${Math.round(ms)} ms`);
    assert.equal(await dropped(proc, 'stalled'), before, 'not dropped as stalled');
  });
});
