import { createHash } from 'node:crypto';
import { open, unlink, type FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import type { Logger } from 'pino';
import { RegistryError, shuttingDown, storageFailure } from '../errors.ts';
import { digestAlgorithm, type Digest } from '../oci/digest.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { BlobResponse } from '../upstream/client.ts';
import { discardBody } from '../upstream/discard.ts';
import { badUpstream, upstreamTransportError } from '../upstream/errors.ts';
import type { BlobStore } from './blob-store.ts';

const READ_CHUNK = 256 * 1024;

export type FetchBlob = (signal: AbortSignal) => Promise<BlobResponse>;

/** A failure of archway's own disk during a fill, told apart from the upstream's failures. */
class LocalStorageError extends Error {
  constructor(cause: unknown) {
    super('local storage failed', { cause });
  }
}

async function local<T>(op: Promise<T>): Promise<T> {
  try {
    return await op;
  } catch (err) {
    throw new LocalStorageError(err);
  }
}

/**
 * One download of a blob from an upstream into a temp file, which every
 * client asking for that blob meanwhile reads as it grows. The fill belongs to
 * no client: a client that goes away does not stop it. It hashes as it
 * writes, and commits to the store only when digest and size match; readers
 * never get the last byte of their answer before that, so a corrupt blob is
 * never delivered as complete.
 *
 * The temp file's descriptor stays open until the last reader is done, so a
 * reader is unaffected by the rename on commit or the unlink on failure.
 */
export class BlobFill {
  state: 'running' | 'committed' | 'failed' = 'running';
  error: RegistryError | undefined;
  /** Expected size (upstream Content-Length) until done, then the real one. */
  size: number | undefined;
  written = 0;
  /** Resolves once the upstream answered with headers (size known); rejects if it did not. */
  readonly ready: Promise<void>;

  private readonly tempPath: string;
  private resolveReady!: () => void;
  private rejectReady!: (err: RegistryError) => void;
  private file: FileHandle | undefined;
  private readonly fileOpened: Promise<FileHandle>;
  private holders = 1; // the fill itself
  private changeWaiters: Array<() => void> = [];
  private readonly abort = new AbortController();

  constructor(
    readonly digest: Digest,
    private readonly upstream: string,
    private readonly store: BlobStore,
    private readonly metrics: Metrics,
    private readonly logger: Logger,
  ) {
    this.ready = new Promise<void>((resolve, reject) => {
      this.resolveReady = resolve;
      this.rejectReady = reject;
    });
    // Callers that only wait for the outcome through readers must not see an unhandled rejection.
    this.ready.catch(() => undefined);
    this.tempPath = store.tempPath();
    this.fileOpened = open(this.tempPath, 'w+').then((f) => (this.file = f));
    this.fileOpened.catch(() => undefined);
  }

  /** Run the download; resolves when the fill is committed or has failed (never rejects). */
  async run(fetch: FetchBlob): Promise<void> {
    this.metrics.activeFills.inc();
    try {
      const file = await local(this.fileOpened);
      const res = await fetch(this.abort.signal);
      this.size = res.size;
      this.resolveReady();
      const hash = createHash(digestAlgorithm(this.digest));
      try {
        for await (const chunk of res.body as AsyncIterable<Buffer>) {
          hash.update(chunk);
          await local(file.write(chunk, 0, chunk.length, this.written));
          this.written += chunk.length;
          this.metrics.upstreamBytes.inc({ upstream: this.upstream }, chunk.length);
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
      // On disk before it has a name: a crash must never leave a short file under a digest.
      await local(file.sync());
      await local(this.store.commitFile(this.tempPath, { digest: this.digest, size: this.written }));
      this.state = 'committed';
      this.logger.debug({ digest: this.digest, size: this.written }, 'blob cached');
    } catch (err) {
      this.fail(err);
    } finally {
      this.metrics.activeFills.dec();
      this.changed();
      this.release();
    }
  }

  /** Stop the download (shutdown). Readers get an error. */
  cancel(): void {
    this.abort.abort(shuttingDown());
  }

  /**
   * A stream of bytes [start, end) of the blob as the fill delivers them.
   * Take the reader before awaiting `ready`, so the file stays open for it.
   */
  reader(onBytes: (n: number) => void): FillReader {
    this.holders++;
    return new FillReader(this, onBytes, () => this.release());
  }

  /** Resolves at the next progress, commit or failure. */
  nextChange(): Promise<void> {
    if (this.state !== 'running') return Promise.resolve();
    return new Promise((resolve) => this.changeWaiters.push(resolve));
  }

  /** Positional read from the temp file (valid while a reader holds the fill). */
  async read(buffer: Buffer, length: number, position: number): Promise<number> {
    const file = await this.fileOpened;
    const { bytesRead } = await file.read(buffer, 0, length, position);
    return bytesRead;
  }

  private changed(): void {
    const waiters = this.changeWaiters;
    this.changeWaiters = [];
    for (const w of waiters) w();
  }

  private corrupt(reason: string): RegistryError {
    this.metrics.digestMismatches.inc({ kind: 'blob' });
    this.logger.error({ digest: this.digest, upstream: this.upstream, reason }, 'upstream blob is corrupt; not cached');
    return badUpstream(this.upstream, `sent a corrupt blob (${reason})`, { digest: this.digest });
  }

  private fail(err: unknown): void {
    this.state = 'failed';
    if (this.abort.signal.aborted) {
      this.error = shuttingDown();
    } else if (err instanceof LocalStorageError) {
      this.error = storageFailure(err.cause);
      this.logger.error({ digest: this.digest, err: err.cause }, 'writing a blob to the cache failed');
    } else {
      this.error = upstreamTransportError(this.upstream, err);
      if (!(err instanceof RegistryError)) this.logger.warn({ digest: this.digest, err: this.error.message }, 'blob fill failed');
    }
    this.rejectReady(this.error);
    unlink(this.tempPath).catch(() => undefined);
  }

  private release(): void {
    if (--this.holders > 0) return;
    this.fileOpened.then((f) => f.close()).catch(() => undefined);
  }
}

/**
 * Follows a fill. The range is set once the size is known (`setRange`);
 * until then nothing is read.
 */
export class FillReader extends Readable {
  private pos = 0;
  private end = Infinity; // exclusive
  private pumping = false;
  private released = false;

  constructor(
    private readonly fill: BlobFill,
    private readonly onBytes: (n: number) => void,
    private readonly releaseFill: () => void,
  ) {
    super({ highWaterMark: READ_CHUNK });
  }

  setRange(start: number, endExclusive: number): this {
    this.pos = start;
    this.end = endExclusive;
    return this;
  }

  override _read(): void {
    void this.pump();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.releaseOnce();
    cb(err);
  }

  private releaseOnce(): void {
    if (this.released) return;
    this.released = true;
    this.releaseFill();
  }

  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      for (;;) {
        if (this.destroyed) return;
        const fill = this.fill;
        if (fill.state === 'failed') {
          this.destroy(fill.error);
          return;
        }
        const committed = fill.state === 'committed';
        // Without a range the answer ends where the blob does: the expected size is its last byte.
        const end = Math.min(this.end, fill.size ?? Infinity);
        // The last byte of the answer waits for the verdict on the whole blob, so a
        // client never holds a complete body that turns out to be corrupt (even
        // where the end of a body is the connection's end, as in HTTP/1.0).
        const cap = committed ? Math.min(end, fill.written) : Math.min(end, fill.written) - 1;
        if (committed && this.pos >= cap) {
          this.push(null);
          this.releaseOnce();
          return;
        }
        if (this.pos < cap) {
          const length = Math.min(cap - this.pos, READ_CHUNK);
          const buffer = Buffer.allocUnsafe(length);
          const n = await this.fill.read(buffer, length, this.pos);
          if (this.destroyed) return;
          if (n === 0) throw new Error('temp file shorter than written');
          this.pos += n;
          this.onBytes(n);
          if (!this.push(n === length ? buffer : buffer.subarray(0, n))) return;
          continue;
        }
        await fill.nextChange();
      }
    } catch (err) {
      this.destroy(err as Error);
    } finally {
      this.pumping = false;
    }
  }
}
