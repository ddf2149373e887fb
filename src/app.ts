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
import type { Generation, Services } from './services.ts';
import type { Hold } from './util/generations.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** The configuration generation this request runs under, read once when it arrives (released when its response closes). */
    generation: Hold<Generation>;
  }
}

export interface HttpAppOptions {
  /** Makes the listener fastify serves on (server.ts: HTTPS, client timeouts); without it, `inject` only. */
  serverFactory?: FastifyServerFactory;
  /** `POST /_archway/reload`: re-read the configuration (server.ts); without it, that route answers 405. */
  reload?: () => Promise<{ generation: number; changes: string[]; toldReplicas?: boolean }>;
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
  // Right after the log: every later hook and route reads this request's generation, never the current one.
  app.decorateRequest('generation', null as unknown as Hold<Generation>);
  // Callback hooks, here and in the request log: they run on every request, and an async one costs a promise and a microtask.
  app.addHook('onRequest', (request, reply, done) => {
    const held = services.hold();
    request.generation = held;
    reply.raw.once('close', held.release);
    done();
  });
  installErrorHandler(app);
  installRequestHygiene(app);
  installAccessHook(app, (request) => {
    const g = request.generation.value;
    return { auth: g.auth, protectMetrics: g.config.auth?.protectMetrics ?? false, limiter: g.limiter };
  });
  registerV2Routes(app, (request) => request.generation.value);
  registerPlatformsRoute(app, (request) => request.generation.value);
  const blobStore = services.stores.blobs;
  await registerAdminRoutes(app, {
    inventory: services.inventory,
    reload: opts.reload,
    servicesFor: (request) => {
      const g = request.generation.value;
      return {
        guard: g.adminGuard,
        config: g.config,
        router: g.router,
        manifests: g.manifests,
        blobs: g.blobs,
        blobStore,
        virtualCatalog: g.virtualCatalog,
        virtualImages: g.virtualImages,
        localCatalog: g.localCatalog,
        localImages: g.localImages,
        inventory: g.inventory,
        jobs: g.jobs,
        traffic: g.traffic,
        upstreams: [...g.upstreams.values()],
        retain: request.generation.retain,
      };
    },
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
