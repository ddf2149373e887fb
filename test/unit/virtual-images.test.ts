// Which requests name a virtual image, what its members resolve to, the
// config rules for `virtual`, and the assembled index's bytes.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseConfig } from '../../src/config/load.ts';
import type { ConfigInput } from '../../src/config/schema.ts';
import { digestOf, type Digest } from '../../src/oci/digest.ts';
import { MediaType } from '../../src/oci/media-types.ts';
import { Router } from '../../src/routing/router.ts';
import type { Upstream } from '../../src/upstream/upstream.ts';
import { assembleIndex, indexFormatFor } from '../../src/virtual/assemble.ts';
import { VirtualCatalog } from '../../src/virtual/virtual-catalog.ts';

const client = (name: string) => ({ name }) as Upstream;

function setUp(virtual: ConfigInput['virtual']) {
  const config = parseConfig({
    upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' }, 'ghcr.io': { url: 'http://127.0.0.1:2' } },
    defaultUpstream: 'docker.io',
    virtual,
  });
  const router = new Router(
    new Map([
      ['docker.io', { client: client('docker.io'), aliases: ['index.docker.io'] }],
      ['ghcr.io', { client: client('ghcr.io'), aliases: [] }],
    ]),
    'docker.io',
  );
  const images = new VirtualCatalog(config.virtual, config.defaultUpstream, router);
  /** The members of what the request names, as `platform=upstream/repository`, or undefined when it is no virtual image. */
  const members = (name: string, ns?: string) =>
    images.match(router.resolve(name, ns))?.members.map((m) => `${m.key}=${m.route.upstream.name}/${m.route.repository}`);
  return { members };
}

describe('virtual image names', () => {
  const { members } = setUp({
    'multi/node': { members: { 'linux/amd64': 'amd64/node', 'linux/arm64/v8': 'arm64v8/node', 'linux/ppc64le': 'ghcr.io/acme/node-ppc' } },
    'hub/*': { members: 'dockerhub' },
    'pair/*': { members: { 'linux/amd64': 'x86/{name}', 'linux/s390x': 'ghcr.io/z/{name}' } },
    tool: { members: { 'linux/amd64': 'amd64/{name}' } },
    'on-ghcr': { upstream: 'ghcr.io', members: { 'linux/arm/v7': 'acme/tool-armv7' } },
    'mirror/*': { members: { 'linux/amd64': '{name}' } },
  });

  it('match by the default route, ns and a registry prefix alike, with members on their own registries', () => {
    const expected = ['linux/amd64=docker.io/amd64/node', 'linux/arm64=docker.io/arm64v8/node', 'linux/ppc64le=ghcr.io/acme/node-ppc'];
    assert.deepEqual(members('multi/node'), expected);
    assert.deepEqual(members('multi/node', 'docker.io'), expected);
    assert.deepEqual(members('docker.io/multi/node'), expected);
    assert.deepEqual(members('index.docker.io/multi/node'), expected, 'an alias is the same registry');
  });

  it('belong to their home registry only', () => {
    assert.equal(members('multi/node', 'ghcr.io'), undefined);
    assert.equal(members('ghcr.io/multi/node'), undefined);
    assert.deepEqual(members('ghcr.io/on-ghcr'), ['linux/arm/v7=ghcr.io/acme/tool-armv7']);
    assert.equal(members('on-ghcr'), undefined, 'not on the default registry');
  });

  it('expand templates with what * matched, and the dockerhub preset to the per-architecture organisations', () => {
    assert.deepEqual(members('pair/redis'), ['linux/amd64=docker.io/x86/redis', 'linux/s390x=ghcr.io/z/redis']);
    assert.deepEqual(members('pair/team/app'), ['linux/amd64=docker.io/x86/team/app', 'linux/s390x=ghcr.io/z/team/app']);
    const hub = members('hub/python');
    assert.ok(hub?.includes('linux/arm64=docker.io/arm64v8/python'));
    assert.ok(hub?.includes('linux/arm/v7=docker.io/arm32v7/python'));
    assert.ok(hub?.includes('linux/386=docker.io/i386/python'));
    assert.ok(hub?.includes('linux/s390x=docker.io/s390x/python'));
    assert.equal(members('hub'), undefined, 'a template needs a name after its prefix');
    assert.equal(members('hubx/python'), undefined);
  });

  it('never let what * matched name a registry (a client choosing where archway fetches from)', () => {
    assert.deepEqual(members('mirror/team/app'), ['linux/amd64=docker.io/team/app']);
    assert.equal(members('mirror/ghcr.io/secret/app'), undefined, 'ghcr.io is configured, and still not reachable this way');
    assert.equal(members('mirror/localhost/x'), undefined);
    assert.deepEqual(members('pair/a.b'), ['linux/amd64=docker.io/x86/a.b', 'linux/s390x=ghcr.io/z/a.b'], 'a dot in a repository name is fine');
  });

  it("take Docker Hub's library/ into account for one-component names", () => {
    assert.deepEqual(members('tool'), ['linux/amd64=docker.io/amd64/tool']);
    assert.deepEqual(members('library/tool'), ['linux/amd64=docker.io/amd64/tool']);
    assert.equal(members('other/tool'), undefined);
    assert.equal(members('multi/node/extra'), undefined);
  });
});

