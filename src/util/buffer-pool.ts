/**
 * Fixed-size buffers handed out and taken back, so serving a cached blob
 * does not allocate (and later collect) a fresh buffer for every chunk.
 * Measured in BENCHMARKS.md: per-chunk 1 MiB allocations spent ~20% of the
 * event loop in allocation and GC under wrk load; reusing them removed both.
 */
export class BufferPool {
  private readonly free: Buffer[] = [];

  constructor(
    readonly bufferSize: number,
    /** Buffers kept for reuse when idle; more can be out at once, the extra ones are left to GC. */
    private readonly maxIdle: number,
  ) {}

  take(): Buffer {
    // Slow (unpooled) allocation: these live long and must not pin Node's shared 8 KiB slabs.
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.bufferSize);
  }

  /** Only give back a buffer nothing else refers to any more (a completed write, not a pending one). */
  give(buffer: Buffer): void {
    if (buffer.length === this.bufferSize && this.free.length < this.maxIdle) this.free.push(buffer);
  }

  get idle(): number {
    return this.free.length;
  }
}
