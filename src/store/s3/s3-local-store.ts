import { LRUCache } from 'lru-cache';
import { digestAlgorithm, digestHex, type Digest } from '../../oci/digest.ts';
import { decodeBlobOrigin, decodeLocalTag, decodeStoredManifest, encodeStoredManifest, type BlobOrigin, type LocalStore, type LocalTag } from '../local-store.ts';
import type { StoredManifest } from '../manifest-store.ts';
import type { S3Bucket } from './s3-bucket.ts';

const LOCAL = 'local/';

/**
 * The local store in the bucket, for replicas sharing one (Redis holds no
 * durable state): `<prefix>local/<repository, URI-encoded>/{manifests,tags,blobs}/…`,
 * the same layout and records as `FsLocalStore`, so a copy of `local/` is the
 * backup here too. The S3 blob store's eviction lists `blobs/` only, so
 * nothing here is ever evicted. Tags are read from the bucket on every
 * request (a push through one replica is seen by all at once); manifests,
 * immutable by digest, stay in memory for a minute, dropped at once when
 * another replica deletes them (the `local-changed` cluster event, with Redis;
 * without it, after the minute). The byte count is the bucket's at
 * start plus this replica's own writes: approximate across replicas.
 */
export class S3LocalStore implements LocalStore {
  private bytes = 0;
  private readonly hot = new LRUCache<string, StoredManifest>({ maxSize: 16 * 1024 * 1024, sizeCalculation: (m) => m.bytes.length + 200, ttl: 60_000 });

  constructor(private readonly bucket: S3Bucket) {}

  async init(): Promise<void> {
    let bytes = 0;
    for await (const o of this.bucket.list(LOCAL)) bytes += o.size;
    this.bytes = bytes;
  }

  usage(): { bytes: number } {
    return { bytes: this.bytes };
  }

  async manifest(repository: string, digest: Digest): Promise<StoredManifest | undefined> {
    const key = this.key(repository, 'manifests', digest);
    const hot = this.hot.get(key);
    if (hot) return hot;
    const raw = await this.bucket.getBuffer(key);
    const manifest = raw && decodeStoredManifest(raw, digest);
    if (manifest) this.hot.set(key, manifest);
    return manifest;
  }

  async putManifest(repository: string, manifest: StoredManifest): Promise<void> {
    const key = this.key(repository, 'manifests', manifest.digest);
    await this.write(key, encodeStoredManifest(manifest));
    this.hot.set(key, manifest);
  }

  deleteManifest(repository: string, digest: Digest): Promise<boolean> {
    const key = this.key(repository, 'manifests', digest);
    this.hot.delete(key);
    return this.remove(key);
  }

  forgetCopies(repository?: string, digests?: readonly Digest[]): void {
    if (repository === undefined || digests === undefined) return this.hot.clear();
    for (const digest of digests) this.hot.delete(this.key(repository, 'manifests', digest));
  }

  async tag(repository: string, tag: string): Promise<LocalTag | undefined> {
    const raw = await this.bucket.getBuffer(this.tagKey(repository, tag));
    return raw && decodeLocalTag(raw);
  }

  async setTag(repository: string, tag: string, record: LocalTag): Promise<void> {
    await this.write(this.tagKey(repository, tag), Buffer.from(JSON.stringify(record)));
  }

  deleteTag(repository: string, tag: string): Promise<boolean> {
    return this.remove(this.tagKey(repository, tag));
  }

  async tags(repository: string): Promise<string[]> {
    const dir = `${this.repositoryKey(repository)}tags/`;
    const tags: string[] = [];
    for await (const o of this.bucket.list(dir)) tags.push(o.key.slice(dir.length));
    return tags.sort();
  }

  async blob(repository: string, digest: Digest): Promise<BlobOrigin | undefined> {
    const raw = await this.bucket.getBuffer(this.key(repository, 'blobs', digest));
    return raw && decodeBlobOrigin(raw);
  }

  async putBlob(repository: string, digest: Digest, origin: BlobOrigin): Promise<void> {
    await this.write(this.key(repository, 'blobs', digest), Buffer.from(JSON.stringify(origin)));
  }

  async counts(repository: string): Promise<{ manifests: number; blobs: number }> {
    const count = async (kind: string) => {
      let n = 0;
      for await (const _ of this.bucket.list(`${this.repositoryKey(repository)}${kind}/`)) n++;
      return n;
    };
    return { manifests: await count('manifests'), blobs: await count('blobs') };
  }

  async repositories(): Promise<string[]> {
    const found = new Set<string>();
    for await (const o of this.bucket.list(LOCAL)) {
      const folder = o.key.slice(LOCAL.length).split('/')[0];
      if (folder) found.add(decodeURIComponent(folder));
    }
    return [...found].sort();
  }

  private async write(key: string, bytes: Buffer): Promise<void> {
    const before = (await this.bucket.size(key)) ?? 0;
    // One PUT: S3 shows an object whole or not at all.
    await this.bucket.putBuffer(key, bytes);
    this.bytes += bytes.length - before;
  }

  private async remove(key: string): Promise<boolean> {
    const size = await this.bucket.size(key);
    if (size === undefined) return false;
    await this.bucket.delete(key);
    this.bytes -= size;
    return true;
  }

  private repositoryKey(repository: string): string {
    return `${LOCAL}${encodeURIComponent(repository)}/`;
  }

  private key(repository: string, kind: 'manifests' | 'blobs', digest: Digest): string {
    return `${this.repositoryKey(repository)}${kind}/${digestAlgorithm(digest)}/${digestHex(digest)}`;
  }

  private tagKey(repository: string, tag: string): string {
    return `${this.repositoryKey(repository)}tags/${tag}`;
  }
}
