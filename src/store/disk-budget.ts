import { unlink } from 'node:fs/promises';
import { join } from 'node:path';
import type { Logger } from 'pino';
import type { SpaceReservation } from './blob-store.ts';
import { LruIndex } from './lru-index.ts';

/**
 * Small files are charged at least a filesystem block: what they really take
 * on disk (an empty confirmation or a 300-byte tag still costs a block and an
 * inode), so the charged total is never below what the directory holds.
 */
const RECORD_BLOCK_BYTES = 4096;

export interface DiskBudgetOptions {
  /** The cache directory: record keys are paths relative to it. */
  dir: string;
  maxSize: number;
  logger: Logger;
  /**
   * Removes an evicted blob (its key is a digest) and says it is gone. Records
   * (every other key: a relative path, which has no `:`) are simply unlinked.
   */
  removeBlob: (digest: string, size: number) => Promise<void>;
}

/**
 * One byte budget for everything archway keeps under its cache directory, as
 * nginx's `max_size` covers a cache and its temp files: cached blobs
 * (keyed by digest), the small records beside them (manifests, tags, the
 * indexes archway made; keyed by their path under the directory), and room
 * reserved by fills for their temp files before they write. One
 * least-recently-used order over all of it; pinned entries (being read) are
 * never evicted.
 *
 * So at every instant the directory holds at most `maxSize` (charged) bytes:
 * a fill writes only into room it reserved, and room is made by evicting
 * first. Slack beyond it: files being read when they were evicted (their space
 * comes back when the reader closes), and atomic writes of records in flight.
 */
export class DiskBudget {
  private readonly index = new LruIndex<string>();
  private reserved = 0;
  private recordBytes = 0;
  private recordCount = 0;
  /** Start-up scans still running: until they are done the totals are partial and nothing is evicted. */
  private scans = 0;
  private scansDone: Promise<void> = Promise.resolve();
  private evicting: Promise<void> | undefined;
  private evictAgain = false;
  private readonly recordListeners: Array<(key: string) => void> = [];
  /**
   * While start-up scans run: when each entry a scan found was last used (its
   * file's time). Entries used since start are not here and rank newest.
   */
  private readonly scannedAt = new Map<string, number>();

  constructor(private readonly opts: DiskBudgetOptions) {}

  get maxSize(): number {
    return this.opts.maxSize;
  }

  /** Everything charged: entries and reservations. */
  get charged(): number {
    return this.index.bytes + this.reserved;
  }

  /** Bytes and count of blob entries (records and reservations not included). */
  blobUsage(): { bytes: number; count: number } {
    return { bytes: this.index.bytes - this.recordBytes, count: this.index.count - this.recordCount };
  }

  recordUsage(): { bytes: number; count: number } {
    return { bytes: this.recordBytes, count: this.recordCount };
  }

  /**
   * A start-up scan of part of the directory. Entries it finds are added with
   * `adopt`; eviction waits until every scan is over.
   */
  scanning(scan: Promise<void>): void {
    this.scans++;
    const done = scan.finally(() => {
      this.scans--;
      if (this.scans === 0) {
        this.scannedAt.clear();
        void this.evict();
      }
    });
    this.scansDone = Promise.all([this.scansDone, done.catch(() => undefined)]).then(() => undefined);
  }

  /** Resolves once every start-up scan is over. */
  whenScanned(): Promise<void> {
    return this.scansDone;
  }

  size(key: string): number | undefined {
    return this.index.size(key);
  }

  has(key: string): boolean {
    return this.index.has(key);
  }

  /** Add or replace an entry as the most recently used, then shrink to the budget. */
  charge(key: string, size: number): Promise<void> {
    this.set(key, size);
    return this.evict();
  }

  /** Add or replace an entry as the most recently used, without evicting (the caller evicts). */
  set(key: string, size: number): void {
    this.forget(key);
    this.scannedAt.delete(key);
    const charged = isRecordKey(key) ? chargeOfRecord(size) : size;
    if (isRecordKey(key)) {
      this.recordBytes += charged;
      this.recordCount++;
    }
    this.index.set(key, charged);
  }

  /**
   * A scan's findings, with the time each was last used: added (unless
   * something newer already decided about the key) and merged into one order
   * with what the other scans found, by those times; whatever was used since
   * start stays the most recent. So blobs, manifests and tags are evicted
   * oldest first after a restart, whichever scan ended last.
   */
  offer(found: ReadonlyArray<{ key: string; size: number; usedAt: number }>): void {
    for (const f of found) {
      if (this.index.has(f.key)) continue;
      this.set(f.key, f.size);
      this.scannedAt.set(f.key, f.usedAt);
    }
    this.index.reorder((key) => this.scannedAt.get(key) ?? Infinity);
  }

