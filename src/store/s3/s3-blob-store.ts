import { randomUUID } from 'node:crypto';
import { mkdir, rm, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline, type Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import { digestAlgorithm, digestHex, parseDigest, type Digest } from '../../oci/digest.ts';
import type { SharedBlobIndex } from '../shared-blob-index.ts';
import type { BlobInfo, BlobRead, BlobStore, ByteRange, ReadPace, SpaceReservation, VerifyOutcome } from '../blob-store.ts';
import { DiskBudget } from '../disk-budget.ts';
import { BackgroundIndexing } from '../background-indexing.ts';
import { BlobTrust } from '../blob-trust.ts';
import { CheckedStream } from '../checked-stream.ts';
import { readThrough, type DamagedBlobError } from '../read-check.ts';
import { LruIndex } from '../lru-index.ts';
import type { S3Bucket } from './s3-bucket.ts';

const BLOBS = 'blobs/';

/** Where a blob lives in the bucket (under the configured prefix); read-only users: `archway inspect`. */
export function blobObjectKey(digest: Digest): string {
  return `${BLOBS}${digestAlgorithm(digest)}/${digestHex(digest)}`;
}

export interface S3BlobStoreOptions {
  bucket: S3Bucket;
  /** Local directory for fills in progress (cache.dir/tmp): clients stream from it while the blob is verified. */
  tmpDir: string;
  maxSize: number;
  logger: Logger;
  /** The index shared by replicas (Redis); without it, this process indexes the bucket itself. */
  shared?: SharedBlobIndex | undefined;
  /** Answer GETs with a presigned URL valid this long (storage.s3.redirect). */
  redirectSeconds?: number | undefined;
  onEvict?: (info: BlobInfo) => void;
  /** A stored object was found damaged (and deleted): for the metric. */
  onDamaged?: (digest: Digest) => void;
}

/** An eviction run holds the shared lock at most this long. */
const EVICT_LOCK_MS = 30_000;
/** How often a replica checks that the shared index still exists (Redis may have restarted empty). */
const INDEX_CHECK_MS = 60_000;
const REBUILD_LOCK_MS = 10 * 60_000;
const SCAN_ATTEMPTS = 5;

/**
 * Blobs as objects `<prefix>blobs/<algorithm>/<hex>` in an S3-compatible
 * bucket, shared by every replica. Only verified content enters: a fill
 * streams into a local temp file while it is hashed, and `commitFile`
 * uploads the file only once the digest matched, so an object under a digest
 * name is always complete and right (a multipart upload becomes visible only
 * when completed; an interrupted one never does).
 *
 * Eviction is LRU by last access: with Redis, across replicas (access times
 * batched into a sorted set, one replica evicting at a time); without, from
 * this process's own index of the bucket. Blobs being read here are never
 * evicted by this replica; another replica's eviction may delete an object
 * while this one streams it, which S3 lets the running GET finish.
 */
export class S3BlobStore implements BlobStore {
  readonly releaseBeforeCommit = true;
  private readonly local = new LruIndex<Digest>();
  private sharedUsage = { bytes: 0, count: 0 };
  private readonly indexing = new BackgroundIndexing<Digest>();
  private indexed: Promise<void> = Promise.resolve();
  private rebuildTimer: NodeJS.Timeout | undefined;
  private readonly trust = new BlobTrust((err) => void this.removeDamaged(err));

  /**
   * The local directory holds only fills in progress (the bucket holds the cache): their
   * temp files are bounded by cache.maxSize too, each reserving room before it writes.
   */
  private readonly tmpBudget: DiskBudget;

  constructor(private readonly opts: S3BlobStoreOptions) {
    this.tmpBudget = new DiskBudget({ dir: opts.tmpDir, maxSize: opts.maxSize, logger: opts.logger, removeBlob: async () => undefined });
  }

  reserve(): SpaceReservation {
    return this.tmpBudget.reserve();
  }

  async init(): Promise<void> {
    await rm(this.opts.tmpDir, { recursive: true, force: true });
    await mkdir(this.opts.tmpDir, { recursive: true });
    if (this.opts.shared) {
      await this.ensureSharedIndex();
      // Redis may lose its data (a restart without persistence): check now and then, rebuild from the bucket.
      this.rebuildTimer = setInterval(() => void this.ensureSharedIndex(), INDEX_CHECK_MS);
      this.rebuildTimer.unref();
      return;
    }
    // One replica without Redis: index the bucket in the background, as the filesystem store does its directory.
    this.indexing.start(() => this.scan(), (err) => this.opts.logger.error({ err }, 'indexing the bucket failed; blobs are looked up one by one and nothing is evicted until a restart'));
    // Shrunk to maxSize once the totals are whole.
    this.indexed = this.indexing.whenDone().then(() => this.evict());
  }

  /** Flush what the shared index has not been told yet (access times) and stop its timers. */
  async close(): Promise<void> {
    clearInterval(this.rebuildTimer);
    await this.opts.shared?.flushTouches();
    this.opts.shared?.close();
  }

  /**
   * The shared index must know every object in the bucket, or blobs nobody asks
   * for again are never counted or evicted. A marker in Redis says it was built;
   * without it (a new Redis, or one that lost its data) one replica rebuilds it
   * from a listing of the bucket.
   */
  private async ensureSharedIndex(): Promise<void> {
    const shared = this.opts.shared as SharedBlobIndex;
    try {
      if (!(await shared.needsRebuild())) return this.refreshSharedUsage();
      const lock = await shared.lockRebuild(REBUILD_LOCK_MS);
      if (!lock) return;
      try {
        let count = 0;
        for await (const o of this.opts.bucket.list(BLOBS)) {
          const digest = this.digestOf(o.key);
          if (!digest) continue;
          await shared.add(digest, o.size, o.modified);
          count++;
        }
        await shared.markBuilt();
        this.opts.logger.info({ blobs: count }, 'shared blob index rebuilt from the bucket');
      } finally {
        await shared.unlockRebuild(lock);
      }
      await this.refreshSharedUsage();
      await this.evict();
    } catch (err) {
      this.opts.logger.warn({ err: (err as Error).message }, 'could not check the shared blob index; will retry');
    }
  }

  whenIndexed(): Promise<void> {
    return this.indexed;
  }

  async stat(digest: Digest): Promise<BlobInfo | undefined> {
    const size = await this.lookup(digest);
    return size === undefined ? undefined : { digest, size };
  }

  /**
   * Every read is checked for its length; the first whole read in this process
   * hashes the object, as the filesystem store does its files (an object store
   * keeps what it was given, but a bucket is shared, can be written by hand,
   * and an S3-compatible may fail): trust is earned here, not assumed.
   */
  async open(digest: Digest, range?: ByteRange): Promise<BlobRead | undefined> {
    // A range alone proves nothing: the whole object is verified first, once per process.
    if (range && !this.trust.isTrusted(digest) && (await this.trust.verifyOnce(digest, () => this.verify(digest))) !== 'intact') return undefined;
    return this.openChecked(digest, range, 'serve');
  }

  async verify(digest: Digest, pace?: ReadPace): Promise<VerifyOutcome> {
    const read = await this.openChecked(digest, undefined, 'verify');
    return read ? readThrough(read.stream, pace) : 'gone';
  }

  /** `serve` hashes a whole read of an object not trusted yet and counts as a use; `verify` always hashes, and leaves the LRU order alone. */
  private async openChecked(digest: Digest, range: ByteRange | undefined, purpose: 'serve' | 'verify'): Promise<BlobRead | undefined> {
    const size = await this.lookup(digest);
    if (size === undefined) return undefined;
    const serve = purpose === 'serve';
    this.local.pin(digest);
    if (serve) this.local.touch(digest);
    let object: { body: Readable; size: number | undefined } | undefined;
    try {
      object = await this.opts.bucket.get(this.key(digest), range);
    } catch (err) {
      this.release(digest);
      throw err;
    }
    if (!object) {
      // Evicted by another replica (or removed by hand): a miss.
      this.release(digest);
      this.forget(digest);
      return undefined;
    }
    if (object.size !== undefined && object.size !== size) {
      // Not the object a blob of this digest is: damaged (or shown half-written by an
      // S3-compatible). Deleted and a miss, fetched again, never a wrong answer.
      object.body.destroy();
      this.release(digest);
      await this.removeDamaged({ digest, reason: `the stored object has ${object.size} bytes, not ${size}` });
      return undefined;
    }
    const { check, done } = this.trust.begin(digest, serve ? !range && !this.trust.isTrusted(digest) : true);
    const stream = new CheckedStream(range ? range.end - range.start + 1 : size, check);
    // Either side ending ends both: a client that hangs up stops the GET, a failed GET cuts the client.
    pipeline(object.body, stream, () => undefined);
    stream.once('close', () => {
      done();
      this.release(digest);
    });
    if (serve) this.opts.shared?.touch(digest);
    return { size, stream };
  }

  /** A presigned URL for the blob (storage.s3.redirect), or undefined when redirects are off or it is not there. */
  async redirectUrl(digest: Digest): Promise<string | undefined> {
    if (!this.opts.redirectSeconds || (await this.lookup(digest)) === undefined) return undefined;
    // The index may know a blob the bucket lost (removed by hand, a lifecycle rule, a failed update of
    // the index): archway never reads it here, so ask the bucket before sending a client there.
    if ((await this.opts.bucket.size(this.key(digest))) === undefined) {
      this.forget(digest);
      return undefined;
    }
    this.local.touch(digest);
    this.opts.shared?.touch(digest);
    return this.opts.bucket.presignedGet(this.key(digest), this.opts.redirectSeconds);
  }

  tempPath(): string {
    return join(this.opts.tmpDir, randomUUID());
  }

  async commitFile(path: string, info: BlobInfo): Promise<void> {
    await this.opts.bucket.putFile(this.key(info.digest), path, info.size);
    this.trust.forget(info.digest);
    // Readers of the fill keep their descriptor; the local copy is no longer needed.
    await unlink(path).catch(() => undefined);
    this.indexing.decide(info.digest);
    if (this.opts.shared) await this.shared((s) => s.add(info.digest, info.size));
    else this.local.set(info.digest, info.size);
    // The blob is stored whatever eviction meets (Redis away, a refused delete): that is logged, not the commit's failure.
    await this.evict().catch((err: unknown) => this.opts.logger.error({ err }, 'eviction failed'));
  }

  async delete(digest: Digest): Promise<boolean> {
    if (this.local.isPinned(digest)) return false;
    const size = await this.lookup(digest);
    if (size === undefined) return false;
    await this.opts.bucket.delete(this.key(digest));
    this.forget(digest);
    return true;
  }

  /** A damaged object goes at once, read here or not: every read of it is cut before its last byte (BlobTrust). */
  private async removeDamaged(err: Pick<DamagedBlobError, 'digest' | 'reason'>): Promise<void> {
    const { digest } = err;
    this.trust.condemn(digest);
    this.forget(digest);
    this.opts.logger.error({ digest, reason: err.reason }, 'stored blob is damaged: deleted, the next request fetches it again');
    this.opts.onDamaged?.(digest);
    await this.opts.bucket.delete(this.key(digest)).catch((e: unknown) => this.opts.logger.error({ err: e, digest }, 'deleting a damaged blob failed'));
  }

  async *list(): AsyncIterable<BlobInfo> {
    await this.indexing.whenDone();
    for await (const o of this.opts.bucket.list(BLOBS)) {
      const digest = this.digestOf(o.key);
      if (digest) yield { digest, size: o.size };
    }
  }

  usage(): { bytes: number; count: number } {
    return this.opts.shared ? this.sharedUsage : { bytes: this.local.bytes, count: this.local.count };
  }

  private async lookup(digest: Digest): Promise<number | undefined> {
    // Shared: Redis says what every replica did (another may have evicted or purged it);
    // this replica's own index only keeps pins and sizes, it is no proof of presence.
    if (this.opts.shared) return this.sharedLookup(digest);
    const known = this.local.size(digest);
    if (known !== undefined) return known;
    if (this.indexing.isDecided(digest)) return undefined;
    const size = await this.opts.bucket.size(this.key(digest));
    if (size === undefined) return undefined;
    if (this.indexing.isDecided(digest) || !this.indexing.running) return this.local.size(digest);
    this.indexing.decide(digest);
    this.local.set(digest, size);
    return size;
  }

  private async sharedLookup(digest: Digest): Promise<number | undefined> {
    let fromShared: number | undefined;
    try {
      fromShared = await (this.opts.shared as SharedBlobIndex).size(digest);
    } catch {
      // Redis away: the bucket answers alone.
    }
    // Shared: this replica's index only pins what it reads; sizes come from Redis every time.
    if (fromShared !== undefined) return fromShared;
    // The bucket is the truth: Redis may have been emptied, or the blob committed by a replica without it.
    const size = await this.opts.bucket.size(this.key(digest));
    if (size !== undefined) await this.shared((s) => s.add(digest, size));
    return size;
  }

  private release(digest: Digest): void {
    this.local.unpin(digest);
    void this.evict().catch((err: unknown) => this.opts.logger.error({ err }, 'eviction failed'));
  }

  private forget(digest: Digest): void {
    this.trust.forget(digest);
    this.indexing.decide(digest);
    this.local.delete(digest);
    void this.shared((s) => s.remove(digest));
  }

  private async evict(): Promise<void> {
    const { shared, maxSize } = this.opts;
    // Until the start-up scan is complete the totals are partial: the scan evicts when it ends.
    if (this.indexing.running) return;
    if (!shared) {
      for (const { key, size } of this.local.evict(maxSize)) await this.evictOne(key, size);
      return;
    }
    await this.refreshSharedUsage();
    if (this.sharedUsage.bytes <= maxSize) return;
    const lock = await this.shared((s) => s.lockEviction(EVICT_LOCK_MS));
    if (!lock) return;
    try {
      let bytes = this.sharedUsage.bytes;
      while (bytes > maxSize) {
        // Each batch: still the holder (the lock renewed), and the total as it is now, not as it was.
        if (!(await this.shared((s) => s.renewEviction(lock, EVICT_LOCK_MS)))) break;
        bytes = (await this.shared((s) => s.usage()))?.bytes ?? bytes;
        if (bytes <= maxSize) break;
        const oldest = ((await this.shared((s) => s.oldest(64))) ?? []).filter((d) => !this.local.isPinned(d));
        let progressed = false;
        for (const digest of oldest) {
          if (bytes <= maxSize) break;
          const size = (await this.shared((s) => s.size(digest))) ?? 0;
          if (!(await this.evictOne(digest, size))) continue;
          bytes -= size;
          progressed = true;
        }
        // Everything old is in use here, or the bucket refuses deletes: try again at the next commit.
        if (!progressed) break;
      }
    } finally {
      await this.shared((s) => s.unlockEviction(lock));
      await this.refreshSharedUsage();
    }
  }

  private async evictOne(digest: Digest, size: number): Promise<boolean> {
    try {
      await this.opts.bucket.delete(this.key(digest));
    } catch (err) {
      this.opts.logger.error({ err, digest }, 'evicting a blob failed');
      return false;
    }
    this.forget(digest);
    this.opts.logger.info({ digest, size }, 'evicted blob');
    this.opts.onEvict?.({ digest, size });
    return true;
  }

  private async refreshSharedUsage(): Promise<void> {
    const usage = await this.shared((s) => s.usage());
    if (usage) this.sharedUsage = usage;
  }

  /** A shared-index operation; Redis being away is not an error here (the bucket still answers). */
  private async shared<T>(op: (s: SharedBlobIndex) => Promise<T>): Promise<T | undefined> {
    if (!this.opts.shared) return undefined;
    try {
      return await op(this.opts.shared);
    } catch {
      return undefined;
    }
  }

  private async scan(): Promise<void> {
    let found: Array<{ digest: Digest; size: number; modified: number }> = [];
    // A listing that fails (the bucket briefly unreachable) is tried again, not given up for the process's life.
    for (let attempt = 1; ; attempt++) {
      try {
        found = [];
        for await (const o of this.opts.bucket.list(BLOBS)) {
          const digest = this.digestOf(o.key);
          if (digest) found.push({ digest, size: o.size, modified: o.modified });
        }
        break;
      } catch (err) {
        if (attempt >= SCAN_ATTEMPTS) throw err;
        this.opts.logger.warn({ err: (err as Error).message, attempt }, 'listing the bucket failed; trying again');
        await sleep(1000 * 2 ** attempt);
      }
    }
    found.sort((a, b) => a.modified - b.modified);
    const seen = this.indexing.decidedKeys();
    for (const f of found) if (!seen.has(f.digest)) this.local.set(f.digest, f.size);
    for (const digest of seen) this.local.touch(digest);
  }

  private key(digest: Digest): string {
    return blobObjectKey(digest);
  }

  private digestOf(key: string): Digest | undefined {
    const [algorithm, hex] = key.slice(BLOBS.length).split('/');
    try {
      return parseDigest(`${algorithm}:${hex}`);
    } catch {
      return undefined;
    }
  }
}
