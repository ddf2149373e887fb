// The whole configuration reloads in a real archway process, on SIGHUP and on
// POST /_archway/reload: an alias, a virtual image and a platform rule on a
// new listener take effect for new requests; a blob in flight through an
// upstream the reload removes finishes under the old configuration, bytes
// intact; a file with a typo'd field, or one that changes a restart-only
// field, changes nothing and the answer (or log line) names the field; a
// listener the reload drops is closed.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { stringify } from 'yaml';
import { startArchwayProcess, type ArchwayProcess } from '../harness/archway-process.ts';
import { sha256Digest } from '../harness/digest.ts';
import { startFaultFront, type FaultFront } from '../harness/fault-front.ts';
import { ACCEPT, http } from '../harness/http.ts';
import { buildImage, type BuiltImage } from '../harness/images.ts';
import { OCI } from '../harness/media-types.ts';
import { manifestFor } from '../harness/platforms.ts';
import { freePort } from '../harness/ports.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

const TOKEN = 'reload-admin-token-0123456789';
const admin = { authorization: `Bearer ${TOKEN}` };

let work: string;
let registry: RegistryHandle;
let front: FaultFront;
let proc: ArchwayProcess;
/** team/app:1, linux/amd64 + linux/arm64. */
let image: BuiltImage;
/** The listener the reload adds, with a rule resolving every index to linux/arm64. */
let armPort: number;

/** The configuration archway starts with; `reloaded` is what the tests change it to. */
const initial = () => ({
  upstreams: {
    'reg.test': { url: registry.url },
    // Through the fault front: its blobs trickle, and the reload removes it.
    'slow.test': { url: front.url },
  },
  defaultUpstream: 'reg.test',
  admin: { token: TOKEN },
});
const reloaded = () => ({
  upstreams: { 'reg.test': { url: registry.url, aliases: ['mirror.example'] } },
  defaultUpstream: 'reg.test',
  admin: { token: TOKEN },
  server: { ports: [armPort] },
  platform: { rules: [{ match: { port: armPort }, platform: 'linux/arm64', mode: 'resolve' }] },
  virtual: { 'multi/app': { members: { 'linux/arm64': 'team/app' } } },
});

/** The file as the harness wrote it (its host, port, cache directory, shutdownTimeout), with these sections. */
async function writeConfig(config: Record<string, unknown>): Promise<void> {
  const server = { shutdownTimeout: '5s', ...(config.server as object | undefined), host: '127.0.0.1', port: proc.port };
  await writeFile(proc.configPath, stringify({ ...config, server, cache: { dir: proc.cacheDir, ...(config.cache as object | undefined) } }));
}

const reload = () => http(`${proc.url}/_archway/reload`, { method: 'POST', headers: admin });

async function sighup(expect: RegExp): Promise<string> {
  const offset = proc.output().length;
  proc.notify('SIGHUP');
  await proc.waitForOutput(expect, { fromOffset: offset });
  return proc.output().slice(offset);
}

before(async () => {
  work = await tempDir('archway-reload-e2e-');
  registry = await startRegistry();
  front = await startFaultFront(registry);
  image = await buildImage({
    dir: join(work, 'app'),
    tag: '1',
    platforms: [
      { os: 'linux', architecture: 'amd64' },
      { os: 'linux', architecture: 'arm64' },
    ],
    format: 'oci',
    layerSizes: [256 * 1024],
    seed: 'reload-app',
  });
  await pushLayout(image, { hostPort: registry.hostPort, name: 'team/app' });
  armPort = await freePort();
  proc = await startArchwayProcess(initial());
});
after(async () => {
  await proc?.kill();
  await front?.stop();
  await registry?.stop();
  if (work) await removeDir(work);
});