describe('virtual config', () => {
  const base = { upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } }, defaultUpstream: 'docker.io' };
  const error = (virtual: unknown): string => {
    try {
      parseConfig({ ...base, virtual } as ConfigInput);
      return 'accepted';
    } catch (err) {
      return (err as Error).message;
    }
  };

  it('refuses what cannot work, naming the field', () => {
    assert.match(error({ 'Multi/Node': { members: { 'linux/amd64': 'a/b' } } }), /virtual/);
    assert.match(error({ m: { members: {} } }), /at least one member/);
    assert.match(error({ m: { members: { 'linux/aarch64': 'a/b', 'linux/arm64': 'c/d' } } }), /linux\/arm64 is listed twice/);
    assert.match(error({ m: { members: { 'linux/amd64': 'quay.io/a/b' } } }), /registry quay\.io is not configured/);
    assert.match(error({ m: { upstream: 'ghcr.io', members: { 'linux/amd64': 'a/b' } } }), /"ghcr.io" is not a key of upstreams/);
    assert.match(error({ m: { members: { 'linux/amd64': 'a/b' }, extra: 1 } }), /virtual/);
    assert.equal(error({ 'm/*': { members: 'dockerhub' } }), 'accepted');
  });
});

describe('assembled index', () => {
  const d = (s: string): Digest => digestOf(Buffer.from(s));
  const entries = [
    { descriptor: { mediaType: MediaType.DockerManifest, digest: d('a'), size: 10 }, platform: { os: 'linux', architecture: 'amd64' } },
    { descriptor: { mediaType: MediaType.OciManifest, digest: d('b'), size: 20 }, platform: { os: 'linux', architecture: 'arm', variant: 'v7' } },
  ];

  it('is deterministic, with its digest over its exact bytes and the configured platforms', () => {
    const one = assembleIndex(entries, MediaType.OciIndex);
    const two = assembleIndex(entries.map((e) => ({ ...e })), MediaType.OciIndex);
    assert.ok(one.bytes.equals(two.bytes));
    assert.equal(one.digest, digestOf(one.bytes));
    const doc = JSON.parse(one.bytes.toString()) as { schemaVersion: number; mediaType: string; manifests: Array<Record<string, unknown>> };
    assert.equal(doc.schemaVersion, 2);
    assert.equal(doc.mediaType, MediaType.OciIndex);
    assert.deepEqual(doc.manifests[1], { mediaType: MediaType.OciManifest, digest: d('b'), size: 20, platform: { architecture: 'arm', os: 'linux', variant: 'v7' } });
    assert.notEqual(assembleIndex(entries, MediaType.DockerManifestList).digest, one.digest);
  });

  it('is a Docker manifest list only for clients that read nothing newer', () => {
    assert.equal(indexFormatFor(new Set([MediaType.OciIndex, MediaType.DockerManifestList])), MediaType.OciIndex);
    assert.equal(indexFormatFor(new Set([MediaType.DockerManifestList, MediaType.DockerManifest])), MediaType.DockerManifestList);
    assert.equal(indexFormatFor(new Set([MediaType.DockerManifest])), MediaType.OciIndex);
  });
});
