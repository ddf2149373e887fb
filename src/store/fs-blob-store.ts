import { randomUUID } from 'node:crypto';
import { mkdir, open, readdir, rename, rm, stat, unlink, type FileHandle } from 'node:fs/promises';
import { join, relative } from 'node:path';
import type { Logger } from 'pino';
import { digestAlgorithm, digestHex, parseDigest, type Digest } from '../oci/digest.ts';
import { BufferPool } from '../util/buffer-pool.ts';
import type { BlobInfo, BlobRead, BlobStore, ByteRange, ReadPace, SpaceReservation, VerifyOutcome } from './blob-store.ts';
import { BackgroundIndexing } from './background-indexing.ts';
import { BlobTrust } from './blob-trust.ts';
import { DiskBudget, isRecordKey } from './disk-budget.ts';
import { FileBody } from './file-body.ts';
import { readThrough, type DamagedBlobError } from './read-check.ts';
import { UseTimes } from './use-times.ts';

/**
 * Reads of cached blobs: 256 KiB chunks through recycled buffers held the
 * same throughput as 1 MiB ones with a quarter of the memory per reader
 * (BENCHMARKS.md, optimisation log); 32 idle buffers cover 16 busy readers.
 */
const READ_CHUNK_BYTES = 256 * 1024;
const IDLE_READ_BUFFERS = 32;
/** Shard directories scanned at once at start (each holds ~1/256 of the blobs). */
const SCAN_PARALLEL_SHARDS = 16;
const EMPTY_SHA256 = 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855';

export interface FsBlobStoreOptions {
  dir: string;
  maxSize: number;
  logger: Logger;
  onEvict?: (info: BlobInfo) => void;
  /** A stored copy was found damaged (and removed): for the metric. */
  onDamaged?: (digest: Digest) => void;
}

async function subdirectories(dir: string): Promise<string[]> {
  return (await readdir(dir, { withFileTypes: true })).filter((e) => e.isDirectory()).map((e) => e.name);
}

/** Where the filesystem store keeps a blob under a cache directory (read-only users: `archway inspect`). */
export function blobFilePath(cacheDir: string, digest: Digest): string {
  const hex = digestHex(digest);
  return join(cacheDir, 'blobs', digestAlgorithm(digest), hex.slice(0, 2), hex);
}

/**
 * Blobs as files under `<dir>/blobs/<algorithm>/<2 hex>/<hex>`, with an
 * in-memory LRU index rebuilt from modification times at start (a hit touches
 * the file, so the order survives restarts). Temp files live in `<dir>/tmp`
 * on the same filesystem, so committing is an atomic rename.
 */
export class FsBlobStore implements BlobStore {
  /**
   * The one budget of the cache directory: blobs in LRU order with pins, and
   * the other stores' records (manifests, tags), which share it.
   */
  readonly budget: DiskBudget;
  private readonly readBuffers = new BufferPool(READ_CHUNK_BYTES, IDLE_READ_BUFFERS);
  /** A hit's time reaches the blob's file (the LRU order after a restart), at most once a minute. */
  private readonly useTimes = new UseTimes((digest) => this.path(digest as Digest));
  private readonly indexing = new BackgroundIndexing<Digest>();
  private readonly trust = new BlobTrust((err) => void this.removeDamaged(err));
  private indexed: Promise<void> = Promise.resolve();
  private readonly blobsDir: string;
  private readonly tmpDir: string;

  constructor(private readonly opts: FsBlobStoreOptions) {
    this.blobsDir = join(opts.dir, 'blobs');
    this.tmpDir = join(opts.dir, 'tmp');
    this.budget = new DiskBudget({ dir: opts.dir, maxSize: opts.maxSize, logger: opts.logger, removeBlob: (digest, size) => this.removeEvicted(digest as Digest, size) });
  }

  /**
   * Prepares the directories and starts indexing what is on disk. Serving does
   * not wait for the index: until it is complete a lookup asks the disk
   * directly, so start-up time does not grow with the cache (100,000 blobs
   * took 2 s to scan here; BENCHMARKS.md, cache scale). Eviction waits for it;
   * a file that cannot be read is left out, the rest is indexed.
   */
  async init(): Promise<void> {
    // Temp files are fills a previous process did not finish: never complete, never trusted.
    await rm(this.tmpDir, { recursive: true, force: true });
    await mkdir(this.tmpDir, { recursive: true });
    await mkdir(this.blobsDir, { recursive: true });
    this.indexing.start(() => this.scan(), (err) => this.opts.logger.error({ err }, 'indexing the blob cache failed; blobs not indexed are looked up one by one and not counted in the budget until a restart'));
    // Nothing is evicted until the totals are whole; then the budget shrinks to maxSize.
    this.budget.scanning(this.indexing.whenDone());
    this.indexed = this.indexing.whenDone().then(() => this.budget.whenScanned()).then(() => this.budget.evict());
  }

