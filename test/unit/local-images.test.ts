// Local repositories in-process: the verification of what is pushed (digest,
// media type, structure, size, references), mounts checked with a HEAD and
// never a download, the platform path of a pulled local tag, deletes, the
// local.maxSize bound, and durability across a restart — on a temp-dir store
// with a scripted upstream.
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, it } from 'node:test';
import { RegistryError } from '../../src/errors.ts';
import { LocalCatalog, type LocalRepository } from '../../src/local/local-catalog.ts';
import { LocalImageService, type LocalChange } from '../../src/local/local-image-service.ts';
import { digestOf, type Digest } from '../../src/oci/digest.ts';
import { MediaType } from '../../src/oci/media-types.ts';
import type { Reference } from '../../src/oci/reference.ts';
import { AS_PUBLISHED, ACCEPT_ALL_MANIFESTS } from '../../src/registry/manifest-service.ts';
import { Router } from '../../src/routing/router.ts';
import { FsLocalStore } from '../../src/store/local-store.ts';
import { parseConfig } from '../../src/config/load.ts';
import { Collected, InProcessServices } from '../harness/in-process-services.ts';
import { fetchedManifest, imageManifest, ScriptedUpstream } from '../harness/scripted-upstream.ts';

const tag = (t: string): Reference => ({ kind: 'tag', tag: t });
const byDigest = (d: Digest): Reference => ({ kind: 'digest', digest: d });

function rejectsWith(code: string, status?: number) {
  return (e: unknown) => e instanceof RegistryError && e.code === code && (status === undefined || e.status === status);
}