describe('reload of the whole configuration', () => {
  it('puts a new configuration in use for new requests while a blob in flight finishes under the old one', async () => {
    const amd64 = manifestFor(image, 'linux/amd64');
    const layer = amd64.layers[0] ?? assert.fail('no layer');
    assert.equal((await http(`${proc.url}/v2/mirror.example/team/app/manifests/1`, { headers: { accept: ACCEPT.all } })).status, 404, 'no such alias yet');
    assert.equal((await http(`${proc.url}/v2/multi/app/manifests/1`, { headers: { accept: ACCEPT.all } })).status, 404, 'no such virtual image yet');

    // A blob through slow.test, trickling: the first bytes are here when the reload happens.
    front.setMode({ kind: 'trickle', chunkBytes: 16 * 1024, pauseMs: 80 });
    const inFlight = await request(`${proc.url}/v2/slow.test/team/app/blobs/${layer.digest}`);
    assert.equal(inFlight.statusCode, 200);
    const chunks: Buffer[] = [];
    const reader = inFlight.body[Symbol.asyncIterator]();
    const first = await reader.next();
    chunks.push(first.value as Buffer);

    await writeConfig(reloaded());
    const answer = await reload();
    const reloadedAt = Date.now();
    assert.equal(answer.status, 200, answer.body.toString());
    const { changes, generation } = answer.json<{ changes: string[]; generation: number }>();
    assert.equal(generation, 2);
    assert.deepEqual(changes, ['upstreams: -slow.test ~reg.test', 'platform rules', 'virtual: +multi/app', `listeners: +${armPort}`]);

    // New requests: the alias routes, the virtual image is assembled, the new listener applies its rule.
    const aliased = await http(`${proc.url}/v2/mirror.example/team/app/manifests/1`, { headers: { accept: ACCEPT.all } });
    assert.equal(aliased.status, 200);
    assert.equal(aliased.headers['docker-content-digest'], image.topDigest);
    const virtual = await http(`${proc.url}/v2/multi/app/manifests/1`, { headers: { accept: ACCEPT.all } });
    assert.equal(virtual.status, 200, virtual.body.toString());
    const entries = virtual.json<{ manifests: Array<{ digest: string; platform: { architecture: string } }> }>().manifests;
    assert.deepEqual(entries.map((e) => [e.platform.architecture, e.digest]), [['arm64', manifestFor(image, 'linux/arm64').digest]]);
    const resolved = await http(`http://127.0.0.1:${armPort}/v2/team/app/manifests/1`, { headers: { accept: `${OCI.index}, ${OCI.manifest}` } });
    assert.equal(resolved.status, 200);
    assert.equal(resolved.headers['x-archway-platform'], 'linux/arm64');
    assert.equal(resolved.headers['docker-content-digest'], manifestFor(image, 'linux/arm64').digest);
    const frontBefore = front.requests().length;
    assert.equal((await http(`${proc.url}/v2/slow.test/team/app/blobs/${layer.digest}`)).status, 404, 'slow.test is gone for new requests');
    assert.equal(front.requests().length, frontBefore, 'and nothing new goes to it');

    // The request that began before the reload finishes under the old configuration.
    for (let next = await reader.next(); !next.done; next = await reader.next()) chunks.push(next.value as Buffer);
    const body = Buffer.concat(chunks);
    assert.equal(body.length, layer.size);
    assert.equal(sha256Digest(body), layer.digest);
    assert.ok((front.lastBlobFinishedAt() ?? 0) > reloadedAt, 'the upstream was still sending it after the reload');
    front.setMode({ kind: 'pass' });
  });

  it('refuses a file with a typo, naming the field, on SIGHUP and POST; nothing changes', async () => {
    const good = reloaded();
    await writeConfig({ ...good, platform: { rules: good.platform.rules, defualt: 'linux/arm64' } });
    const log = await sighup(/SIGHUP: reload failed; keeping what was in use/);
    assert.match(log, /platform: Unrecognized key: \\"defualt\\"/, 'the log line names the field');
    const answer = await reload();
    assert.equal(answer.status, 422);
    const error = answer.json<{ errors: Array<{ code: string; detail: { errors: string[] } }> }>().errors[0];
    assert.equal(error?.code, 'CONFIG_INVALID');
    assert.deepEqual(error?.detail.errors, ['platform: Unrecognized key: "defualt"']);
    assert.doesNotMatch(answer.body.toString(), /\bat .*\.ts:\d+/, 'no stack trace');
    assert.equal((await http(`http://127.0.0.1:${armPort}/v2/team/app/manifests/1`, { headers: { accept: OCI.index } })).headers['x-archway-platform'], 'linux/arm64', 'the rule in use stays');

    assert.equal((await http(`${proc.url}/_archway/reload`, { method: 'POST' })).status, 401, 'the admin token is needed');

    await writeConfig({ ...good, cache: { maxSize: '1GiB' } });
    const restart = await reload();
    assert.equal(restart.status, 422);
    assert.deepEqual(restart.json<{ errors: Array<{ detail: { errors: string[] } }> }>().errors[0]?.detail.errors, ['cache: changes only with a restart']);
    assert.equal((await http(`${proc.url}/v2/multi/app/manifests/1`, { headers: { accept: ACCEPT.all } })).status, 200, 'the virtual image stays');
  });

  it('closes a listener the configuration no longer has (SIGHUP)', async () => {
    await writeConfig(initial());
    const log = await sighup(/SIGHUP: reloaded/);
    assert.match(log, new RegExp(`listeners: -${armPort}`));
    await assert.rejects(http(`http://127.0.0.1:${armPort}/v2/`), /ECONNREFUSED/);
    assert.equal((await http(`${proc.url}/v2/multi/app/manifests/1`, { headers: { accept: ACCEPT.all } })).status, 404, 'the virtual image is gone');
  });
});
