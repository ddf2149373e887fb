// Virtual images and repository grants: a principal must be allowed every
// member repository of a virtual name, not just the name. bob may pull
// multi/app and amd64/app but not arm64v8/app, so the virtual name is 403
// DENIED to him for everything (the tag, the tag list, a member's manifest
// and blob by digest, the platform inspector), while the member he may pull
// stays open to him, and alice, granted every member, gets the whole index.
// archway runs as its own process, configured by its YAML file.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import bcrypt from 'bcryptjs';
import { startArchwayProcess, type ArchwayProcess } from '../harness/archway-process.ts';
import { ACCEPT, http, type HttpAnswer } from '../harness/http.ts';
import { buildImage, type BuiltImage } from '../harness/images.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

const UPSTREAM = 'registry.test';
const USERS = { alice: 'alice-Pa55', bob: 'bob-Pa55' };

let work: string;
let registry: RegistryHandle;
let archway: ArchwayProcess;
let amd64: BuiltImage;
let arm64: BuiltImage;

const basic = (user: keyof typeof USERS) => `Basic ${Buffer.from(`${user}:${USERS[user]}`).toString('base64')}`;
const errorCode = (r: HttpAnswer) => r.json<{ errors: Array<{ code: string }> }>().errors[0]?.code;
const get = (path: string, user: keyof typeof USERS, method: 'GET' | 'HEAD' = 'GET') =>
  http(`${archway.url}${path}`, { method, headers: { authorization: basic(user), accept: ACCEPT.all } });

before(async () => {
  work = await tempDir('archway-virtual-grants-');
  registry = await startRegistry();
  const single = (arch: string, seed: string) =>
    buildImage({ dir: join(work, arch), tag: '1', platforms: [{ os: 'linux', architecture: arch }], index: false, format: 'oci', layerSizes: [2048], seed });
  amd64 = await single('amd64', 'grants-amd64');
  arm64 = await single('arm64', 'grants-arm64');
  await pushLayout(amd64, { hostPort: registry.hostPort, name: 'amd64/app' });
  await pushLayout(arm64, { hostPort: registry.hostPort, name: 'arm64v8/app' });
  const htpasswd = join(work, 'htpasswd');
  await writeFile(htpasswd, `${Object.entries(USERS).map(([u, p]) => `${u}:${bcrypt.hashSync(p, 4)}`).join('\n')}\n`);
  archway = await startArchwayProcess({
    upstreams: { [UPSTREAM]: { url: registry.url } },
    defaultUpstream: UPSTREAM,
    auth: { htpasswd, users: { alice: ['multi/app', 'amd64/app', 'arm64v8/app'], bob: ['multi/app', 'amd64/app'] } },
    virtual: { 'multi/app': { members: { 'linux/amd64': 'amd64/app', 'linux/arm64': 'arm64v8/app' } } },
  });
});

after(async () => {
  await archway?.kill();
  await registry?.stop();
  await removeDir(work);
});

describe('grants under a virtual name', () => {
  it('a principal granted every member gets the assembled index, and members by digest', async () => {
    const r = await get('/v2/multi/app/manifests/1', 'alice');
    assert.equal(r.status, 200, r.body.toString());
    const index = r.json<{ manifests: Array<{ digest: string }> }>();
    assert.deepEqual(index.manifests.map((m) => m.digest).sort(), [amd64.topDigest, arm64.topDigest].sort());
    assert.equal((await get(`/v2/multi/app/manifests/${arm64.topDigest}`, 'alice')).status, 200);
  });

  it('a principal granted the name but not every member is DENIED everything under it, even what alice made known', async () => {
    const layer = arm64.manifests[0]!.layers[0]!.digest;
    for (const [what, path, method] of [
      ['tag', '/v2/multi/app/manifests/1', 'GET'],
      ['tag, HEAD', '/v2/multi/app/manifests/1', 'HEAD'],
      ['arm64 member manifest by digest', `/v2/multi/app/manifests/${arm64.topDigest}`, 'GET'],
      ['amd64 member manifest by digest', `/v2/multi/app/manifests/${amd64.topDigest}`, 'GET'],
      ['arm64 layer', `/v2/multi/app/blobs/${layer}`, 'GET'],
      ['tag list', '/v2/multi/app/tags/list', 'GET'],
      ['platform inspector', '/_archway/platforms/multi/app:1', 'GET'],
    ] as const) {
      const r = await get(path, 'bob', method);
      assert.equal(r.status, 403, `${what}: ${r.status} ${r.body.toString().slice(0, 200)}`);
      if (method === 'GET') assert.equal(errorCode(r), 'DENIED', what);
    }
    assert.ok(!archway.output().includes(USERS.bob), 'a password is never logged');
  });

  it('the member the principal is granted stays open to him; the other is not', async () => {
    const own = await get('/v2/amd64/app/manifests/1', 'bob');
    assert.equal(own.status, 200);
    assert.equal(own.headers['docker-content-digest'], amd64.topDigest);
    assert.equal((await get('/v2/arm64v8/app/manifests/1', 'bob')).status, 403);
  });
});
