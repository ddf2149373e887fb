import type { RequestListener } from 'node:http';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply } from 'fastify';
import pino, { type Logger } from 'pino';
import { ConfigError } from './config/load.ts';
import type { Config } from './config/schema.ts';
import { ClientAuth } from './access/client-auth.ts';
import { readHtpasswd } from './access/htpasswd.ts';
import { FailedLoginLimiter } from './access/login-limiter.ts';
import { PasswordCheckPool } from './access/password-checks.ts';
import { RateLimiter } from './access/rate-limiter.ts';
import { readSecret } from './config/secrets.ts';
import { installAccessHook } from './http/access-hook.ts';
import { installErrorHandler, sendError, toRegistryError } from './http/error-handler.ts';
import { badUrlError, installRequestHygiene, refuseConnect } from './http/request-hygiene.ts';
import { answerClientError, createListener, type ListenerSettings } from './http/listener.ts';
import { StalledClients } from './http/stalled-clients.ts';
import { reloadTls } from './http/tls.ts';
import { registerHealthRoutes } from './http/health-routes.ts';
import { installRequestLog } from './http/request-context.ts';
import { registerV2Routes } from './http/v2-routes.ts';
import { registerPlatformsRoute } from './http/platforms-route.ts';
import { PlatformInspector } from './inspect/platform-inspector.ts';
import { createMetrics, type Metrics } from './observability/metrics.ts';
import { BlobService } from './registry/blob-service.ts';
import { DescriptorSizes } from './registry/descriptor-sizes.ts';
import type { FillLimits } from './fill/fill-limits.ts';
import { ManifestService } from './registry/manifest-service.ts';
import { RepositoryAccess } from './registry/repository-access.ts';
import { PlatformPolicy } from './platform/policy.ts';
import { Router, type RouterUpstream } from './routing/router.ts';
import { FillTable } from './fill/fill-table.ts';
import { BlobScrubber } from './store/blob-scrubber.ts';
import { createStores } from './stores.ts';
import { StorageHealth } from './store/storage-health.ts';
import { UpstreamClient } from './upstream/client.ts';
import { AdminGuard } from './admin/admin-guard.ts';
import { registerAdminRoutes } from './admin/admin-routes.ts';
import { CacheInventory } from './admin/cache-inventory.ts';
import { PrefetchJobs } from './admin/prefetch.ts';
import { TrafficStats } from './observability/traffic.ts';
import { VirtualImageService } from './virtual/virtual-image-service.ts';
import { VirtualImages } from './virtual/virtual-images.ts';
import { VirtualProvenance } from './virtual/provenance.ts';
import { resolveCredentials } from './upstream/credentials.ts';
import { Dispatchers } from './upstream/dispatcher.ts';

export interface Archway {
  app: FastifyInstance;
  metrics: Metrics;
  logger: Logger;
  /** Listen on server.port (or `port`) and every server.ports; returns the addresses. */
  listen(port?: number): Promise<string[]>;
  /**
   * SIGHUP: re-read server.tls certificate and key and the auth.htpasswd file.
   * Returns what was reloaded; throws (keeping what was in use) on a bad file.
   */
  reload(): string[];
  /** Stop accepting, let in-flight responses finish (bounded), stop fills, release upstream connections. */
  close(): Promise<void>;
}

export interface BuildOptions {
  /** A logger to use; by default pino at the configured level on stdout. */
  logger?: Logger;
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

/** The composition root: every instance archway runs on is built here from the config. */
export async function buildArchway(config: Readonly<Config>, opts: BuildOptions = {}): Promise<Archway> {
  const logger = opts.logger ?? pino({ level: config.log.level });
  const metrics = createMetrics();

  const stores = await createStores(config, logger, () => metrics.evictions.inc(), () => metrics.damagedBlobs.inc());
  const { blobs: blobStore, manifests: manifestStore, tags: tagStore, confirmations, coordinator } = stores;

  const storage = new StorageHealth(metrics, logger);
  const scrubber = config.cache.scrub
    ? new BlobScrubber({ store: blobStore, periodMs: config.cache.scrub, bytesPerSecond: config.cache.scrubRate, logger, onBytes: (n) => metrics.scrubbedBytes.inc(n) })
    : undefined;
  const dispatchers = new Dispatchers(config, { logger, metrics });
  const upstreams = new Map<string, RouterUpstream>();
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
    upstreams.set(name, { client, aliases: upstream.aliases });
  }
  const router = new Router(upstreams, config.defaultUpstream);
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
  const virtualImages = new VirtualImages(config.virtual, config.defaultUpstream, router);
  const virtuals = new VirtualImageService(manifests, new VirtualProvenance(confirmations, storage), logger, config.cache.tagTtl);

  const platforms = new PlatformPolicy(config.platform);

