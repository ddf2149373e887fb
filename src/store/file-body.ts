import type { FileHandle } from 'node:fs/promises';
import { Readable, type Writable } from 'node:stream';
import type { BufferPool } from '../util/buffer-pool.ts';

/**
 * A byte range of a cached blob file. Readable like any stream (for the
 * `cache verify` command and other generic consumers), and with a faster path
 * for the HTTP answer, `writeTo`, that reads into two recycled buffers: one
 * is being written to the socket while the next chunk is read into the other.
 * The handle is closed and 'close' emitted once, however it ends.
 */
export class FileBody extends Readable {
  /** Bytes read from the file so far (both paths), for the served-bytes metric. */
  bytesRead = 0;
  private position: number;

  constructor(
    private readonly handle: FileHandle,
    start: number,
    /** Exclusive. */
    private readonly end: number,
    private readonly pool: BufferPool,
  ) {
    super({ highWaterMark: pool.bufferSize });
    this.position = start;
  }

  override _read(): void {
    const length = Math.min(this.pool.bufferSize, this.end - this.position);
    if (length <= 0) {
      this.push(null);
      return;
    }
    // A stream consumer may hold on to what it was given, so this path never recycles.
    const buffer = Buffer.allocUnsafe(length);
    this.readChunk(buffer, length).then(
      (n) => this.push(n === length ? buffer : buffer.subarray(0, n)),
      (err: Error) => this.destroy(err),
    );
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    // FileHandle.close waits for a read still in flight.
    this.handle.close().then(
      () => callback(err),
      (closeErr: Error) => callback(err ?? closeErr),
    );
  }

  /**
   * Write the whole range to `dest` and end it; resolves when the last write
   * was flushed. Rejects on a read error (the caller must then destroy
   * `dest`: a cut answer, never a short one passed as complete). Returns early
   * when `dest` closes first. Always destroys this body. Do not also pipe it.
   */
  async writeTo(dest: Writable): Promise<void> {
    const buffers = [this.pool.take(), this.pool.take()];
    // A buffer goes back to the pool only when no write may still refer to it.
    let recyclable = false;
    let destClosed: () => void = () => {};
    const closed = new Promise<false>((resolve) => {
      destClosed = () => resolve(false);
      dest.once('close', destClosed);
    });
    try {
      let turn = 0;
      let previousWrite: Promise<boolean> | undefined;
      while (this.position < this.end) {
        const buffer = buffers[turn] as Buffer;
        turn ^= 1;
        // This buffer's last write was awaited before the other buffer's write started.
        const n = await this.readChunk(buffer, Math.min(buffer.length, this.end - this.position));
        if (previousWrite && !(await Promise.race([previousWrite, closed]))) return;
        if (dest.destroyed) return;
        previousWrite = new Promise<boolean>((resolve) => {
          dest.write(n === buffer.length ? buffer : buffer.subarray(0, n), (err) => resolve(!err));
        });
      }
      if (previousWrite && !(await Promise.race([previousWrite, closed]))) return;
      recyclable = true;
      dest.end();
    } finally {
      dest.removeListener('close', destClosed);
      if (recyclable) for (const buffer of buffers) this.pool.give(buffer);
      this.destroy();
    }
  }

  private async readChunk(buffer: Buffer, length: number): Promise<number> {
    const { bytesRead } = await this.handle.read(buffer, 0, length, this.position);
    // The index says the file is longer: it was truncated behind our back.
    if (bytesRead === 0) throw new Error(`cached blob file ended at byte ${this.position} of ${this.end}`);
    this.position += bytesRead;
    this.bytesRead += bytesRead;
    return bytesRead;
  }
}
