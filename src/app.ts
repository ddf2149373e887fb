import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyServerFactory } from 'fastify';
import { registerAdminRoutes } from './admin/admin-routes.ts';
import { installAccessHook } from './http/access-hook.ts';
import { installErrorHandler, sendError, toRegistryError } from './http/error-handler.ts';
import { registerHealthRoutes } from './http/health-routes.ts';
import { answerClientError } from './http/listener.ts';
import { registerPlatformsRoute } from './http/platforms-route.ts';
import { installRequestLog } from './http/request-context.ts';
import { badUrlError, installRequestHygiene } from './http/request-hygiene.ts';
import { registerV2Routes } from './http/v2-routes.ts';
import type { Services } from './services.ts';

export interface HttpAppOptions {
  /** Makes the listener fastify serves on (server.ts: HTTPS, client timeouts); without it, `inject` only. */
  serverFactory?: FastifyServerFactory;
}

/**
 * The HTTP half of the composition root: a fastify app over the services,
 * with its hooks and routes registered in a fixed order (the request log
 * first, so every answer is logged; errors; hygiene; access; then the routes).
 */
export async function createHttpApp(services: Services, opts: HttpAppOptions = {}): Promise<FastifyInstance> {
  const { config, logger, metrics } = services;
  const app = Fastify({
    ...(opts.serverFactory ? { serverFactory: opts.serverFactory } : {}),
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
  // Bodies are not parsed: a PUT's is left to its route (a manifest pushed to a local
  // repository is read there, bounded; any other is thrown away as it arrives, see
  // request-body.ts for why the answer waits for it a little); every other is discarded here.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', (request, payload, done) => {
    if (request.method !== 'PUT') payload.resume();
    done(null);
  });
  installRequestLog(app, metrics, services.traffic);
  installErrorHandler(app);
  installRequestHygiene(app);
  installAccessHook(app, { auth: services.auth, protectMetrics: config.auth?.protectMetrics ?? false, limiter: services.limiter });
  registerV2Routes(app, { ...services, maxManifestSize: config.local.maxManifestSize });
  registerPlatformsRoute(app, services);
  const blobStore = services.stores.blobs;
  await registerAdminRoutes(app, {
    guard: services.adminGuard,
    config,
    router: services.router,
    manifests: services.manifests,
    blobs: services.blobs,
    blobStore,
    virtualCatalog: services.virtualCatalog,
    virtualImages: services.virtualImages,
    localCatalog: services.localCatalog,
    localImages: services.localImages,
    inventory: services.inventory,
    jobs: services.jobs,
    traffic: services.traffic,
    upstreams: [...services.upstreams.values()],
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
  return app;
}
