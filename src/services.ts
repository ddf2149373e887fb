import pino, { type Logger } from 'pino';
import { AdminGuard } from './admin/admin-guard.ts';
import { CacheInventory } from './admin/cache-inventory.ts';
import { PrefetchJobs } from './admin/prefetch.ts';
import { ClientAuth } from './access/client-auth.ts';
import { readHtpasswd } from './access/htpasswd.ts';
import { FailedLoginLimiter } from './access/login-limiter.ts';
import { PasswordCheckPool } from './access/password-checks.ts';
import { RateLimiter } from './access/rate-limiter.ts';
import { ConfigError } from './config/load.ts';
import type { Config } from './config/schema.ts';
import { readSecret } from './config/secrets.ts';
import type { FillLimits } from './fill/fill-limits.ts';
import { FillTable } from './fill/fill-table.ts';
import { PlatformInspector } from './inspect/platform-inspector.ts';
import { createMetrics, type Metrics } from './observability/metrics.ts';
import { TrafficStats } from './observability/traffic.ts';
import { PlatformPolicy } from './platform/policy.ts';
import { BlobService } from './registry/blob-service.ts';
import { DescriptorSizes } from './registry/descriptor-sizes.ts';
import { ManifestService } from './registry/manifest-service.ts';
import { RepositoryAccess } from './registry/repository-access.ts';
import { Router, type RouterUpstream } from './routing/router.ts';
import { BlobScrubber } from './store/blob-scrubber.ts';
import { StorageHealth } from './store/storage-health.ts';
import { createStores, type Stores } from './stores.ts';
import { UpstreamClient } from './upstream/client.ts';
import { resolveCredentials } from './upstream/credentials.ts';
import { Dispatchers } from './upstream/dispatcher.ts';
import type { Upstream } from './upstream/upstream.ts';
import { VirtualCatalog } from './virtual/virtual-catalog.ts';
import { MemberTags } from './virtual/member-tags.ts';
import { VirtualImageService } from './virtual/virtual-image-service.ts';
import { VirtualProvenance } from './virtual/provenance.ts';

/**
 * Everything archway is, without HTTP: the stores, the fills, the upstreams,
 * the platform policy, the registry services, virtual images, client access,
 * and the admin jobs. Built from the frozen config by `createServices`; the
 * HTTP app (app.ts) and the CLI use it, the server (server.ts) listens for it.
 */
export interface Services {
  config: Readonly<Config>;
  logger: Logger;
  metrics: Metrics;
  stores: Stores;
  /** Every configured upstream, by key. */
  upstreams: ReadonlyMap<string, Upstream>;
  router: Router;
  platforms: PlatformPolicy;
  manifests: ManifestService;
  blobs: BlobService;
  /** Which names are virtual images (config `virtual`). */
  virtualCatalog: VirtualCatalog;
  /** Manifests and blobs of virtual images, assembled from their members. */
  virtualImages: VirtualImageService;
  inspector: PlatformInspector;
  /** Client authentication, when `auth` is configured. */
  auth: ClientAuth | undefined;
  /** Per-client limits, when any is configured. */
  limiter: RateLimiter | undefined;
  adminGuard: AdminGuard;
  inventory: CacheInventory;
  jobs: PrefetchJobs;
  traffic: TrafficStats;
  /** Start the background work (the scrub); the server calls it once it listens. */
  start(): void;
  /**
   * SIGHUP, first half: read the htpasswd file again (a bad one throws, and nothing changes).
   * Returns what puts it in use, and says what it reloaded.
   */
  prepareUserReload(): () => string[];
  /** Stop background work and downloads, release upstream connections, close the stores. */
  close(): Promise<void>;
}

export interface ServicesOptions {
  /** A logger to use; by default pino at the configured level on stdout. */
  logger?: Logger;
}

