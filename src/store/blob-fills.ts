import type { Logger } from 'pino';
import type { Digest } from '../oci/digest.ts';
import type { Metrics } from '../observability/metrics.ts';
import { BlobFill, type FetchBlob } from './blob-fill.ts';
import type { BlobStore } from './blob-store.ts';

/**
 * The fills under way in this process, one per digest: the coalescing point.
 * A digest is content, so one fill serves every repository and upstream that
 * asks for it while it runs.
 */
export class BlobFills {
  private readonly fills = new Map<Digest, BlobFill>();

  constructor(
    private readonly store: BlobStore,
    private readonly metrics: Metrics,
    private readonly logger: Logger,
  ) {}

  get(digest: Digest): BlobFill | undefined {
    return this.fills.get(digest);
  }

  /** Start a fill for `digest` (there must be none running). */
  start(digest: Digest, upstream: string, fetch: FetchBlob): BlobFill {
    const fill = new BlobFill(digest, upstream, this.store, this.metrics, this.logger);
    this.fills.set(digest, fill);
    void fill.run(fetch).finally(() => {
      if (this.fills.get(digest) === fill) this.fills.delete(digest);
    });
    return fill;
  }

  get size(): number {
    return this.fills.size;
  }

  /** Shutdown: stop every download and wait until each has cleaned up. */
  async cancelAll(): Promise<void> {
    const running = [...this.fills.values()];
    for (const fill of running) fill.cancel();
    await Promise.all(running.map((f) => f.nextChange().then(() => f.ready.catch(() => undefined))));
    while (this.fills.size) await new Promise((r) => setTimeout(r, 10));
  }
}