describe('local repositories', () => {
  let svc: InProcessServices;
  let upstream: ScriptedUpstream;
  let router: Router;
  let store: FsLocalStore;
  /** The cache directory the local store is under. */
  let cacheDir: string;
  let local: LocalImageService;
  let changes: LocalChange[];
  const repo: LocalRepository = { key: 'docker.io/team/node', pushers: new Set(['alice']) };

  /** An image in amd64/node at the upstream, its blobs there; returns its manifest. */
  function upstreamImage(note: string) {
    const layer = Buffer.from(`layer of ${note}`);
    const config = Buffer.from(note);
    upstream.blob(config);
    const manifest = imageManifest([{ digest: upstream.blob(layer), size: layer.length }], note);
    return { manifest, blobs: [digestOf(config), digestOf(layer)] };
  }

  async function mountAll(blobs: Digest[]) {
    for (const d of blobs) await local.mount(repo, d, router.resolve('amd64/node'));
  }

  function index(entries: Array<{ bytes: Buffer; digest: Digest; platform: Record<string, string> }>) {
    return fetchedManifest(
      { schemaVersion: 2, mediaType: MediaType.DockerManifestList, manifests: entries.map((e) => ({ mediaType: MediaType.OciManifest, digest: e.digest, size: e.bytes.length, platform: e.platform })) },
      MediaType.DockerManifestList,
    );
  }

  before(async () => {
    svc = await InProcessServices.start();
  });
  after(() => svc.close());

  beforeEach(async () => {
    upstream = new ScriptedUpstream({ name: 'docker.io' });
    router = new Router(new Map([['docker.io', { client: upstream, aliases: [] }]]), 'docker.io');
    cacheDir = `${svc.dir}/${Math.random().toString(36).slice(2)}`;
    store = new FsLocalStore(cacheDir);
    await store.init();
    local = new LocalImageService({ store, manifests: svc.manifests, blobs: svc.blobs, logger: svc.logger, maxBytes: 1024 * 1024 });
    changes = [];
    local.onChange((c) => changes.push(c));
  });

  it('a mount is checked at the upstream with a HEAD, never downloaded, and records where the blob comes from', async () => {
    const { blobs } = upstreamImage('mount');
    await mountAll(blobs);
    assert.equal(upstream.count('headBlob'), 2);
    assert.equal(upstream.count('getBlob'), 0);
    const route = await local.blobRoute(repo, blobs[0] as Digest, router);
    assert.equal(`${route.upstream.name}/${route.repository}`, 'docker.io/amd64/node');
  });

  it('a blob the upstream does not have is not mounted', async () => {
    const missing = digestOf(Buffer.from('nowhere'));
    await assert.rejects(local.mount(repo, missing, router.resolve('amd64/node')), (e: unknown) => e instanceof RegistryError && e.status === 404);
    await assert.rejects(local.blobRoute(repo, missing, router), rejectsWith('BLOB_UNKNOWN'));
  });

  it('refuses a manifest pushed under another digest, with a wrong or unknown media type, or that is no manifest', async () => {
    const { manifest, blobs } = upstreamImage('checks');
    await mountAll(blobs);
    const other = digestOf(Buffer.from('other'));
    await assert.rejects(local.put(repo, byDigest(other), MediaType.OciManifest, manifest.bytes), rejectsWith('DIGEST_INVALID'));
    await assert.rejects(local.put(repo, byDigest(manifest.digest), 'text/html', manifest.bytes), rejectsWith('MANIFEST_INVALID'));
    await assert.rejects(local.put(repo, byDigest(manifest.digest), undefined, manifest.bytes), rejectsWith('MANIFEST_INVALID'));
    await assert.rejects(local.put(repo, byDigest(manifest.digest), MediaType.DockerManifest, manifest.bytes), rejectsWith('MANIFEST_INVALID'), 'the body says OCI');
    const junk = Buffer.from('{"schemaVersion":2,"layers":"no"}');
    await assert.rejects(local.put(repo, byDigest(digestOf(junk)), MediaType.OciManifest, junk), rejectsWith('MANIFEST_INVALID'));
    assert.equal(await store.manifest(repo.key, manifest.digest), undefined, 'nothing stored');
  });

  it('refuses an image manifest whose blobs were not mounted, or whose sizes disagree with the mount', async () => {
    const { manifest, blobs } = upstreamImage('unmounted');
    await local.mount(repo, blobs[0] as Digest, router.resolve('amd64/node'));
    await assert.rejects(local.put(repo, byDigest(manifest.digest), MediaType.OciManifest, manifest.bytes), rejectsWith('MANIFEST_BLOB_UNKNOWN'));
    const doc = JSON.parse(manifest.bytes.toString()) as { layers: Array<{ size: number }> };
    (doc.layers[0] as { size: number }).size += 1;
    await local.mount(repo, blobs[1] as Digest, router.resolve('amd64/node'));
    const lying = fetchedManifest(doc);
    await assert.rejects(local.put(repo, byDigest(lying.digest), MediaType.OciManifest, lying.bytes), rejectsWith('MANIFEST_INVALID'));
    assert.equal(await store.manifest(repo.key, manifest.digest), undefined);
  });

  it('an index by tag needs every member pushed first; it records their platforms and tells who listens', async () => {
    const amd = upstreamImage('amd64');
    const s390x = upstreamImage('s390x');
    await mountAll([...amd.blobs, ...s390x.blobs]);
    const list = index([
      { ...amd.manifest, platform: { os: 'linux', architecture: 'amd64' } },
      { ...s390x.manifest, platform: { os: 'linux', architecture: 's390x' } },
    ]);
    await local.put(repo, byDigest(amd.manifest.digest), MediaType.OciManifest, amd.manifest.bytes);
    await assert.rejects(local.put(repo, tag('20'), MediaType.DockerManifestList, list.bytes), rejectsWith('MANIFEST_BLOB_UNKNOWN'), 's390x not pushed');
    assert.deepEqual(await store.tags(repo.key), []);
    await local.put(repo, byDigest(s390x.manifest.digest), MediaType.OciManifest, s390x.manifest.bytes);
    assert.equal(await local.put(repo, tag('20'), MediaType.DockerManifestList, list.bytes), list.digest);
    assert.deepEqual((await store.tag(repo.key, '20'))?.platforms, ['linux/amd64', 'linux/s390x']);
    assert.deepEqual(changes, [{ repository: repo.key, tag: '20', digest: list.digest, deletedManifests: [] }]);

    // Pulled like any tag: as published, and resolved for one platform.
    const source = local.source(repo);
    const published = await svc.manifests.get(source, tag('20'), ACCEPT_ALL_MANIFESTS, AS_PUBLISHED);
    assert.equal(published.manifest.digest, list.digest);
    const resolved = await svc.manifests.get(source, tag('20'), ACCEPT_ALL_MANIFESTS, { ...AS_PUBLISHED, mode: 'resolve', platform: { os: 'linux', architecture: 's390x' } });
    assert.equal(resolved.manifest.digest, s390x.manifest.digest);
    assert.deepEqual((await local.tags(repo, {})).tags, ['20']);
  });

  it('member blobs come from their origin once, then from the cache while that upstream is down; the tag needs no upstream', async () => {
    const amd = upstreamImage('stale');
    await mountAll(amd.blobs);
    await local.put(repo, tag('20'), MediaType.OciManifest, amd.manifest.bytes);
    const layer = amd.blobs[1] as Digest;
    const read = async () => {
      const answer = await svc.blobs.get(await local.blobRoute(repo, layer, router), layer, () => undefined);
      assert.equal(answer.kind, 'body');
      return { outcome: answer.outcome, bytes: answer.kind === 'body' ? await new Collected(answer.stream).done : undefined };
    };
    const first = await read();
    assert.equal(first.outcome, 'miss');
    assert.equal(upstream.count('getBlob', layer), 1);
    await svc.blobs.settled(await local.blobRoute(repo, layer, router), layer);
    upstream.whenever('getBlob', () => {
      throw upstream.status('getBlob', 503);
    });
    upstream.whenever('headBlob', () => {
      throw upstream.status('headBlob', 503);
    });
    const again = await read();
    assert.equal(again.outcome, 'hit');
    assert.deepEqual(again.bytes, first.bytes);
    assert.equal((await local.source(repo).tag('20', ACCEPT_ALL_MANIFESTS)).manifest.digest, amd.manifest.digest);
  });

  it('an index entry must describe the member as pushed (its size)', async () => {
    const amd = upstreamImage('size');
    await mountAll(amd.blobs);
    await local.put(repo, byDigest(amd.manifest.digest), MediaType.OciManifest, amd.manifest.bytes);
    const list = index([{ ...amd.manifest, bytes: Buffer.concat([amd.manifest.bytes, Buffer.from(' ')]), platform: { os: 'linux', architecture: 'amd64' } }]);
    await assert.rejects(local.put(repo, tag('x'), MediaType.DockerManifestList, list.bytes), rejectsWith('MANIFEST_INVALID'));
  });

  it('deletes a tag, or a manifest with the tags that point at it', async () => {
    const amd = upstreamImage('delete');
    await mountAll(amd.blobs);
    await local.put(repo, tag('a'), MediaType.OciManifest, amd.manifest.bytes);
    await local.put(repo, tag('b'), MediaType.OciManifest, amd.manifest.bytes);
    await local.delete(repo, tag('a'));
    await assert.rejects(local.source(repo).tag('a', ACCEPT_ALL_MANIFESTS), rejectsWith('MANIFEST_UNKNOWN'));
    await assert.rejects(local.delete(repo, tag('a')), rejectsWith('MANIFEST_UNKNOWN'));
    await local.delete(repo, byDigest(amd.manifest.digest));
    assert.deepEqual(await store.tags(repo.key), []);
    await assert.rejects(local.source(repo).digest(amd.manifest.digest), rejectsWith('MANIFEST_UNKNOWN'));
    assert.deepEqual(
      changes.filter((c) => c.digest === undefined && c.tag !== undefined).map((c) => c.tag),
      ['a', 'b'],
    );
    assert.deepEqual(
      changes.filter((c) => c.deletedManifests.length).map((c) => [c.tag, c.deletedManifests]),
      [[undefined, [amd.manifest.digest]]],
      'the manifest delete is a change of its own (other replicas drop their copies of it)',
    );
  });

  it('refuses pushes beyond local.maxSize (507), and keeps what it has across a restart, outside the cache budget', async () => {
    const amd = upstreamImage('full');
    await mountAll(amd.blobs);
    const budgetBefore = svc.blobStore.usage().bytes;
    await local.put(repo, tag('kept'), MediaType.OciManifest, amd.manifest.bytes);
    assert.equal(svc.blobStore.usage().bytes, budgetBefore, 'not charged to cache.maxSize');
    const other = upstreamImage('beyond');
    await mountAll(other.blobs);
    const small = new LocalImageService({ store, manifests: svc.manifests, blobs: svc.blobs, logger: svc.logger, maxBytes: store.usage().bytes + 10 });
    await assert.rejects(small.put(repo, tag('more'), MediaType.OciManifest, other.manifest.bytes), (e: unknown) => e instanceof RegistryError && e.status === 507);

    const reopened = new FsLocalStore(cacheDir);
    await reopened.init();
    assert.equal(reopened.usage().bytes, store.usage().bytes, 'the byte count is found again by a walk');
    assert.equal((await reopened.tag(repo.key, 'kept'))?.digest, amd.manifest.digest);
  });
});

