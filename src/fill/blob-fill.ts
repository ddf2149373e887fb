import { createHash } from 'node:crypto';
import { open, unlink, type FileHandle } from 'node:fs/promises';
import type { Logger } from 'pino';
import { RegistryError, shuttingDown } from '../errors.ts';
import { digestAlgorithm, type Digest } from '../oci/digest.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { BlobResponse } from '../upstream/upstream.ts';
import { discardBody } from '../upstream/body.ts';
import { badUpstream, upstreamTransportError } from '../upstream/errors.ts';
import type { BlobStore, SpaceReservation } from '../store/blob-store.ts';
import { bodyDeadlineMs, type FillLimits } from './fill-limits.ts';
import { FillReader, type FollowedFill } from './fill-reader.ts';
import { RelayWindow } from './relay-window.ts';
import type { StorageHealth } from '../store/storage-health.ts';

/** What a fill that does not write to disk keeps in memory for its followers, at most. */
const RELAY_WINDOW_BYTES = 8 * 1024 * 1024;
const MAX_TIMER_MS = 2 ** 31 - 1;
/** Room reserved ahead at a time for a body of unknown length. */
const RESERVE_STEP_BYTES = 8 * 1024 * 1024;

export type FetchBlob = (signal: AbortSignal) => Promise<BlobResponse>;

/** Why a fill does not cache what it relays (the X-Archway-Uncached header, the relay metric). */
export type RelayReason = 'too-large' | 'no-room' | 'storage';

/** Why a fill was stopped before its end (the fill-abort metric). */
export type AbortReason = 'too-long' | 'short' | 'digest' | 'size-mismatch' | 'deadline' | 'unread';

export interface BlobFillOptions {
  digest: Digest;
  upstream: string;
  store: BlobStore;
  metrics: Metrics;
  logger: Logger;
  storage: StorageHealth;
  limits: FillLimits;
  /** The size a manifest descriptor archway served gives this blob, if any. */
  descriptorSize: number | undefined;
  /**
   * New clients must not join this fill any more: it stopped writing to disk (it cannot replay
   * from the start), or it was stopped.
   */
  onUnjoinable: () => void;
  /** The last reader left while the fill runs: the owner decides whether it may go on alone. */
  onReaderless: (fill: BlobFill) => void;
  /** A reader joined a fill that had none. */
  onReadersBack: (fill: BlobFill) => void;
}

/**
 * One download of a blob from an upstream into a temp file, which every
 * client asking for that blob meanwhile reads as it grows. It hashes as it
 * writes, and commits to the store only when digest and size match; readers
 * never get the last byte of their answer before that, so a corrupt blob is
 * never delivered as complete.
 *
 * Every resource it takes is bounded:
 * - the body may not be longer than the size archway knows for the blob (a
 *   manifest's descriptor, else the upstream's Content-Length, else
 *   cache.maxBlobSize): one byte more stops the fill, and every reader's
 *   answer is cut;
 * - it writes only into room reserved in the store's budget beforehand
 *   (eviction makes it); a blob known to be larger than the cache can hold is
 *   relayed to its readers through a bounded memory window, never written;
 * - the whole body has a deadline (timeouts.body, longer for larger blobs), so
 *   a trickle cannot hold it and its followers for ever;
 * - once its last reader has left, its owner may cancel it (FillTable: a
 *   relay nobody reads, or one background fill too many).
 *
 * If the disk refuses a write (full, failing), the fill goes on without it:
 * the rest of the blob is relayed to the clients already following, verified
 * all the same, and not cached.
 *
 * The temp file's descriptor stays open until the last reader is done, so a
 * reader is unaffected by the rename on commit or the unlink on failure.
 */
export class BlobFill implements FollowedFill {
  state: 'running' | 'committed' | 'relayed' | 'failed' = 'running';
  error: RegistryError | undefined;
  /** The size archway knows (descriptor, else Content-Length) until done, then the real one. */
  size: number | undefined;
  /** Bytes received from the upstream so far. */
  written = 0;
  /**
   * Every byte is in and the digest matched, and the store commits slowly (an
   * upload): readers may take the last byte now, before the commit is done.
   */
  verified = false;
  /** Set (before `ready`) when the fill will not cache the blob, and why. */
  uncached: RelayReason | undefined;
  /** Resolves once the upstream answered with headers (size known); rejects if it did not. */
  readonly ready: Promise<void>;

