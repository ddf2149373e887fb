// The guarded connector with real sockets on loopback and a resolver the
// test controls (so names can lead to 127.0.0.2 and a "public" upstream can
// exist without any connection leaving loopback): what it refuses is never
// connected to, what it allows is connected to at the address it checked.
import assert from 'node:assert/strict';
import type { LookupAddress } from 'node:dns';
import { readFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { after, before, describe, it } from 'node:test';
import { Agent, request } from 'undici';
import { AddressPolicy, AddressRefusedError, type AddressPolicyOptions } from '../../src/upstream/address-policy.ts';
import { guardedConnector, type Resolve } from '../../src/upstream/guarded-connect.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';
import { issueServerCert, makeTestCa } from '../harness/tls-certs.ts';

interface Counted {
  server: Server;
  connections: number;
}

const listeners = new Map<string, Counted>();
let port: number;

async function listenOn(host: string, p: number): Promise<Counted> {
  const counted: Counted = { server: createServer((_req, res) => res.end(`hello from ${host}`)), connections: 0 };
  counted.server.on('connection', () => counted.connections++);
  await new Promise<void>((resolve, reject) => {
    counted.server.once('error', reject);
    counted.server.listen(p, host, () => resolve());
  });
  return counted;
}

before(async () => {
  const two = await listenOn('127.0.0.2', 0);
  port = (two.server.address() as AddressInfo).port;
  listeners.set('127.0.0.2', two);
  listeners.set('127.0.0.3', await listenOn('127.0.0.3', port));
});

after(async () => {
  for (const { server } of listeners.values()) {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});

function connections(host: string): number {
  return listeners.get(host)?.connections ?? -1;
}

/** A resolver from a table; a name it does not know is an error, never the machine's DNS. */
function table(names: Record<string, string | (() => string)>, calls: string[] = []): Resolve {
  return async (hostname) => {
    calls.push(hostname);
    const entry = names[hostname];
    if (entry === undefined) throw Object.assign(new Error(`unknown name ${hostname}`), { code: 'ENOTFOUND' });
    const address = typeof entry === 'function' ? entry() : entry;
    return [{ address, family: address.includes(':') ? 6 : 4 } satisfies LookupAddress];
  };
}

async function attempt(policy: Partial<AddressPolicyOptions>, resolve: Resolve, url: string, tls: { ca?: string } = {}) {
  const refused: AddressRefusedError[] = [];
  const opts = { upstreamHost: 'registry.test', allow: [], deny: [], ...policy };
  const agent = new Agent({
    connect: guardedConnector({ connect: { timeout: 2_000, ...tls }, policy: new AddressPolicy(opts), upstreamHost: opts.upstreamHost, resolve, onRefused: (e) => refused.push(e) }),
  });
  try {
    const res = await request(url, { dispatcher: agent });
    return { ok: true as const, status: res.statusCode, body: await res.body.text(), refused };
  } catch (err) {
    return { ok: false as const, err, refused };
  } finally {
    await agent.close();
  }
}

describe('guarded connector', () => {
  it('refuses a hop from a public upstream to a loopback name or literal, without connecting', async () => {
    const before2 = connections('127.0.0.2');
    const resolve = table({ 'registry.test': '203.0.113.10', 'internal.test': '127.0.0.2' });
    for (const url of [`http://internal.test:${port}/latest/meta-data`, `http://127.0.0.2:${port}/latest/meta-data`]) {
      const r = await attempt({}, resolve, url);
      assert.equal(r.ok, false, url);
      assert.ok(r.err instanceof AddressRefusedError, String(r.err));
      assert.equal(r.err.reason, 'inward');
      assert.equal(r.err.address, '127.0.0.2');
      assert.equal(r.err.redirected, true);
      assert.doesNotMatch(r.err.message, /meta-data/, 'the path is never in the error');
      assert.equal(r.refused.length, 1, 'reported once');
    }
    assert.equal(connections('127.0.0.2'), before2, 'no connection reached 127.0.0.2');
  });

  it('allows the same hop from a loopback upstream, at the address it checked', async () => {
    const before2 = connections('127.0.0.2');
    const r = await attempt({}, table({ 'registry.test': '127.0.0.1', 'internal.test': '127.0.0.2' }), `http://internal.test:${port}/`);
    assert.ok(r.ok, String(!r.ok && r.err));
    assert.equal(r.body, 'hello from 127.0.0.2');
    assert.equal(connections('127.0.0.2'), before2 + 1);
  });

  it('network.deny refuses even the upstream host itself, and allowRedirectsTo cannot reopen it', async () => {
    const before2 = connections('127.0.0.2');
    const r = await attempt({ deny: ['127.0.0.2/32'], allow: ['127.0.0.0/8', 'registry.test'] }, table({ 'registry.test': '127.0.0.2' }), `http://registry.test:${port}/v2/`);
    assert.equal(r.ok, false);
    assert.ok(r.err instanceof AddressRefusedError);
    assert.equal(r.err.reason, 'network.deny');
    assert.equal(r.err.redirected, false);
    assert.equal(connections('127.0.0.2'), before2);
  });

  it('allowRedirectsTo opens a host a public upstream could not otherwise reach', async () => {
    const before3 = connections('127.0.0.3');
    const r = await attempt({ allow: ['internal.test'] }, table({ 'registry.test': '203.0.113.10', 'internal.test': '127.0.0.3' }), `http://internal.test:${port}/`);
    assert.ok(r.ok, String(!r.ok && r.err));
    assert.equal(r.body, 'hello from 127.0.0.3');
    assert.equal(connections('127.0.0.3'), before3 + 1);
  });

  it('resolves once per connection and connects to what it checked (no rebinding window)', async () => {
    const before2 = connections('127.0.0.2');
    const before3 = connections('127.0.0.3');
    let answers = 0;
    const calls: string[] = [];
    // A name that answers an allowed address when checked and a denied one on any later lookup.
    const resolve = table({ 'registry.test': '127.0.0.1', 'flip.test': () => (answers++ === 0 ? '127.0.0.3' : '127.0.0.2') }, calls);
    const r = await attempt({ deny: ['127.0.0.2/32'] }, resolve, `http://flip.test:${port}/`);
    assert.ok(r.ok, String(!r.ok && r.err));
    assert.equal(r.body, 'hello from 127.0.0.3');
    assert.deepEqual(calls.filter((c) => c === 'flip.test'), ['flip.test']);
    assert.equal(connections('127.0.0.3'), before3 + 1);
    assert.equal(connections('127.0.0.2'), before2);
  });

  it('a lookup failure is the error, not a fallback to the machine resolver', async () => {
    const r = await attempt({}, table({ 'registry.test': '127.0.0.1' }), `http://nowhere.test:${port}/`);
    assert.equal(r.ok, false);
    assert.equal((r.err as NodeJS.ErrnoException).code, 'ENOTFOUND');
  });

  it('over TLS, verifies and names (SNI) the host it resolved, not the address it connected to', async () => {
    const dir = await tempDir('archway-guarded-tls-');
    const ca = await makeTestCa(dir);
    const cert = await issueServerCert(ca, { dir, name: 'registry', commonName: 'registry.test', serialHex: '1f', ips: [], dnsNames: ['registry.test'] });
    const names: Array<string | false | null> = [];
    const server = createHttpsServer({ cert: await readFile(cert.certPath), key: await readFile(cert.keyPath) }, (req, res) => {
      names.push((req.socket as TLSSocket).servername);
      res.end('tls ok');
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.2', () => resolve()));
    const tlsPort = (server.address() as AddressInfo).port;
    try {
      const trust = { ca: await readFile(ca.certPath, 'utf8') };
      const resolve = table({ 'registry.test': '127.0.0.2', 'other.test': '127.0.0.2' });
      const good = await attempt({}, resolve, `https://registry.test:${tlsPort}/v2/`, trust);
      assert.ok(good.ok, String(!good.ok && good.err));
      assert.equal(good.body, 'tls ok');
      assert.deepEqual(names, ['registry.test']);
      const wrongName = await attempt({ allow: ['other.test'] }, resolve, `https://other.test:${tlsPort}/v2/`, trust);
      assert.equal(wrongName.ok, false);
      assert.equal((wrongName.err as NodeJS.ErrnoException).code, 'ERR_TLS_CERT_ALTNAME_INVALID');
    } finally {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await removeDir(dir);
    }
  });
});