describe('local namespaces in the config', () => {
  const base = { upstreams: { 'docker.io': { url: 'http://127.0.0.1:1' } }, defaultUpstream: 'docker.io' };

  it('need auth, on either store', () => {
    assert.throws(() => parseConfig({ ...base, local: { namespaces: [{ repositories: ['team/**'], push: ['alice'] }] } }), /local.*auth/s);
    const withAuth = { ...base, auth: { tokens: [{ name: 'ci', token: 'x'.repeat(16) }] }, local: { namespaces: [{ repositories: ['team/**'], push: ['ci'] }] } };
    assert.doesNotThrow(() => parseConfig(withAuth));
    assert.doesNotThrow(() => parseConfig({ ...withAuth, storage: { type: 's3', s3: { bucket: 'bucket' } } }));
  });

  it('match upstream-qualified names; pushers are named, anonymous clients never push', () => {
    const catalog = new LocalCatalog(parseConfig({ ...base, auth: { tokens: [{ name: 'ci', token: 'x'.repeat(16) }] }, local: { namespaces: [{ repositories: ['team/**'], push: ['ci'] }] } }).local, 'docker.io');
    const upstream = new ScriptedUpstream({ name: 'docker.io' });
    const hit = catalog.match({ upstream, repository: 'team/node', via: 'default' });
    assert.equal(hit?.key, 'docker.io/team/node');
    assert.equal(catalog.match({ upstream, repository: 'library/node', via: 'default' }), undefined);
    assert.equal(catalog.match({ upstream: new ScriptedUpstream({ name: 'ghcr.io' }), repository: 'team/node', via: 'prefix' }), undefined);
    assert.ok(hit && LocalCatalog.mayPush({ name: 'ci', allows: () => true }, hit));
    assert.ok(hit && !LocalCatalog.mayPush({ name: 'bob', allows: () => true }, hit));
    assert.ok(hit && !LocalCatalog.mayPush(undefined, hit));
  });
});
