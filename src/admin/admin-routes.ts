import type { FastifyInstance, FastifyRequest } from 'fastify';
import { z } from 'zod';
import { ConfigError } from '../config/load.ts';
import type { Config } from '../config/schema.ts';
import { RegistryError } from '../errors.ts';
import { parseImageReference } from '../oci/image-reference.ts';
import { formatPlatform, parsePlatform } from '../platform/platform.ts';
import type { BlobService } from '../registry/blob-service.ts';
import type { ManifestService } from '../registry/manifest-service.ts';
import type { Route, Router } from '../routing/router.ts';
import type { BlobStore } from '../store/blob-store.ts';
import type { VirtualImageService } from '../virtual/virtual-image-service.ts';
import type { VirtualCatalog } from '../virtual/virtual-catalog.ts';
import type { LocalCatalog } from '../local/local-catalog.ts';
import type { LocalImageService } from '../local/local-image-service.ts';
import type { AdminGuard } from './admin-guard.ts';
import type { CacheInventory } from './cache-inventory.ts';
import type { PrefetchJobs } from './prefetch.ts';
import { cacheSummary, InventorySnapshot } from './cache-summary.ts';
import { statusPage } from './status-page.ts';
import type { TrafficStats } from '../observability/traffic.ts';

export interface AdminServices {
  guard: AdminGuard;
  config: Readonly<Config>;
  router: Router;
  manifests: ManifestService;
  blobs: BlobService;
  blobStore: BlobStore;
  virtualCatalog: VirtualCatalog;
  virtualImages: VirtualImageService;
  localCatalog: LocalCatalog;
  localImages: LocalImageService;
  inventory: CacheInventory;
  jobs: PrefetchJobs;
  traffic: TrafficStats;
  upstreams: ReadonlyArray<{ name: string; health: { down: boolean; lastError: string | undefined; lastErrorAt: number | undefined; failuresTotal: number } }>;
  /** Keep the request's configuration generation in use for work that outlives the request (a prefetch job); returns its release. */
  retain: () => () => void;
}

export interface AdminRoutesOptions {
  /** The services of the request's configuration generation (a reload changes them for new requests only). */
  servicesFor: (request: FastifyRequest) => AdminServices;
  /** Process-lived, like the snapshot of it kept here. */
  inventory: CacheInventory;
  /** Re-read the whole configuration file; absent when nothing can reload (an app without a server). */
  reload: (() => Promise<{ generation: number; changes: string[]; toldReplicas?: boolean }>) | undefined;
}

const prefetchBody = z
  .object({
    image: z.string().min(1),
    platforms: z.union([z.literal('all'), z.array(z.string()).min(1)]).default('all'),
  })
  .strict();

/** How many images the status lists. */
const TOP = 10;

/**
 * The admin API and status page under /_archway/, in their own fastify scope
 * (its JSON body parser stays here). Every route needs the admin token; the
 * page itself holds no data and is served to anyone who may use the API (it
 * reads the token from the URL fragment, which never reaches a server log).
 */