  touch(key: string): void {
    this.index.touch(key);
    this.scannedAt.delete(key);
  }

  forget(key: string): void {
    const size = this.index.size(key);
    if (size === undefined) return;
    this.index.delete(key);
    if (isRecordKey(key)) {
      this.recordBytes -= size;
      this.recordCount--;
    }
  }

  pin(key: string): void {
    this.index.pin(key);
  }

  unpin(key: string): void {
    this.index.unpin(key);
  }

  isPinned(key: string): boolean {
    return this.index.isPinned(key);
  }

  /** Called with the key of every record the budget evicts (a store drops what it keeps of it in memory). */
  onRecordEvicted(listener: (key: string) => void): void {
    this.recordListeners.push(listener);
  }

  /** Snapshot of the entries, least recently used first. */
  entries(): Array<[string, number]> {
    return this.index.entries();
  }

  /** Room for a file about to be written; nothing is held until `ensure`. */
  reserve(): SpaceReservation {
    return new Reservation(this);
  }

  /** Give back `bytes` a reservation held. */
  unreserve(bytes: number): void {
    this.reserved -= bytes;
  }

  /**
   * Turn a reservation into an entry in one step (a committed fill), so the
   * blob is never counted twice nor for a moment not at all.
   */
  commit(key: string, size: number, reservation: SpaceReservation | undefined): Promise<void> {
    reservation?.release();
    return this.charge(key, size);
  }

  /**
   * For a Reservation: evict until `more` bytes fit beside what is charged, and reserve them
   * (checked and taken in one step, so two fills never both count on the same
   * room); false when the unpinned entries are not enough.
   */
  async makeRoom(more: number): Promise<boolean> {
    if (more > this.opts.maxSize) return false;
    // What cannot be evicted (being read) and what is reserved stay: if the rest is not enough,
    // evicting it all would only empty the cache for nothing.
    if (this.index.pinnedBytes() + this.reserved + more > this.opts.maxSize) return false;
    for (;;) {
      if (this.charged + more <= this.opts.maxSize) {
        this.reserved += more;
        return true;
      }
      const evicted = this.index.evict(this.opts.maxSize - more - this.reserved);
      if (evicted.length === 0) return false;
      await this.removeAll(evicted);
    }
  }

  /** Shrink to the budget (one run at a time; a call during a run makes it run again). */
  evict(): Promise<void> {
    if (this.scans > 0) return Promise.resolve();
    if (this.evicting) {
      this.evictAgain = true;
      return this.evicting;
    }
    this.evicting = (async () => {
      try {
        do {
          this.evictAgain = false;
          await this.removeAll(this.index.evict(this.opts.maxSize - this.reserved));
        } while (this.evictAgain);
      } finally {
        this.evicting = undefined;
      }
    })();
    return this.evicting;
  }

  private async removeAll(evicted: Array<{ key: string; size: number }>): Promise<void> {
    for (const { key, size } of evicted) {
      if (isRecordKey(key)) {
        this.recordBytes -= size;
        this.recordCount--;
        await unlink(join(this.opts.dir, key)).catch((err: NodeJS.ErrnoException) => {
          if (err.code !== 'ENOENT') this.opts.logger.error({ err, file: key }, 'evicting a cache record failed');
        });
        this.opts.logger.debug({ file: key, size }, 'evicted cache record');
        for (const listener of this.recordListeners) listener(key);
      } else {
        await this.opts.removeBlob(key, size);
      }
    }
  }
}

/** Blobs are keyed by digest (`algorithm:hex`); records by a relative path, which never holds a `:`. */
export function isRecordKey(key: string): boolean {
  return !key.includes(':');
}

function chargeOfRecord(size: number): number {
  return Math.max(RECORD_BLOCK_BYTES, Math.ceil(size / RECORD_BLOCK_BYTES) * RECORD_BLOCK_BYTES);
}

class Reservation implements SpaceReservation {
  private held = 0;
  private released = false;

  constructor(private readonly budget: DiskBudget) {}

  get bytes(): number {
    return this.held;
  }

  async ensure(bytes: number): Promise<boolean> {
    if (this.released) return false;
    const more = bytes - this.held;
    if (more <= 0) return true;
    // The totals are whole only once the start-up scans are done.
    await this.budget.whenScanned();
    if (this.released || !(await this.budget.makeRoom(more))) return false;
    // Released while room was being made: give it straight back.
    if (this.released) {
      this.budget.unreserve(more);
      return false;
    }
    this.held += more;
    return true;
  }

  release(): void {
    if (this.released) return;
    this.released = true;
    this.budget.unreserve(this.held);
    this.held = 0;
  }
}