  /** Resolves once every blob on disk at start is in the index (and the store was shrunk to its size limit). */
  whenIndexed(): Promise<void> {
    return this.indexed;
  }

  private async scan(): Promise<void> {
    const found: Array<{ digest: Digest; size: number; mtime: number }> = [];
    // Directories only: a stray file (a `.keep`, a note) must not fail the scan.
    for (const algorithm of await subdirectories(this.blobsDir)) {
      const shards = await subdirectories(join(this.blobsDir, algorithm));
      // Shards side by side: a cache of 100,000 blobs is 100,000 stats, and one at a time
      // they took seconds (BENCHMARKS.md, cache scale).
      for (let i = 0; i < shards.length; i += SCAN_PARALLEL_SHARDS) {
        const batch = shards.slice(i, i + SCAN_PARALLEL_SHARDS).map((shard) => this.scanShard(algorithm, shard));
        for (const entries of await Promise.all(batch)) found.push(...entries);
      }
    }
    const seen = this.indexing.decidedKeys();
    // Looked up, committed or deleted while the scan ran: that is newer than what the scan saw
    // (and what was looked up stays the most recently used).
    this.budget.offer(found.filter((f) => !seen.has(f.digest)).map((f) => ({ key: f.digest, size: f.size, usedAt: f.mtime })));
  }

  private async scanShard(algorithm: string, shard: string): Promise<Array<{ digest: Digest; size: number; mtime: number }>> {
    const dir = join(this.blobsDir, algorithm, shard);
    // A shard that cannot be read is left out (logged); the others are indexed.
    const names = await readdir(dir).catch((err: unknown) => {
      this.opts.logger.error({ err, dir }, 'cannot read a cache directory; its blobs are not indexed');
      return [] as string[];
    });
    const entries = await Promise.all(
      names.map(async (hex) => {
        let digest: Digest;
        try {
          digest = parseDigest(`${algorithm}:${hex}`);
        } catch {
          return undefined; // not ours
        }
        const path = join(dir, hex);
        // Gone between readdir and stat (evicted, purged, removed by hand), or unreadable: not indexed,
        // and the rest of the scan goes on.
        const s = await stat(path).catch(() => undefined);
        if (!s?.isFile()) return undefined;
        if (s.size === 0 && digest !== EMPTY_SHA256) {
          // What a crash between rename and data reaching the disk leaves; never a real blob.
          this.opts.logger.warn({ digest }, 'removing an empty cached blob');
          await unlink(path).catch(() => undefined);
          return undefined;
        }
        return { digest, size: s.size, mtime: s.mtimeMs };
      }),
    );
    return entries.filter((e) => e !== undefined);
  }

  async stat(digest: Digest): Promise<BlobInfo | undefined> {
    const size = await this.lookup(digest);
    return size === undefined ? undefined : { digest, size };
  }

  async open(digest: Digest, range?: ByteRange): Promise<BlobRead | undefined> {
    // A range cannot be checked against the digest alone: the whole copy is verified first
    // (once per process; a damaged one is removed and this becomes a miss, fetched again).
    if (range && !this.trust.isTrusted(digest) && (await this.trust.verifyOnce(digest, () => this.verify(digest))) !== 'intact') return undefined;
    return this.openBody(digest, range, 'serve');
  }

  async verifiedFile(digest: Digest): Promise<{ size: number; path: string } | undefined> {
    if (!this.trust.isTrusted(digest)) return undefined;
    const size = await this.lookup(digest);
    if (size === undefined) return undefined;
    // Not pinned: the proxy opens the file after this answer. Evicted before it does, the
    // proxy's fallback asks archway again without the marker (docs/operating.md).
    this.budget.touch(digest);
    this.useTimes.used(digest);
    return { size, path: relative(this.blobsDir, this.path(digest)) };
  }

  async verify(digest: Digest, pace?: ReadPace): Promise<VerifyOutcome> {
    const read = await this.openBody(digest, undefined, 'verify');
    return read ? readThrough(read.stream, pace) : 'gone';
  }