  const listenerSettings: ListenerSettings = {
    tls: config.server.tls,
    headersTimeout: config.timeouts.clientHeaders,
    bodyTimeout: config.timeouts.clientBody,
    keepAliveTimeout: config.timeouts.clientKeepAlive,
    maxConnections: config.server.maxConnections,
    onDropped: () => metrics.clientsDropped.inc({ reason: 'max-connections' }),
  };
  const stalled = new StalledClients(config.timeouts.clientIdle, () => metrics.clientsDropped.inc({ reason: 'stalled' }));
  // Extra listeners (server.ports) share fastify's request handler, captured here.
  let handler: RequestListener | undefined;
  const app = Fastify({
    serverFactory: (h) => {
      handler = h;
      return createListener(h, listenerSettings);
    },
    clientErrorHandler: answerClientError,
    // X-Forwarded-For is believed only from these (it decides the client address for platform rules).
    trustProxy: config.server.trustedProxies.length ? [...config.server.trustedProxies] : false,
    loggerInstance: logger as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    // Registry clients send long names and digests; nothing else needs more.
    routerOptions: { maxParamLength: 1024 },
    bodyLimit: 1024 * 1024,
    return503OnClosing: true,
    forceCloseConnections: 'idle',
    // Errors fastify raises before routing (a URL it cannot decode) get the spec's envelope too.
    frameworkErrors: (error, request, reply) => {
      const err = error.code === 'FST_ERR_BAD_URL' ? badUrlError() : toRegistryError(error);
      sendError(request.method, reply as unknown as FastifyReply, err);
    },
  });
  // Write methods are refused (405) without parsing anything: bodies are thrown away as
  // they arrive (see v2-routes.ts for why the answer waits for them a little).
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (_request, payload, done) => {
    payload.resume();
    done(null);
  });
  const traffic = new TrafficStats();
  installRequestLog(app, metrics, traffic);
  installErrorHandler(app);
  installRequestHygiene(app);
  const auth = config.auth ? clientAuth(config.auth, config.defaultUpstream, metrics) : undefined;
  installAccessHook(app, {
    auth,
    protectMetrics: config.auth?.protectMetrics ?? false,
    limiter: config.limits.perClient.concurrentRequests || config.limits.perClient.requestsPerSecond ? new RateLimiter(config.limits.perClient) : undefined,
  });
  registerV2Routes(app, { router, manifests, blobs, platforms, virtualImages, virtuals });
  registerPlatformsRoute(app, { router, virtualImages, inspector: new PlatformInspector(manifests, virtuals, blobs, blobStore) });
  const jobs = new PrefetchJobs(manifests, blobs, logger);
  await registerAdminRoutes(app, {
    guard: new AdminGuard(adminToken(config)),
    config,
    router,
    manifests,
    blobs,
    blobStore,
    virtualImages,
    virtuals,
    inventory: new CacheInventory(blobStore, manifestStore, tagStore),
    jobs,
    traffic,
    upstreams: [...upstreams.values()].map((u) => u.client),
  });
  registerHealthRoutes(app, {
    cacheDir: config.cache.dir,
    metrics,
    refreshGauges: () => {
      const usage = blobStore.usage();
      metrics.cacheBytes.set(usage.bytes);
      metrics.cacheBlobs.set(usage.count);
    },
  });
  await app.ready();
  scrubber?.start();
  const extraServers = config.server.ports.map((port) => ({ port, server: createListener(handler as RequestListener, listenerSettings) }));
  const scheme = config.server.tls ? 'https' : 'http';
  for (const server of [app.server, ...extraServers.map((e) => e.server)]) {
    refuseConnect(server);
    stalled.attach(server);
  }
  // fastify answers client errors on its own listener; the others answer alike.
  for (const { server } of extraServers) server.on('clientError', answerClientError);

  const listen = async (port = config.server.port): Promise<string[]> => {
    const addresses = [await app.listen({ host: config.server.host, port })];
    for (const extra of extraServers) {
      await new Promise<void>((resolve, reject) => {
        extra.server.once('error', reject);
        extra.server.listen(extra.port, config.server.host, () => resolve());
      });
      addresses.push(`${scheme}://${config.server.host}:${extra.port}`);
    }
    return addresses;
  };

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      const servers = [app.server, ...extraServers.map((e) => e.server)];
      // Connections busy at close become idle when their response ends: close them then,
      // and cut whatever is still running when the bounded wait is over.
      const idle = setInterval(() => servers.forEach((s) => s.closeIdleConnections()), 100);
      const timer = setTimeout(() => servers.forEach((s) => s.closeAllConnections()), config.server.shutdownTimeout);
      try {
        await Promise.all([
          app.close(),
          ...extraServers.map((e) => (e.server.listening ? new Promise<void>((resolve) => e.server.close(() => resolve())) : undefined)),
        ]);
      } finally {
        clearInterval(idle);
        clearTimeout(timer);
      }
      jobs.stop();
      await scrubber?.stop();
      stalled.stop();
      await fills.cancelAll();
      await dispatchers.close();
      await auth?.close();
      // Fills released their leases above; now the shared services can go.
      await stores.close();
    })());

  const reload = (): string[] => {
    const done: string[] = [];
    // Both read before either is swapped in: a bad file changes nothing.
    const users = config.auth?.htpasswd ? readHtpasswd(config.auth.htpasswd) : undefined;
    if (config.server.tls) {
      reloadTls([app.server, ...extraServers.map((e) => e.server)], config.server.tls);
      done.push('TLS certificate');
    }
    if (users && auth) {
      auth.replaceUsers(users);
      done.push(`htpasswd (${users.size} users)`);
    }
    return done;
  };

  return { app, metrics, logger, listen, close, reload };
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
