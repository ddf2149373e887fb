import type { Logger } from 'pino';
import type { Digest } from '../oci/digest.ts';
import type { Metrics } from '../observability/metrics.ts';
import { BlobFill, type FetchBlob } from './blob-fill.ts';
import type { BlobStore } from './blob-store.ts';

/**
 * The fills under way in this process, one per upstream and digest: the
 * coalescing point. Per upstream, because a fill that fails at one registry
 * (404, refused credentials) must not fail clients of another that has the
 * blob; the committed blob is shared by all.
 */
export class BlobFills {
  private readonly fills = new Map<string, { fill: BlobFill; done: Promise<void> }>();

  constructor(
    private readonly store: BlobStore,
    private readonly metrics: Metrics,
    private readonly logger: Logger,
  ) {}

  get(upstream: string, digest: Digest): BlobFill | undefined {
    return this.fills.get(key(upstream, digest))?.fill;
  }

  /** Start a fill (there must be none running for this upstream and digest). */
  start(upstream: string, digest: Digest, fetch: FetchBlob): BlobFill {
    const fill = new BlobFill(digest, upstream, this.store, this.metrics, this.logger);
    const k = key(upstream, digest);
    const done = fill.run(fetch).finally(() => {
      if (this.fills.get(k)?.fill === fill) this.fills.delete(k);
    });
    this.fills.set(k, { fill, done });
    return fill;
  }

  get size(): number {
    return this.fills.size;
  }

  /** Shutdown: stop every download and wait until each has cleaned up. */
  async cancelAll(): Promise<void> {
    const running = [...this.fills.values()];
    for (const { fill } of running) fill.cancel();
    await Promise.all(running.map((r) => r.done));
  }
}

function key(upstream: string, digest: Digest): string {
  return `${upstream}\n${digest}`;
}
