import pino, { type Logger } from 'pino';
import { CacheInventory } from './admin/cache-inventory.ts';
import { PrefetchJobs } from './admin/prefetch.ts';
import type { Config } from './config/schema.ts';
import type { FillLimits } from './fill/fill-limits.ts';
import { FillTable } from './fill/fill-table.ts';
import { buildGeneration, type BuiltGeneration, type Core, type Generation } from './generation.ts';
import { PlatformInspector } from './inspect/platform-inspector.ts';
import { createMetrics } from './observability/metrics.ts';
import { TrafficStats } from './observability/traffic.ts';
import { BlobService } from './registry/blob-service.ts';
import { DescriptorSizes } from './registry/descriptor-sizes.ts';
import { ManifestService } from './registry/manifest-service.ts';
import { RepositoryAccess } from './registry/repository-access.ts';
import { BlobScrubber } from './store/blob-scrubber.ts';
import { StorageHealth } from './store/storage-health.ts';
import { createStores } from './stores.ts';
import { Generations, type Hold } from './util/generations.ts';
import { MemberTags, type MemberTagLimits } from './virtual/member-tags.ts';
import { VirtualImageService } from './virtual/virtual-image-service.ts';
import { VirtualProvenance } from './virtual/provenance.ts';
import { LocalImageService } from './local/local-image-service.ts';

export type { Core, Generation } from './generation.ts';

/**
 * Everything archway is, without HTTP: the process-lived core (stores, fills,
 * the registry services, caches, metrics) and the generation the current
 * configuration derives over it (upstreams, routing, platform rules, virtual
 * images, client access), with the generations still finishing requests.
 * Built from the frozen config by `createServices`; the HTTP app (app.ts)
 * and the CLI use it, the server (server.ts) listens for it and reloads it.
 */
export interface Services extends Core {
  /** The configuration archway started with: what only a restart changes is read from it. */
  config: Readonly<Config>;
  /** The generation new work starts under. */
  current(): Generation;
  /** Hold the current generation for a request (or a job): it is not retired until every hold is released. */
  hold(): Hold<Generation>;
  /**
   * Build the generation `config` derives, without putting it in use; reads
   * every file it names. Throws (a ConfigError for a file that cannot be
   * read), and then nothing changed.
   */
  prepare(config: Readonly<Config>): PendingGeneration;
  /** Start the background work (the scrub); the server calls it once it listens. */
  start(): void;
  /** Stop background work and downloads, release upstream connections, close the stores. */
  close(): Promise<void>;
}

/** A generation built for a reload and not yet in use. */
export interface PendingGeneration {
  generation: Generation;
  /**
   * Put it in use for new requests (the core takes its limits and timeouts);
   * the one it replaces retires when its requests are over, or after
   * server.shutdownTimeout. Says what it reloaded besides the config's
   * changes (htpasswd).
   */
  commit(): string[];
  /** The reload failed after all: close what was built for it. */
  abandon(): Promise<void>;
}

export interface ServicesOptions {
  /** A logger to use; by default pino at the configured level on stdout. */
  logger?: Logger;
}