export async function registerAdminRoutes(app: FastifyInstance, opts: AdminRoutesOptions): Promise<void> {
  const snapshot = new InventorySnapshot(opts);
  const page = statusPage();
  await app.register(async (scope) => {
    scope.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit: 64 * 1024 }, (_request, body, done) => {
      try {
        done(null, (body as string).trim() === '' ? undefined : JSON.parse(body as string));
      } catch {
        done(new RegistryError('INVALID_REQUEST', 'the body is not JSON'), undefined);
      }
    });
    scope.addHook('onRequest', async (request) => {
      request.archway.route = 'admin';
      const s = opts.servicesFor(request);
      // The page is static; its data comes from the routes below, each checked.
      if (request.routeOptions.url === '/_archway/') {
        if (!s.guard.enabled) s.guard.check(undefined);
        return;
      }
      s.guard.check(request.headers.authorization);
    });

    scope.get('/_archway/', async (_request, reply) =>
      reply.header('content-type', 'text/html; charset=utf-8').header('cache-control', 'no-store').headers(page.headers).send(page.html),
    );

    scope.get('/_archway/cache', async (request, reply) => reply.header('cache-control', 'no-store').send(await cacheSummary(opts.servicesFor(request), snapshot)));

    scope.get('/_archway/status', async (request, reply) => {
      const s = opts.servicesFor(request);
      const images = await Promise.all(
        s.traffic.mostPulledTags(TOP).map(async (t) => {
          const [upstream = '', ...rest] = t.repository.split('/');
          return { ...t, platforms: await s.inventory.platformMatrix(upstream, rest.join('/'), t.tag) };
        }),
      );
      return reply.header('cache-control', 'no-store').send({
        now: Date.now(),
        cache: { bytes: s.blobStore.usage().bytes, maxBytes: s.config.cache.maxSize, blobs: s.blobStore.usage().count },
        traffic: { ...s.traffic.totals(), lastHour: s.traffic.lastHour() },
        upstreams: s.upstreams.map((u) => ({
          name: u.name,
          down: u.health.down,
          failures: u.health.failuresTotal,
          lastError: u.health.lastError ?? null,
          lastErrorAt: u.health.lastErrorAt ?? null,
        })),
        images,
        platform: { default: s.config.platform.default, rules: s.config.platform.rules },
      });
    });

    scope.delete('/_archway/cache/*', async (request, reply) => {
      const s = opts.servicesFor(request);
      const { route, reference } = target(s.router, (request.params as { '*': string })['*']);
      const local = s.localCatalog.match(route);
      if (local) {
        // Not a cache: what was pushed goes only when named, one tag or manifest at a time.
        if (!reference) throw new RegistryError('INVALID_REQUEST', 'name the tag or digest to delete from a local repository', { detail: { repository: local.key } });
        const deleted = await s.localImages.delete(local, reference);
        request.log.info({ local: local.key, reference, ...deleted }, 'deleted from local repository');
        // A purge report (what `archway purge` prints): blobs are the cache's, and stay.
        return reply.send({ ...deleted, blobs: 0, bytes: 0, keptShared: 0, keptInUse: 0 });
      }
      const report = await s.inventory.purge({
        upstream: route.upstream.name,
        repository: route.repository,
        ...(reference?.kind === 'tag' ? { tag: reference.tag } : {}),
        ...(reference?.kind === 'digest' ? { digest: reference.digest } : {}),
      });
      snapshot.invalidate();
      request.log.info({ purge: `${route.upstream.name}/${route.repository}`, reference, ...report }, 'purged');
      return reply.send(report);
    });

    scope.post('/_archway/prefetch', async (request, reply) => {
      const s = opts.servicesFor(request);
      const body = prefetchBody.safeParse(request.body);
      if (!body.success) {
        throw new RegistryError('INVALID_REQUEST', 'expected { "image": "name:tag", "platforms": ["os/arch[/variant]", …] | "all" }', {
          detail: body.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`),
        });
      }
      const platforms = body.data.platforms === 'all' ? 'all' : body.data.platforms.map((p) => formatPlatform(parsePlatformOrThrow(p)));
      const { route, reference } = target(s.router, body.data.image);
      const local = s.localCatalog.match(route);
      const virtual = local ? undefined : s.virtualCatalog.match(route);
      const job = s.jobs.start({
        image: body.data.image,
        reference: reference ?? { kind: 'tag', tag: 'latest' },
        route,
        source: local ? s.localImages.source(local) : virtual ? s.virtualImages.source(virtual) : s.manifests.source(route),
        // A local repository's blobs come from where they were mounted from.
        blobRoute: async (digest) => (local ? s.localImages.blobRoute(local, digest, s.router) : virtual ? s.virtualImages.blobRoute(virtual, digest) : route),
        platforms,
        // The job's routes belong to this request's generation: it stays open until the job ends.
        onSettled: s.retain(),
      });
      return reply.code(202).header('location', `/_archway/jobs/${job.id}`).send(job);
    });

    scope.get('/_archway/jobs/:id', async (request: FastifyRequest<{ Params: { id: string } }>, reply) => {
      const job = opts.servicesFor(request).jobs.get(request.params.id);
      if (!job) throw new RegistryError('JOB_UNKNOWN', 'no such prefetch job (jobs are kept in memory, the last 1000)', { detail: { id: request.params.id } });
      return reply.send(job);
    });

    // The whole configuration file again (as SIGHUP): 200 with what changed, or 422 naming each wrong field, changing nothing.
    scope.post('/_archway/reload', async (request, reply) => {
      if (!opts.reload) throw new RegistryError('UNSUPPORTED', 'this archway has no configuration file to reload', { status: 405 });
      try {
        const { generation, changes, toldReplicas = false } = await opts.reload();
        request.log.info({ changes, generation, toldReplicas }, `reload: ${changes.length ? changes.join(', ') : 'no changes'}`);
        return reply.header('cache-control', 'no-store').send({ reloaded: true, generation, changes, toldReplicas });
      } catch (err) {
        if (!(err instanceof ConfigError)) throw err;
        request.log.error({ errors: err.issues }, 'reload refused; keeping what was in use');
        throw new RegistryError('CONFIG_INVALID', err.message, { detail: { errors: err.issues } });
      }
    });
  });
}

/** `registry/name[:tag|@digest]` (or a name on the default registry), routed like a pull. */
function target(router: Router, image: string): { route: Route; reference: ReturnType<typeof parseImageReference>['reference'] | undefined } {
  const hasReference = /@|:[^/]*$/.test(image);
  const { name, reference } = parseImageReference(image);
  return { route: router.resolve(name), reference: hasReference ? reference : undefined };
}

function parsePlatformOrThrow(p: string) {
  try {
    return parsePlatform(p);
  } catch (err) {
    throw new RegistryError('INVALID_REQUEST', (err as Error).message, { detail: { platform: p } });
  }
}
