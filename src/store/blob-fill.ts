import { createHash } from 'node:crypto';
import { open, unlink, type FileHandle } from 'node:fs/promises';
import type { Logger } from 'pino';
import { RegistryError, shuttingDown } from '../errors.ts';
import { digestAlgorithm, type Digest } from '../oci/digest.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { BlobResponse } from '../upstream/client.ts';
import { discardBody } from '../upstream/discard.ts';
import { badUpstream, upstreamTransportError } from '../upstream/errors.ts';
import type { BlobStore } from './blob-store.ts';
import { FillReader } from './fill-reader.ts';
import { RelayWindow } from './relay-window.ts';
import type { StorageHealth } from './storage-health.ts';

/** What a fill that cannot write to disk keeps in memory for its followers, at most. */
const RELAY_WINDOW_BYTES = 8 * 1024 * 1024;

export type FetchBlob = (signal: AbortSignal) => Promise<BlobResponse>;

export interface BlobFillOptions {
  digest: Digest;
  upstream: string;
  store: BlobStore;
  metrics: Metrics;
  logger: Logger;
  storage: StorageHealth;
  /** Called when the fill stops writing to disk: new clients must not join it (it cannot replay from the start). */
  onRelay: () => void;
}

/**
 * One download of a blob from an upstream into a temp file, which every
 * client asking for that blob meanwhile reads as it grows. The fill belongs to
 * no client: a client that goes away does not stop it. It hashes as it
 * writes, and commits to the store only when digest and size match; readers
 * never get the last byte of their answer before that, so a corrupt blob is
 * never delivered as complete.
 *
 * If the disk refuses a write (full, failing), the fill goes on without it:
 * the rest of the blob is relayed to the clients already following through a
 * bounded memory window, verified all the same, and not cached.
 *
 * The temp file's descriptor stays open until the last reader is done, so a
 * reader is unaffected by the rename on commit or the unlink on failure.
 */
export class BlobFill {
  state: 'running' | 'committed' | 'relayed' | 'failed' = 'running';
  error: RegistryError | undefined;
  /** Expected size (upstream Content-Length) until done, then the real one. */
  size: number | undefined;
  /** Bytes received from the upstream so far. */
  written = 0;
  /**
   * Every byte is in and the digest matched, and the store commits slowly (an
   * upload): readers may take the last byte now, before the commit is done.
   */
  verified = false;
  /** Resolves once the upstream answered with headers (size known); rejects if it did not. */
  readonly ready: Promise<void>;

  private readonly digest: Digest;
  private readonly tempPath: string;
  private resolveReady!: () => void;
  private rejectReady!: (err: RegistryError) => void;
  private file: FileHandle | undefined;
  /** Bytes safely in the temp file; past them (after a disk failure) bytes are in the relay window. */
  private onDisk = 0;
  private relay: RelayWindow | undefined;
  private readonly readers = new Set<FillReader>();
  private holders = 1; // the fill itself
  private changeWaiters: Array<() => void> = [];
  private consumeWaiters: Array<() => void> = [];
  private readonly abort = new AbortController();

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
    const { metrics, logger, store, storage } = this.opts;
    try {
      this.file = await open(this.tempPath, 'w+');
    } catch (err) {
      this.startRelay(err);
    }
    const res = await fetch(this.abort.signal);
    this.size = res.size;
    this.resolveReady();
    const hash = createHash(digestAlgorithm(this.digest));
    try {
      for await (const chunk of res.body as AsyncIterable<Buffer>) {
        hash.update(chunk);
        await this.keep(chunk);
        this.written += chunk.length;
        metrics.upstreamBytes.inc({ upstream: this.opts.upstream }, chunk.length);
        if (this.size !== undefined && this.written > this.size) throw this.corrupt('body longer than Content-Length');
        this.changed();
      }
    } catch (err) {
      discardBody(res.body);
      throw err;
    }
    if (this.size !== undefined && this.written !== this.size) throw this.corrupt(`body ended after ${this.written} of ${this.size} bytes`);
    const actual = `${digestAlgorithm(this.digest)}:${hash.digest('hex')}`;
    if (actual !== this.digest) throw this.corrupt(`digest mismatch: got ${actual}`);
    this.size = this.written;
    if (store.releaseBeforeCommit) {
      this.verified = true;
      this.changed();
    }
    if (this.relay || !this.file) return 'relayed';
    try {
      // On disk before it has a name: a crash must never leave a short file under a digest.
      await this.file.sync();
      await store.commitFile(this.tempPath, { digest: this.digest, size: this.written });
      storage.succeeded();
      logger.debug({ digest: this.digest, size: this.written }, 'blob cached');
      return 'committed';
    } catch (err) {
      // Every byte was verified and is in the temp file: serve it, just not from the cache.
      storage.failed(err, 'blob');
      return 'relayed';
    }
  }

  /** Stop the download (shutdown). Readers get an error. */
  cancel(): void {
    this.abort.abort(shuttingDown());
  }

  /** A reader of the blob. Take it before awaiting `ready`, so the fill keeps its bytes for it. */
  reader(onBytes: (n: number) => void): FillReader {
    this.holders++;
    const reader = new FillReader(this, onBytes, (r) => {
      this.readers.delete(r);
      this.consumed();
      this.release();
    });
    this.readers.add(reader);
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

  /** Put a received chunk where readers find it: the temp file, or after a disk failure the relay window. */
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
        this.startRelay(err);
      }
    }
    const relay = this.relay as RelayWindow;
    relay.push(this.written + offset, offset ? chunk.subarray(offset) : chunk);
    // Bounded memory: wait until the slowest follower has read what must be dropped.
    while (relay.bytes > relay.limit) {
      if (this.readers.size === 0) throw badUpstream(this.opts.upstream, 'blob could not be cached and nobody is reading it');
      relay.dropBefore(Math.min(...[...this.readers].map((r) => r.position)));
      if (relay.bytes <= relay.limit) break;
      await new Promise<void>((resolve) => this.consumeWaiters.push(resolve));
      if (this.abort.signal.aborted) throw shuttingDown();
    }
  }

  private startRelay(err: unknown): void {
    if (this.relay) return;
    this.relay = new RelayWindow(RELAY_WINDOW_BYTES);
    this.opts.storage.failed(err, 'blob');
    this.opts.logger.warn({ digest: this.digest, onDisk: this.onDisk }, 'relaying blob without caching it');
    this.opts.onRelay();
  }

  private changed(): void {
    const waiters = this.changeWaiters;
    this.changeWaiters = [];
    for (const w of waiters) w();
  }

  private corrupt(reason: string): RegistryError {
    this.opts.metrics.digestMismatches.inc({ kind: 'blob' });
    this.opts.logger.error({ digest: this.digest, upstream: this.opts.upstream, reason }, 'upstream blob is corrupt; not cached');
    return badUpstream(this.opts.upstream, `sent a corrupt blob (${reason})`, { digest: this.digest });
  }

  private fail(err: unknown): void {
    this.state = 'failed';
    if (this.abort.signal.aborted) {
      this.error = shuttingDown();
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
  }
}
