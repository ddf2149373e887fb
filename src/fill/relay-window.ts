/**
 * The bytes of a fill that could not be written to disk, kept in memory for
 * the clients following it: the most recent `limit` bytes at most. The fill
 * waits (and so stops reading from the upstream) until the slowest follower
 * has read past what must be dropped, so memory stays bounded whatever the
 * blob's size.
 */
export class RelayWindow {
  private chunks: Array<{ start: number; bytes: Buffer }> = [];
  private held = 0;

  constructor(readonly limit: number) {}

  /** Offset of the first byte still held. */
  get start(): number {
    return this.chunks[0]?.start ?? Infinity;
  }

  get bytes(): number {
    return this.held;
  }

  push(start: number, bytes: Buffer): void {
    this.chunks.push({ start, bytes });
    this.held += bytes.length;
  }

  /** Drop chunks that end at or before `offset` (every follower has read them). */
  dropBefore(offset: number): void {
    while (this.chunks.length && (this.chunks[0] as { start: number; bytes: Buffer }).start + (this.chunks[0] as { bytes: Buffer }).bytes.length <= offset) {
      this.held -= (this.chunks.shift() as { bytes: Buffer }).bytes.length;
    }
  }

  /** Copy up to `length` bytes from `position` into `target`; 0 when the position is not held. */
  read(target: Buffer, length: number, position: number): number {
    for (const { start, bytes } of this.chunks) {
      if (position >= start && position < start + bytes.length) {
        return bytes.copy(target, 0, position - start, Math.min(bytes.length, position - start + length));
      }
    }
    return 0;
  }
}
