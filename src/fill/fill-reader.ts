import { Readable } from 'node:stream';
import type { RegistryError } from '../errors.ts';

const READ_CHUNK = 256 * 1024;

/** What a reader follows: a download as it grows (BlobFill). */
export interface FollowedFill {
  readonly state: 'running' | 'committed' | 'relayed' | 'failed';
  readonly error: RegistryError | undefined;
  /** Every byte is in and verified (the last byte may go out before the commit). */
  readonly verified: boolean;
  /** The size archway knows, if any. */
  readonly size: number | undefined;
  /** Bytes received so far. */
  readonly written: number;
  read(buffer: Buffer, length: number, position: number): Promise<number>;
  /** Resolves at the next progress, end or failure. */
  nextChange(): Promise<void>;
  /** This reader moved on: a relay waiting for room may continue. */
  consumed(): void;
}

/**
 * Follows a fill as it grows. The range is set once the size is known
 * (`setRange`); until then nothing is read. The last byte of the answer waits
 * for the fill's verdict on the whole blob, so a client never holds a complete
 * body that turns out to be corrupt (even where the end of a body is the
 * connection's end, as in HTTP/1.0).
 */
export class FillReader extends Readable {
  /** Next byte to read; the fill reads it to know how far its followers are. */
  position = 0;
  /**
   * The last byte of the answer, read ahead while the fill is not yet
   * verified: it is held here, not in the fill, so a fill relaying through its
   * bounded window need not keep it (and wait on this reader) until the end.
   */
  private held: Buffer | undefined;
  private end = Infinity; // exclusive
  private pumping = false;
  private released = false;

  constructor(
    private readonly fill: FollowedFill,
    private readonly onBytes: (n: number) => void,
    private readonly releaseFill: (reader: FillReader) => void,
  ) {
    super({ highWaterMark: READ_CHUNK });
  }

  /** Up to where the fill must keep bytes for this reader. */
  get windowPosition(): number {
    return this.held ? this.position + 1 : this.position;
  }

  setRange(start: number, endExclusive: number): this {
    this.position = start;
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
    this.releaseFill(this);
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
        // Verified is enough: committing (an upload to an object store) need not hold clients back.
        const done = fill.state !== 'running' || fill.verified;
        // Without a range the answer ends where the blob does: the expected size is its last byte.
        const end = Math.min(this.end, fill.size ?? Infinity);
        const cap = done ? Math.min(end, fill.written) : Math.min(end, fill.written) - 1;
        if (done && this.held) {
          // Verified: the byte held back may go now.
          const last = this.held;
          this.held = undefined;
          this.position += 1;
          this.onBytes(1);
          if (!this.push(last)) return;
          continue;
        }
        if (!done && !this.held && end !== Infinity && this.position === end - 1 && fill.written >= end) {
          const last = Buffer.allocUnsafe(1);
          await fill.read(last, 1, this.position);
          if (this.destroyed) return;
          this.held = last;
          fill.consumed();
          continue;
        }
        if (done && this.position >= cap) {
          this.push(null);
          this.releaseOnce();
          return;
        }
        if (this.position < cap) {
          const length = Math.min(cap - this.position, READ_CHUNK);
          const buffer = Buffer.allocUnsafe(length);
          const n = await fill.read(buffer, length, this.position);
          if (this.destroyed) return;
          this.position += n;
          this.onBytes(n);
          fill.consumed();
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