  /**
   * A read of the stored copy, checked before its last byte: `serve` hashes a whole read of a
   * copy not trusted yet and counts as a use; `verify` always hashes and leaves the LRU order
   * alone (a scrub must not make every blob look recently used).
   */
  private async openBody(digest: Digest, range: ByteRange | undefined, purpose: 'serve' | 'verify'): Promise<BlobRead | undefined> {
    const size = await this.lookup(digest);
    if (size === undefined) return undefined;
    const serve = purpose === 'serve';
    this.budget.pin(digest);
    if (serve) this.budget.touch(digest);
    const path = this.path(digest);
    let handle: FileHandle;
    try {
      handle = await open(path, 'r');
    } catch (err) {
      this.release(digest);
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') {
        // Removed behind our back (an operator cleaning the disk): forget it, it is a miss.
        this.budget.forget(digest);
        return undefined;
      }
      throw err;
    }
    const { check, done } = this.trust.begin(digest, serve ? !range && !this.trust.isTrusted(digest) : true);
    const stream = new FileBody(handle, range?.start ?? 0, range ? range.end + 1 : size, this.readBuffers, check);
    stream.once('close', () => {
      done();
      this.release(digest);
    });
    if (serve) this.useTimes.used(digest);
    return { size, stream };
  }

  /** The size of a cached blob; while the start-up scan runs, the disk answers what the index does not know yet. */
  private async lookup(digest: Digest): Promise<number | undefined> {
    const known = this.budget.size(digest);
    if (known !== undefined || !this.indexing.running) return known;
    if (this.indexing.isDecided(digest)) return undefined; // deleted (or absent) since the scan began
    const path = this.path(digest);
    const s = await stat(path).catch(() => undefined);
    // An empty file is what a crash can leave; the scan removes it.
    if (!s?.isFile() || (s.size === 0 && digest !== EMPTY_SHA256)) return undefined;
    // Decided while we asked the disk, or the scan ended meanwhile: the index knows better now.
    if (this.indexing.isDecided(digest) || !this.indexing.running) return this.budget.size(digest);
    this.indexing.decide(digest);
    this.budget.set(digest, s.size);
    return s.size;
  }

  /** The end of one read: the blob may be evicted again (and an over-full store shrinks now). */
  private release(digest: Digest): void {
    this.budget.unpin(digest);
    void this.budget.evict();
  }

  tempPath(): string {
    return join(this.tmpDir, randomUUID());
  }

  hold(digest: Digest): () => void {
    this.budget.pin(digest);
    let held = true;
    return () => {
      if (!held) return;
      held = false;
      this.release(digest);
    };
  }

  reserve(): SpaceReservation {
    return this.budget.reserve();
  }

  async commitFile(path: string, info: BlobInfo, reservation?: SpaceReservation): Promise<void> {
    const target = this.path(info.digest);
    const dir = join(target, '..');
    await mkdir(dir, { recursive: true });
    await rename(path, target);
    // A new copy: trusted only once a read of it from disk matched (see BlobTrust).
    this.trust.forget(info.digest);
    // The rename itself must survive a crash too.
    const handle = await open(dir, 'r');
    await handle.sync().finally(() => handle.close());
    this.indexing.decide(info.digest);
    await this.budget.commit(info.digest, info.size, reservation);
  }

  async delete(digest: Digest): Promise<boolean> {
    if (this.budget.isPinned(digest)) return false;
    this.indexing.decide(digest);
    this.budget.forget(digest);
    this.trust.forget(digest);
    try {
      await unlink(this.path(digest));
      return true;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
  }

  /**
   * A copy whose bytes are not its digest's: every read of it is cut (BlobTrust),
   * and it goes now, pinned or not: readers keep their descriptor and are cut
   * before their last byte anyway, and the next request fetches it again.
   */
  private async removeDamaged(err: DamagedBlobError): Promise<void> {
    const { digest } = err;
    this.trust.condemn(digest);
    this.indexing.decide(digest);
    this.budget.forget(digest);
    this.opts.logger.error({ digest, reason: err.reason }, 'cached blob is damaged: removed, the next request fetches it again');
    this.opts.onDamaged?.(digest);
    await unlink(this.path(digest)).catch((e: NodeJS.ErrnoException) => {
      if (e.code !== 'ENOENT') this.opts.logger.error({ err: e, digest }, 'removing a damaged blob failed');
    });
  }

  async *list(): AsyncIterable<BlobInfo> {
    await this.indexing.whenDone();
    for (const [key, size] of this.budget.entries()) {
      if (!isRecordKey(key)) yield { digest: key as Digest, size };
    }
  }

  usage(): { bytes: number; count: number } {
    return this.budget.blobUsage();
  }

  private path(digest: Digest): string {
    return blobFilePath(this.opts.dir, digest);
  }

  /** The budget evicted this blob: remove its file. */
  private async removeEvicted(digest: Digest, size: number): Promise<void> {
    this.trust.forget(digest);
    try {
      await unlink(this.path(digest));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.opts.logger.error({ err, digest }, 'evicting a blob failed');
    }
    this.opts.logger.info({ digest, size }, 'evicted blob');
    this.opts.onEvict?.({ digest, size });
  }
}
