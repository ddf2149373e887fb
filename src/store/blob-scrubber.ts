import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from 'pino';
import type { BlobStore, ReadPace } from './blob-store.ts';

export interface BlobScrubberOptions {
  store: Pick<BlobStore, 'list' | 'verify'>;
  /** A pass starts this long after the previous one started (or after start-up), or when it ends if it took longer. */
  periodMs: number;
  bytesPerSecond: number;
  logger: Logger;
  onBytes?: (n: number) => void;
}

/**
 * cache.scrub: re-reads every cached blob once per period and checks its
 * digest, at a bounded rate (it sleeps between reads), so rot in blobs that
 * nobody reads is found and removed before a client meets it. The store's
 * `verify` removes a damaged copy; readers of it are cut before their last
 * byte (BlobTrust). The first pass waits a period: a restart must not read
 * the whole cache at once, and reads verify what clients ask for anyway.
 */
export class BlobScrubber {
  private readonly stopping = new AbortController();
  private running: Promise<void> | undefined;

  constructor(private readonly opts: BlobScrubberOptions) {}

  start(): void {
    this.running ??= this.loop().catch((err: unknown) => {
      if (!this.stopping.signal.aborted) this.opts.logger.error({ err }, 'cache scrub stopped');
    });
  }

  async stop(): Promise<void> {
    this.stopping.abort();
    await this.running;
  }

  private async loop(): Promise<void> {
    const { signal } = this.stopping;
    let next = Date.now() + this.opts.periodMs;
    for (;;) {
      await sleep(Math.max(0, next - Date.now()), undefined, { signal });
      next = Date.now() + this.opts.periodMs;
      await this.pass();
    }
  }

  /** One pass over every blob; a blob that cannot be read now is left for the next pass. */
  private async pass(): Promise<void> {
    const { signal } = this.stopping;
    const started = performance.now();
    let bytes = 0;
    const pace: ReadPace = async (n) => {
      bytes += n;
      this.opts.onBytes?.(n);
      // Never ahead of the rate since the pass began: short blobs and long ones alike.
      const ahead = (bytes / this.opts.bytesPerSecond) * 1000 - (performance.now() - started);
      if (ahead > 0) await sleep(ahead, undefined, { signal });
    };
    let checked = 0;
    let damaged = 0;
    for await (const { digest } of this.opts.store.list()) {
      signal.throwIfAborted();
      try {
        const outcome = await this.opts.store.verify(digest, pace);
        if (outcome === 'gone') continue;
        checked++;
        if (outcome === 'damaged') damaged++;
      } catch (err) {
        signal.throwIfAborted();
        this.opts.logger.warn({ err, digest }, 'cache scrub could not read a blob; it is checked again next pass');
      }
    }
    this.opts.logger.info({ checked, damaged, bytes, seconds: Math.round((performance.now() - started) / 100) / 10 }, 'cache scrub pass done');
  }
}