/** The domain half of the composition root: the core archway runs on, and the first generation over it. */
export async function createServices(config: Readonly<Config>, opts: ServicesOptions = {}): Promise<Services> {
  const logger = opts.logger ?? pino({ level: config.log.level });
  const metrics = createMetrics();
  // Set once: a panel and an alert compare archway_cache_bytes with it.
  metrics.cacheBudget.set(config.cache.maxSize);
  const stores = await createStores(
    config,
    logger,
    () => metrics.evictions.inc(),
    () => metrics.damagedBlobs.inc(),
    (reachable) => metrics.coordinationDegraded.set(reachable ? 0 : 1),
  );
  const { blobs: blobStore, manifests: manifestStore, tags: tagStore, confirmations, coordinator } = stores;
  const storage = new StorageHealth(metrics, logger);
  const scrubber = config.cache.scrub
    ? new BlobScrubber({ store: blobStore, periodMs: config.cache.scrub, bytesPerSecond: config.cache.scrubRate, logger, onBytes: (n) => metrics.scrubbedBytes.inc(n) })
    : undefined;

  const fills = new FillTable(blobStore, metrics, logger, storage, fillLimits(config), coordinator);
  const sizes = new DescriptorSizes();
  const access = new RepositoryAccess(confirmations, storage);
  const manifests = new ManifestService({
    manifests: manifestStore,
    tags: tagStore,
    access,
    storage,
    tagTtlMs: config.cache.tagTtl,
    revalidateTimeoutMs: config.timeouts.revalidate,
    metrics,
    logger,
    sizes,
  });
  const blobs = new BlobService(blobStore, fills, access, metrics, sizes);
  const memberTags = new MemberTags(logger, config.cache.tagTtl, memberTagLimits(config));
  const virtualImages = new VirtualImageService(manifests, new VirtualProvenance(confirmations, storage), logger, config.cache.tagTtl, memberTags);
  const localImages = new LocalImageService({ store: stores.local, manifests, blobs, logger, maxBytes: config.local.maxSize });
  localImages.shareChanges(stores.events);
  const jobs = new PrefetchJobs(manifests, blobs, logger);
  const inventory = new CacheInventory(blobStore, manifestStore, tagStore, stores.events);
  inventory.followPurges((err) => logger.warn({ err: (err as Error).message }, 'dropping the copies of a purge made through another replica failed'));
  const core: Core = {
    logger,
    metrics,
    stores,
    manifests,
    blobs,
    virtualImages,
    localImages,
    inspector: new PlatformInspector(manifests, virtualImages, blobs, blobStore, localImages),
    inventory,
    jobs,
    traffic: new TrafficStats(),
  };
  // What a generation's settings mean for the core's parts: new fills, tag lists and revalidations follow them.
  const retune = (previous: Readonly<Config>, next: Readonly<Config>) => {
    fills.setLimits(fillLimits(next));
    manifests.setRevalidateTimeout(next.timeouts.revalidate);
    memberTags.setLimits(memberTagLimits(next));
    // Only a changed level: a logger handed in (tests, the CLI) keeps the level it was made with.
    if (next.log.level !== previous.log.level) logger.level = next.log.level;
  };

  let built: BuiltGeneration;
  try {
    built = buildGeneration(config, core, 1);
  } catch (err) {
    await stores.close();
    throw err;
  }
  const builds = new Map<Generation, BuiltGeneration>([[built.generation, built]]);
  built.activate();
  metrics.configGeneration.set(1);
  const generations: Generations<Generation> = new Generations<Generation>(
    built.generation,
    async (old) => {
      const retired = builds.get(old);
      builds.delete(old);
      await retired?.closeExcept([...builds.values()]);
      metrics.configGenerationsDraining.set(generations.draining - 1);
      logger.debug({ generation: old.id }, 'configuration generation retired');
    },
    () => generations.current.config.server.shutdownTimeout,
  );
  let nextId = 2;

  return {
    ...core,
    config,
    current: () => generations.current,
    hold: () => generations.hold(),
    prepare: (next) => {
      const previous = builds.get(generations.current);
      const pending = buildGeneration(next, core, nextId++, previous);
      let settled = false;
      return {
        generation: pending.generation,
        commit: () => {
          if (settled) throw new Error('this generation was already committed or abandoned');
          settled = true;
          builds.set(pending.generation, pending);
          const notes = pending.activate();
          retune(generations.current.config, next);
          void generations.swap(pending.generation);
          metrics.configGeneration.set(pending.generation.id);
          metrics.configGenerationsDraining.set(generations.draining);
          return notes;
        },
        abandon: async () => {
          if (settled) return;
          settled = true;
          await pending.closeExcept([...builds.values()]);
        },
      };
    },
    start: () => scrubber?.start(),
    close: async () => {
      jobs.stop();
      await scrubber?.stop();
      await fills.cancelAll();
      // Every generation's upstream pools and password workers, once their requests are over (bounded).
      await generations.close();
      // Fills released their leases above; now the shared services can go.
      await stores.close();
    },
  };
}

function memberTagLimits(config: Readonly<Config>): MemberTagLimits {
  return { pages: config.limits.memberTagPages, tags: config.limits.memberTags };
}

function fillLimits(config: Readonly<Config>): FillLimits {
  return {
    maxBlobSize: config.cache.maxBlobSize ?? config.cache.maxSize,
    cacheLimit: config.cache.maxSize,
    bodyFloorMs: config.timeouts.body,
    bodyMinRate: config.timeouts.bodyMinRate,
    backgroundFills: config.limits.backgroundFills,
  };
}
