// A reload in-process, on loopback listeners: which parts a new generation
// carries over, that a removed upstream's connection pool stays open until the
// request in flight through it has finished (and is closed then), and that a
// reload that cannot open a listener changes nothing.
import assert from 'node:assert/strict';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { request } from 'undici';
import { stringify } from 'yaml';
import { ConfigError, loadConfigFile } from '../../src/config/load.ts';
import { digestOf } from '../../src/oci/digest.ts';
import { buildArchway, type Archway } from '../../src/server.ts';
import { http } from '../harness/http.ts';
import { metricValue } from '../harness/in-process-services.ts';
import { freePort } from '../harness/ports.ts';
import { waitFor } from '../harness/process.ts';
import { deterministicBytes } from '../harness/random.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

const BLOB = deterministicBytes('reload-blob', 256 * 1024);
const DIGEST = digestOf(BLOB);

/** A registry that names itself in tags/list; its blob sends half, then waits for `release`. */
function upstream(name: string) {
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  const server = createServer((req, res) => {
    if (req.url === '/v2/team/app/tags/list') {
      res.writeHead(200, { 'content-type': 'application/json' });
      return res.end(JSON.stringify({ name: 'team/app', tags: [name] }));
    }
    if (req.url === `/v2/team/app/blobs/${DIGEST}`) {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': BLOB.length });
      res.write(BLOB.subarray(0, BLOB.length / 2));
      return void released.then(() => res.end(BLOB.subarray(BLOB.length / 2)));
    }
    res.writeHead(404, { 'content-type': 'application/json' }).end('{"errors":[{"code":"NAME_UNKNOWN","message":"no"}]}');
  });
  return { server, release, url: () => `http://127.0.0.1:${(server.address() as AddressInfo).port}` };
}

