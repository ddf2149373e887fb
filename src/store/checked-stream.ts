import { Transform, type TransformCallback } from 'node:stream';
import type { ReadCheck } from './read-check.ts';

/**
 * A stored blob's bytes from a stream (an object store's GET), checked as
 * they pass: exactly `length` bytes, each shown to the check, and the chunk
 * holding the last byte handed on only on a good verdict. Too few or too many
 * bytes, or a bad verdict, end it with the check's error instead.
 */
export class CheckedStream extends Transform {
  private received = 0;

  constructor(
    private readonly length: number,
    private readonly check: ReadCheck,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.received += chunk.length;
    if (this.received > this.length) return callback(this.check.damaged(`the stored object is longer than ${this.length} bytes`));
    this.check.update(chunk);
    if (this.received === this.length) {
      const bad = this.check.verdict();
      if (bad !== undefined) return callback(this.check.damaged(bad));
    }
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    if (this.received < this.length) return callback(this.check.damaged(`the stored object ended at byte ${this.received} of ${this.length}`));
    callback();
  }
}