  private readonly digest: Digest;
  private readonly tempPath: string;
  private resolveReady!: () => void;
  private rejectReady!: (err: RegistryError) => void;
  private file: FileHandle | undefined;
  private reservation: SpaceReservation | undefined;
  /** Bytes safely in the temp file; past them (after a disk failure) bytes are in the relay window. */
  private onDisk = 0;
  private relay: RelayWindow | undefined;
  private readonly readers = new Set<FillReader>();
  private holders = 1; // the fill itself
  private changeWaiters: Array<() => void> = [];
  private consumeWaiters: Array<() => void> = [];
  private readonly abort = new AbortController();
  /** Why the fill was stopped from outside (or by its deadline), for its readers. */
  private stopped: RegistryError | undefined;
  private deadline: NodeJS.Timeout | undefined;
  private startedAt = 0;
  /** Time spent waiting for slow readers to make room in the relay window (not held against the upstream). */
  private waitedMs = 0;
  /** The whole body is in: nothing can stop the fill any more but its own commit. */
  private bodyDone = false;
  /** Keeps the committed blob from eviction while readers of this fill still read its file. */
  private unhold: (() => void) | undefined;

  constructor(private readonly opts: BlobFillOptions) {
    this.digest = opts.digest;
    this.ready = new Promise<void>((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    // Callers that only wait for the outcome through readers must not see an unhandled rejection.
    this.ready.catch(() => undefined);
    this.tempPath = opts.store.tempPath();
  }

  /** True once the fill has stopped writing to disk (or never did): it cannot be cached. */
  get relaying(): boolean {
    return this.relay !== undefined;
  }

  /** Run the download; resolves when the fill is committed, relayed or has failed (never rejects). */
  async run(fetch: FetchBlob): Promise<void> {
    const { metrics } = this.opts;
    metrics.activeFills.inc();
    let outcome: 'committed' | 'relayed' | undefined;
    let failure: unknown;
    try {
      outcome = await this.download(fetch);
    } catch (err) {
      failure = err;
    } finally {
      clearTimeout(this.deadline);
    }
    // Clean up before readers can see the end: nothing of this fill outlives its answer on disk.
    if (outcome !== 'committed') await unlink(this.tempPath).catch(() => undefined);
    if (outcome) this.state = outcome;
    else this.fail(failure);
    metrics.activeFills.dec();
    this.changed();
    this.release();
  }

  private async download(fetch: FetchBlob): Promise<'committed' | 'relayed'> {
    const { metrics, logger, store, storage, limits, descriptorSize } = this.opts;
    this.startedAt = performance.now();
    this.armDeadline();
    const res = await fetch(this.abort.signal);
    const hash = createHash(digestAlgorithm(this.digest));
    try {
      if (descriptorSize !== undefined && res.size !== undefined && res.size !== descriptorSize) {
        throw this.aborted('size-mismatch', `Content-Length ${res.size} disagrees with the manifest's size ${descriptorSize}`);
      }
      const known = descriptorSize ?? res.size;
      this.size = known;
      // Past this many bytes the upstream is lying (or endless): stop at the first byte too many.
      const bound = known ?? limits.maxBlobSize;
      await this.prepareDisk(known, bound);
      this.resolveReady();
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        if (this.written + chunk.length > bound) {
          throw this.aborted('too-long', known === undefined ? `body longer than cache.maxBlobSize (${bound} bytes)` : `body longer than the ${bound} bytes it should have`);
        }
        hash.update(chunk);
        if (known === undefined && this.file && !this.relay) await this.reserveFor(this.written + chunk.length, bound);
        await this.keep(chunk);
        this.written += chunk.length;
        metrics.upstreamBytes.inc({ upstream: this.opts.upstream }, chunk.length);
        this.changed();
      }
    } catch (err) {
      discardBody(res.body);
      // An abort from outside (deadline, cancel) surfaces here as the body's error: say why instead.
      throw this.stopped ?? err;
    }
    this.bodyDone = true;
    clearTimeout(this.deadline);
    if (this.size !== undefined && this.written !== this.size) throw this.aborted('short', `body ended after ${this.written} of ${this.size} bytes`);
    const actual = `${digestAlgorithm(this.digest)}:${hash.digest('hex')}`;
    if (actual !== this.digest) throw this.aborted('digest', `digest mismatch: got ${actual}`);
    this.size = this.written;
    if (store.releaseBeforeCommit) {
      this.verified = true;
      this.changed();
    }
    if (this.relay || !this.file) return 'relayed';
    try {
      // On disk before it has a name: a crash must never leave a short file under a digest.
      await this.file.sync();
      await store.commitFile(this.tempPath, { digest: this.digest, size: this.written }, this.reservation);
      // Readers still reading the (renamed) file keep its blocks on disk: the entry stays until they are done.
      if (this.holders > 1) this.unhold = store.hold?.(this.digest);
      storage.succeeded();
      logger.debug({ digest: this.digest, size: this.written }, 'blob cached');
      return 'committed';
    } catch (err) {
      // Every byte was verified and is in the temp file: serve it, just not from the cache.
      storage.failed(err, 'blob');
      return 'relayed';
    }
  }

  /**
   * Where the bytes go: a temp file in room reserved for the known size (or a
   * first step of an unknown one), or, for a blob larger than the cache may
   * hold or when no room can be made, only the relay window.
   */
  private async prepareDisk(known: number | undefined, bound: number): Promise<void> {
    const { store, limits } = this.opts;
    if (known !== undefined && known > limits.cacheLimit) return this.startRelay('too-large');
    if (store.reserve) {
      this.reservation = store.reserve();
      if (!(await this.reservation.ensure(known ?? Math.min(bound, RESERVE_STEP_BYTES)))) return this.startRelay('no-room');
    }
    try {
      this.file = await open(this.tempPath, 'w+');
    } catch (err) {
      this.startRelay('storage', err);
    }
  }

  /** Grow the reservation of a body of unknown length ahead of its bytes; relay when no more room can be made. */
  private async reserveFor(total: number, bound: number): Promise<void> {
    const reservation = this.reservation;
    if (!reservation || total <= reservation.bytes) return;
    if (!(await reservation.ensure(Math.min(bound, total + RESERVE_STEP_BYTES)))) this.startRelay('no-room');
  }

  /**
   * The whole body's deadline: timeouts.body, or longer for a blob whose size
   * at the slowest allowed rate needs longer. Checked when due, and moved on
   * while the body (of unknown length) keeps growing fast enough.
   */
  private armDeadline(): void {
    const { limits } = this.opts;
    const due = () => bodyDeadlineMs(limits, this.size ?? this.written);
    // setTimeout takes at most 2^31-1 ms (about 24 days); a longer wait is checked again then.
    const arm = (ms: number) => {
      this.deadline = setTimeout(check, Math.min(ms, MAX_TIMER_MS));
      this.deadline.unref();
    };
    const check = () => {
      if (this.bodyDone) return;
      const elapsed = performance.now() - this.startedAt - this.waitedMs;
      const remaining = due() - elapsed;
      if (remaining > 0) return arm(remaining);
      const rate = Math.round(this.written / (elapsed / 1000));
      this.stop(this.aborted('deadline', `body too slow: ${this.written} bytes in ${Math.round(elapsed / 1000)} s (${rate} B/s)`));
    };
    arm(due());
  }

  /** Stop the download (shutdown). Readers get an error. */
  cancel(reason: RegistryError = shuttingDown()): void {
    this.stop(reason);
  }

  /** Stop because nobody is left to read it (the owner's policy): counted and logged as 'unread'. */
  abandon(why: string): void {
    if (this.state === 'running' && !this.bodyDone && !this.abort.signal.aborted) this.stop(this.aborted('unread', why));
  }

  private stop(reason: RegistryError): void {
    if (this.abort.signal.aborted) return;
    this.stopped = reason;
    // A stopped fill takes no newcomers: they start afresh.
    this.opts.onUnjoinable();
    this.abort.abort(reason);
    // A relay waiting for its readers to make room wakes up to see it.
    this.consumed();
  }

  /** A reader of the blob. Take it before awaiting `ready`, so the fill keeps its bytes for it. */
  reader(onBytes: (n: number) => void): FillReader {
    this.holders++;
    const back = this.readers.size === 0 && this.state === 'running';
    const reader = new FillReader(this, onBytes, (r) => {
      this.readers.delete(r);
      this.consumed();
      if (this.readers.size === 0 && this.state === 'running' && !this.verified) this.opts.onReaderless(this);
      this.release();
    });
    this.readers.add(reader);
    if (back) this.opts.onReadersBack(this);
    return reader;
  }

  /** Resolves at the next progress, end or failure. */
  nextChange(): Promise<void> {
    if (this.state !== 'running' || this.verified) return Promise.resolve();
    return new Promise((resolve) => this.changeWaiters.push(resolve));
  }

  /** A reader moved on: a relay waiting for room may continue. */
  consumed(): void {
    const waiters = this.consumeWaiters;
    this.consumeWaiters = [];
    for (const w of waiters) w();
  }

  /** Read received bytes at `position` (from the temp file, or the relay window past what reached the disk). */
  async read(buffer: Buffer, length: number, position: number): Promise<number> {
    if (position < this.onDisk && this.file) {
      const { bytesRead } = await this.file.read(buffer, 0, Math.min(length, this.onDisk - position), position);
      if (bytesRead === 0) throw new Error('temp file shorter than written');
      return bytesRead;
    }
    const n = this.relay?.read(buffer, length, position) ?? 0;
    if (n === 0) throw new Error('fell behind the relay window');
    return n;
  }

  /** Put a received chunk where readers find it: the temp file, or when it is not written the relay window. */
  private async keep(chunk: Buffer): Promise<void> {
    let offset = 0;
    if (!this.relay && this.file) {
      try {
        // A nearly full disk takes part of a write and refuses the rest.
        while (offset < chunk.length) {
          const { bytesWritten } = await this.file.write(chunk, offset, chunk.length - offset, this.written + offset);
          if (bytesWritten === 0) throw new Error('write made no progress');
          offset += bytesWritten;
          this.onDisk += bytesWritten;
        }
        return;
      } catch (err) {
        this.startRelay('storage', err);
      }
    }
    const relay = this.relay as RelayWindow;
    relay.push(this.written + offset, offset ? chunk.subarray(offset) : chunk);
    // Bounded memory: wait until the slowest follower has read what must be dropped.
    while (relay.bytes > relay.limit) {
      if (this.stopped) throw this.stopped;
      if (this.readers.size === 0) throw this.aborted('unread', 'blob could not be cached and nobody is reading it');
      relay.dropBefore(Math.min(...[...this.readers].map((r) => r.windowPosition)));
      if (relay.bytes <= relay.limit) break;
      // Waiting for readers is not the upstream's slowness: the body deadline does not count it
      // (a stalled client is timeouts.clientIdle's to drop).
      const waitStarted = performance.now();
      await new Promise<void>((resolve) => this.consumeWaiters.push(resolve));
      this.waitedMs += performance.now() - waitStarted;
    }
  }

  private startRelay(reason: RelayReason, err?: unknown): void {
    if (this.relay) return;
    this.relay = new RelayWindow(RELAY_WINDOW_BYTES);
    if (this.state === 'running' && this.uncached === undefined) this.uncached = reason;
    this.opts.metrics.uncachedRelays.inc({ reason });
    if (reason === 'storage') this.opts.storage.failed(err, 'blob');
    const why = { 'too-large': 'larger than the cache may hold', 'no-room': 'no room can be made in the cache', storage: 'the cache disk refused it' }[reason];
    this.opts.logger.warn({ digest: this.digest, upstream: this.opts.upstream, size: this.size, onDisk: this.onDisk, reason }, `relaying blob without caching it: ${why}`);
    this.opts.onUnjoinable();
  }

  private changed(): void {
    const waiters = this.changeWaiters;
    this.changeWaiters = [];
    for (const w of waiters) w();
  }

  /** A fill stopped for `reason`: counted, logged, and the error its readers get. */
  private aborted(reason: AbortReason, message: string): RegistryError {
    const { metrics, logger } = this.opts;
    metrics.fillAborts.inc({ reason });
    const fields = { digest: this.digest, upstream: this.opts.upstream, reason, received: this.written };
    if (reason === 'unread') {
      logger.info(fields, `blob fill stopped: ${message}`);
      return new RegistryError('UNAVAILABLE', `blob fill stopped: ${message}`, { status: 503, detail: { digest: this.digest } });
    }
    if (reason !== 'deadline') metrics.digestMismatches.inc({ kind: 'blob' });
    logger.error(fields, `upstream blob refused; not cached: ${message}`);
    return badUpstream(this.opts.upstream, reason === 'deadline' ? message : `sent a corrupt blob (${message})`, { digest: this.digest });
  }

  private fail(err: unknown): void {
    this.state = 'failed';
    if (this.stopped) {
      this.error = this.stopped;
    } else {
      this.error = upstreamTransportError(this.opts.upstream, err);
      if (!(err instanceof RegistryError)) this.opts.logger.warn({ digest: this.digest, err: this.error.message }, 'blob fill failed');
    }
    this.rejectReady(this.error);
    this.consumed();
  }

  private release(): void {
    if (--this.holders > 0) return;
    this.file?.close().catch(() => undefined);
    // The file's blocks come back only now that no reader holds it (committed: the entry took the room over).
    this.reservation?.release();
    this.unhold?.();
  }
}