/** The domain half of the composition root: every instance archway runs on, from the config. */
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

  const dispatchers = new Dispatchers(config, { logger, metrics });
  const routed = new Map<string, RouterUpstream>();
  for (const [name, upstream] of Object.entries(config.upstreams)) {
    const credentials = resolveCredentials(name, upstream);
    const client = new UpstreamClient({
      name,
      url: upstream.url,
      credentials,
      tokenRealms: upstream.tokenRealms,
      isolated: upstream.repositoryIsolation ?? credentials !== undefined,
      namespace: upstream.sendNamespace ? name : undefined,
      dispatcher: dispatchers.for(name, upstream),
      timeouts: { headers: config.timeouts.headers, bodyIdle: config.timeouts.bodyIdle, body: config.timeouts.body, backoff: config.timeouts.upstreamBackoff },
      metrics,
    });
    routed.set(name, { client, aliases: upstream.aliases });
  }
  const router = new Router(routed, config.defaultUpstream);

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
  const virtualCatalog = new VirtualCatalog(config.virtual, config.defaultUpstream, router);
  const memberTags = new MemberTags(logger, config.cache.tagTtl, { pages: config.limits.memberTagPages, tags: config.limits.memberTags });
  const virtualImages = new VirtualImageService(manifests, new VirtualProvenance(confirmations, storage), logger, config.cache.tagTtl, memberTags);
  const auth = config.auth ? clientAuth(config.auth, config.defaultUpstream, metrics) : undefined;
  const perClient = config.limits.perClient;
  const jobs = new PrefetchJobs(manifests, blobs, logger);
  const inventory = new CacheInventory(blobStore, manifestStore, tagStore, stores.events);
  inventory.followPurges((err) => logger.warn({ err: (err as Error).message }, 'dropping the copies of a purge made through another replica failed'));

  return {
    config,
    logger,
    metrics,
    stores,
    upstreams: new Map([...routed].map(([name, u]) => [name, u.client])),
    router,
    platforms: new PlatformPolicy(config.platform),
    manifests,
    blobs,
    virtualCatalog,
    virtualImages,
    inspector: new PlatformInspector(manifests, virtualImages, blobs, blobStore),
    auth,
    limiter: perClient.concurrentRequests || perClient.requestsPerSecond ? new RateLimiter(perClient) : undefined,
    adminGuard: new AdminGuard(adminToken(config)),
    inventory,
    jobs,
    traffic: new TrafficStats(),
    start: () => scrubber?.start(),
    prepareUserReload: () => {
      if (!config.auth?.htpasswd || !auth) return () => [];
      const users = readHtpasswd(config.auth.htpasswd);
      return () => {
        auth.replaceUsers(users);
        return [`htpasswd (${users.size} users)`];
      };
    },
    close: async () => {
      jobs.stop();
      await scrubber?.stop();
      await fills.cancelAll();
      await dispatchers.close();
      await auth?.close();
      // Fills released their leases above; now the shared services can go.
      await stores.close();
    },
  };
}

/** admin.token, or ARCHWAY_ADMIN_TOKEN, which wins: a token from a Kubernetes Secret need not be written into the config. */
function adminToken(config: Readonly<Config>): string | undefined {
  const fromEnv = process.env.ARCHWAY_ADMIN_TOKEN;
  if (fromEnv !== undefined && fromEnv !== '') {
    if (fromEnv.length < 16) throw new ConfigError('ARCHWAY_ADMIN_TOKEN must be at least 16 characters');
    return fromEnv;
  }
  return config.admin.token;
}

function clientAuth(auth: NonNullable<Config['auth']>, defaultUpstream: string, metrics: Metrics): ClientAuth {
  return new ClientAuth({
    defaultUpstream,
    passwords: new PasswordCheckPool({ workers: auth.passwordWorkers, queue: auth.passwordQueue }),
    failedLogins: new FailedLoginLimiter(auth.failedLogins),
    onCheck: (outcome) => metrics.clientLogins.inc({ outcome }),
    users: auth.htpasswd ? readHtpasswd(auth.htpasswd) : new Map(),
    grants: auth.users,
    tokens: auth.tokens.map((t, i) => ({
      name: t.name,
      token: readSecret(`auth.tokens.${i}.token`, { value: t.token, file: t.tokenFile, env: t.tokenEnv }) ?? '',
      repositories: t.repositories,
    })),
  });
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
