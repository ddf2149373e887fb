import { LRUCache } from 'lru-cache';
import { digestAlgorithm, digestHex, digestOf, parseDigest, type Digest } from '../../oci/digest.ts';
import type { ManifestStore, StoredManifest } from '../manifest-store.ts';
import type { S3Bucket } from './s3-bucket.ts';

const MANIFESTS = 'manifests/';

/**
 * Manifests by upstream and digest as objects `<prefix>manifests/<upstream>/<algorithm>/<hex>`,
 * shared by every replica (archway's own narrowed and virtual indexes too):
 * one JSON header line with the media type, then the exact bytes, verified
 * against the digest when read. Hot ones stay in memory for a minute.
 */
export class S3ManifestStore implements ManifestStore {
  /** Hot manifests; for a minute only, so a purge through another replica reaches this one too. */
  private readonly hot = new LRUCache<string, StoredManifest>({ maxSize: 64 * 1024 * 1024, sizeCalculation: (m) => m.bytes.length + 200, ttl: 60_000 });

  constructor(private readonly bucket: S3Bucket) {}

  async init(): Promise<void> {}

  async get(upstream: string, digest: Digest): Promise<StoredManifest | undefined> {
    const cacheKey = `${upstream}\n${digest}`;
    const hot = this.hot.get(cacheKey);
    if (hot) return hot;
    const raw = await this.bucket.getBuffer(this.key(upstream, digest));
    if (!raw) return undefined;
    const newline = raw.indexOf(0x0a);
    if (newline < 0) return undefined;
    const { mediaType } = JSON.parse(raw.subarray(0, newline).toString('utf8')) as { mediaType: string };
    const bytes = raw.subarray(newline + 1);
    if (digestOf(bytes, digestAlgorithm(digest)) !== digest) return undefined;
    const found = { digest, mediaType, bytes };
    this.hot.set(cacheKey, found);
    return found;
  }

  async put(upstream: string, manifest: StoredManifest): Promise<void> {
    this.hot.set(`${upstream}\n${manifest.digest}`, manifest);
    await this.bucket.putBuffer(this.key(upstream, manifest.digest), Buffer.concat([Buffer.from(`${JSON.stringify({ mediaType: manifest.mediaType })}\n`), manifest.bytes]));
  }

  async delete(upstream: string, digest: Digest): Promise<boolean> {
    this.hot.delete(`${upstream}\n${digest}`);
    if (!(await this.bucket.size(this.key(upstream, digest)))) return false;
    await this.bucket.delete(this.key(upstream, digest));
    return true;
  }

  forgetCopies(): void {
    this.hot.clear();
  }

  async *list(): AsyncIterable<{ upstream: string; digest: Digest }> {
    for await (const o of this.bucket.list(MANIFESTS)) {
      const [upstream, algorithm, hex] = o.key.slice(MANIFESTS.length).split('/');
      try {
        yield { upstream: decodeURIComponent(upstream ?? ''), digest: parseDigest(`${algorithm}:${hex}`) };
      } catch {
        // not a manifest object
      }
    }
  }

  private key(upstream: string, digest: Digest): string {
    return `${MANIFESTS}${encodeURIComponent(upstream)}/${digestAlgorithm(digest)}/${digestHex(digest)}`;
  }
}
