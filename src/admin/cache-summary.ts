import type { BlobStore } from '../store/blob-store.ts';
import type { CacheInventory } from './cache-inventory.ts';
import type { TrafficStats } from '../observability/traffic.ts';
import type { LocalImageService } from '../local/local-image-service.ts';

/** How many repositories the summary lists. */
const TOP = 10;

interface SummarySources {
  blobStore: BlobStore;
  inventory: CacheInventory;
  traffic: TrafficStats;
  localImages: Pick<LocalImageService, 'summary'>;
  config: { cache: { maxSize: number } };
}

/**
 * The inventory walk (every tag and manifest, a stat per blob) is the costly
 * part of the summary; on a large cache an open status page would repeat it
 * every few seconds. It is reused while nothing changed, and, when it is slow,
 * for a while even if something did (at most 20× its own cost, a minute).
 */
export class InventorySnapshot {
  private last: { at: number; state: string; costMs: number; value: Awaited<ReturnType<InventorySnapshot['compute']>> } | undefined;

  constructor(private readonly s: Pick<SummarySources, 'inventory'>) {}

  async get(state: string) {
    const now = performance.now();
    const last = this.last;
    if (last && now - last.at < 60_000 && (last.state === state || now - last.at < 20 * last.costMs)) return last.value;
    const value = await this.compute();
    this.last = { at: now, state, costMs: performance.now() - now, value };
    return value;
  }

  invalidate(): void {
    this.last = undefined;
  }

  private async compute() {
    const [counts, sizes] = await Promise.all([this.s.inventory.counts(), this.s.inventory.repositorySizes()]);
    return { counts, sizes };
  }
}

/** `GET /_archway/cache` and `archway cache stats`: totals, traffic since start, the largest and most pulled repositories. */
export async function cacheSummary(s: SummarySources, snapshot: InventorySnapshot) {
  const usage = s.blobStore.usage();
  const totals = s.traffic.totals();
  const { counts, sizes } = await snapshot.get(`${usage.bytes}/${usage.count}/${totals.hits + totals.misses}`);
  const sizeOf = new Map(sizes.map((r) => [r.repository, r.bytes]));
  return {
    bytes: usage.bytes,
    maxBytes: s.config.cache.maxSize,
    blobs: usage.count,
    manifests: counts.manifests,
    tags: counts.tags,
    since: new Date(totals.since).toISOString(),
    hits: totals.hits,
    misses: totals.misses,
    hitRatio: totals.hitRatio,
    bytesFromCache: totals.bytesFromCache,
    bytesFromUpstream: totals.bytesFromUpstream,
    // Every byte served from the cache is a byte the upstream did not send again.
    bytesSavedUpstream: totals.bytesFromCache,
    largestRepositories: sizes.slice(0, TOP),
    mostPulledRepositories: s.traffic.mostPulledRepositories(TOP).map((r) => ({ ...r, bytes: sizeOf.get(r.repository) ?? 0 })),
    // Pushed to archway, outside the cache's budget and never evicted: counted apart from it.
    local: await s.localImages.summary(),
  };
}

/** What `GET /_archway/cache` answers (and `archway cache stats` reads). */
export type CacheSummary = Awaited<ReturnType<typeof cacheSummary>>;
