import type { Logger } from 'pino';
import type { Metrics } from '../observability/metrics.ts';

/**
 * Whether the cache's disk accepts writes. When it does not (full, read-only,
 * failing), archway keeps serving, from the upstream without caching; this
 * says so once in the log and in `archway_cache_storage_failing`, and says so
 * again when a write succeeds and caching resumes.
 */
export class StorageHealth {
  private failingSince: number | undefined;

  constructor(
    private readonly metrics: Metrics,
    private readonly logger: Logger,
  ) {}

  get failing(): boolean {
    return this.failingSince !== undefined;
  }

  failed(err: unknown, what: string): void {
    this.metrics.cacheWriteFailures.inc({ what });
    if (this.failingSince !== undefined) return;
    this.failingSince = Date.now();
    this.metrics.cacheStorageFailing.set(1);
    this.logger.error({ err: (err as NodeJS.ErrnoException)?.code ?? String(err), what }, 'cache storage is failing: serving from the upstream without caching');
  }

  succeeded(): void {
    if (this.failingSince === undefined) return;
    this.logger.info({ failedForMs: Date.now() - this.failingSince }, 'cache storage works again: caching resumed');
    this.failingSince = undefined;
    this.metrics.cacheStorageFailing.set(0);
  }

  /** Run a cache write that the answer does not depend on; a failure is reported, not thrown. */
  async bestEffort(what: string, op: () => Promise<void>): Promise<void> {
    try {
      await op();
    } catch (err) {
      this.failed(err, what);
    }
  }
}