describe('reload: generations in process', { timeout: 30_000 }, () => {
  const a = upstream('a');
  const b = upstream('b');
  let work: string;
  let configFile: string;
  let archway: Archway;
  let base: string;
  const logs: Array<Record<string, unknown>> = [];
  const config = (extra: Record<string, unknown> = {}) => ({
    server: { host: '127.0.0.1', port: 0, shutdownTimeout: '5s' },
    cache: { dir: join(work, 'cache') },
    upstreams: { 'a.test': { url: a.url() }, 'b.test': { url: b.url() } },
    defaultUpstream: 'a.test',
    log: { level: 'debug' },
    ...extra,
  });

  before(async () => {
    for (const u of [a, b]) await new Promise<void>((resolve) => u.server.listen(0, '127.0.0.1', resolve));
    work = await tempDir('archway-reload-');
    configFile = join(work, 'archway.yaml');
    await writeFile(configFile, stringify(config()));
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const line of chunk.toString('utf8').split('\n')) if (line) logs.push(JSON.parse(line) as Record<string, unknown>);
        cb();
      },
    });
    archway = await buildArchway(loadConfigFile(configFile), { configFile, logger: pino({ level: 'debug' }, sink) });
    await archway.listen();
    base = `http://127.0.0.1:${(archway.app.server.address() as AddressInfo).port}`;
  });
  after(async () => {
    a.release();
    b.release();
    await archway?.close();
    for (const u of [a, b]) u.server.close();
    if (work) await removeDir(work);
  });

  const reloadWith = async (extra: Record<string, unknown>) => {
    await writeFile(configFile, stringify(config(extra)));
    return archway.reload();
  };

  it('carries an unchanged upstream over; a request in flight keeps a removed upstream open until it ends', async () => {
    const first = archway.services.current();
    // A blob from a.test, half sent: the request holds generation 1.
    const inFlight = await request(`${base}/v2/team/app/blobs/${DIGEST}`);
    assert.equal(inFlight.statusCode, 200);

    const second = await reloadWith({ defaultUpstream: 'b.test' });
    assert.deepEqual(second.changes, ['defaultUpstream b.test']);
    const g2 = archway.services.current();
    assert.equal(g2.id, 2);
    assert.equal(g2.upstreams.get('a.test'), first.upstreams.get('a.test'), 'unchanged: the same client, token cache and health');
    assert.equal(g2.manifests, first.manifests, 'the core outlives the generation');
    assert.deepEqual((await http(`${base}/v2/team/app/tags/list`)).json(), { name: 'team/app', tags: ['b'] }, 'new requests route by the new config');

    // a.test goes: generation 1 still has a request on it, so its pool stays open.
    const third = await reloadWith({ defaultUpstream: 'b.test', upstreams: { 'b.test': { url: b.url() } } });
    assert.deepEqual(third.changes, ['upstreams: -a.test']);
    assert.equal((await http(`${base}/v2/a.test/team/app/tags/list`)).status, 404, 'a.test is not routed any more (the default upstream, which has no such repository)');
    a.release();
    const body = Buffer.from(await inFlight.body.arrayBuffer());
    assert.equal(digestOf(body), DIGEST, 'the request in flight finished under the old configuration, bytes intact');

    // Once its requests are over, the old generations retire and a.test's pool is closed.
    const oldA = first.upstreams.get('a.test');
    assert.ok(oldA);
    await waitFor(() => logs.filter((l) => l.msg === 'configuration generation retired').length >= 2, { timeoutMs: 5000, description: 'generations 1 and 2 retired' });
    await assert.rejects(oldA.headBlob('team/app', DIGEST), /UND_ERR_(DESTROYED|CLOSED)/, 'a removed upstream connects nowhere once retired');
    assert.equal(await metricValue(archway.metrics, 'archway_config_generation'), 3);
    assert.equal(await metricValue(archway.metrics, 'archway_config_generations_draining'), 0);
    assert.equal(await metricValue(archway.metrics, 'archway_config_reloads_total', { outcome: 'applied' }), 2);
  });

  it('a listener it cannot open refuses the reload, and nothing changes', async () => {
    const taken = createServer();
    taken.listen(0, '127.0.0.1');
    await once(taken, 'listening');
    const port = (taken.address() as AddressInfo).port;
    const before = archway.services.current();
    await assert.rejects(
      reloadWith({ defaultUpstream: 'a.test', server: { host: '127.0.0.1', port: 0, shutdownTimeout: '5s', ports: [port] } }),
      (err: unknown) => err instanceof ConfigError && /server\.ports: cannot listen on \d+ \(EADDRINUSE\)/.test(err.message),
    );
    assert.equal(archway.services.current(), before, 'still the generation in use before');
    assert.equal(await metricValue(archway.metrics, 'archway_config_reloads_total', { outcome: 'refused' }), 1);
    taken.close();

    const free = await freePort();
    const opened = await reloadWith({ defaultUpstream: 'b.test', upstreams: { 'b.test': { url: b.url() } }, server: { host: '127.0.0.1', port: 0, shutdownTimeout: '5s', ports: [free] } });
    assert.deepEqual(opened.changes, [`listeners: +${free}`]);
    assert.equal((await http(`http://127.0.0.1:${free}/v2/`)).status, 200, 'the new listener answers');
  });

  it('carries per-client limits over while they stay the same, so requests in flight keep counting', async () => {
    const limits = { perClient: { concurrentRequests: 4 } };
    const upstreams = { 'b.test': { url: b.url() } };
    await reloadWith({ defaultUpstream: 'b.test', upstreams, limits });
    const first = archway.services.current().limiter;
    assert.ok(first);
    await reloadWith({ defaultUpstream: 'b.test', upstreams, limits, platform: { default: 'linux/arm64' } });
    assert.equal(archway.services.current().limiter, first, 'unchanged limits: the same counts');
    await reloadWith({ defaultUpstream: 'b.test', upstreams, limits: { perClient: { concurrentRequests: 8 } } });
    assert.notEqual(archway.services.current().limiter, first, 'changed limits: new ones');
  });
});
