// The contract every LocalStore keeps (the filesystem's under cache.dir, the
// bucket's under local/), written once and run against each: manifests
// verified when read back, tags and blob origins kept, deletes, listing, the
// byte count (found again by a new store over the same storage, as after a
// restart).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { digestOf } from '../../src/oci/digest.ts';
import type { LocalStore } from '../../src/store/local-store.ts';

export interface LocalStoreFixture {
  store: LocalStore;
  /** A new store over the same storage, initialised. */
  reopen(): Promise<LocalStore>;
  cleanup(): Promise<void>;
}

const REPO = 'docker.io/team/node';

export function localStoreContract(name: string, open: () => Promise<LocalStoreFixture>): void {
  describe(`LocalStore contract: ${name}`, () => {
    it('keeps manifests, tags and blob origins per repository, and lists them', async () => {
      const f = await open();
      try {
        const bytes = Buffer.from('{"schemaVersion":2}');
        const manifest = { digest: digestOf(bytes), mediaType: 'application/vnd.oci.image.manifest.v1+json', bytes };
        await f.store.putManifest(REPO, manifest);
        await f.store.setTag(REPO, '20', { digest: manifest.digest, mediaType: manifest.mediaType, platforms: ['linux/amd64'], pushedAt: 1 });
        await f.store.setTag(REPO, '19', { digest: manifest.digest, mediaType: manifest.mediaType, platforms: [], pushedAt: 2 });
        const blob = digestOf(Buffer.from('blob'));
        await f.store.putBlob(REPO, blob, { upstream: 'docker.io', repository: 'amd64/node', size: 4 });

        const again = await f.reopen();
        assert.deepEqual(await again.manifest(REPO, manifest.digest), manifest);
        assert.equal(await again.manifest('docker.io/team/other', manifest.digest), undefined, 'per repository');
        assert.deepEqual(await again.tag(REPO, '20'), { digest: manifest.digest, mediaType: manifest.mediaType, platforms: ['linux/amd64'], pushedAt: 1 });
        assert.deepEqual(await again.tags(REPO), ['19', '20']);
        assert.deepEqual(await again.blob(REPO, blob), { upstream: 'docker.io', repository: 'amd64/node', size: 4 });
        assert.deepEqual(await again.repositories(), [REPO]);
        assert.deepEqual(await again.counts(REPO), { manifests: 1, blobs: 1 });
        assert.equal(again.usage().bytes, f.store.usage().bytes, 'the byte count is found again');
        assert.ok(f.store.usage().bytes > bytes.length);

        const before = f.store.usage().bytes;
        assert.equal(await f.store.deleteTag(REPO, '19'), true);
        assert.equal(await f.store.deleteTag(REPO, '19'), false);
        assert.equal(await f.store.deleteManifest(REPO, manifest.digest), true);
        assert.equal(await f.store.manifest(REPO, manifest.digest), undefined);
        assert.ok(f.store.usage().bytes < before);
        assert.deepEqual(await f.store.tags(REPO), ['20']);
      } finally {
        await f.cleanup();
      }
    });

    it('reads nothing for what was never stored', async () => {
      const f = await open();
      try {
        const d = digestOf(Buffer.from('none'));
        assert.equal(await f.store.manifest(REPO, d), undefined);
        assert.equal(await f.store.tag(REPO, 'x'), undefined);
        assert.equal(await f.store.blob(REPO, d), undefined);
        assert.deepEqual(await f.store.tags(REPO), []);
        assert.deepEqual(await f.store.repositories(), []);
      } finally {
        await f.cleanup();
      }
    });
  });
}
