import { access, constants } from 'node:fs/promises';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Metrics } from '../observability/metrics.ts';

/** Liveness, readiness (the cache directory is writable) and Prometheus metrics. */
export function registerHealthRoutes(app: FastifyInstance, opts: { cacheDir: string; metrics: Metrics; refreshGauges: () => void }): void {
  app.get('/healthz', async (request, reply) => {
    request.archway.route = 'health';
    return reply.send({ status: 'ok' });
  });

  app.get('/readyz', async (request, reply) => {
    request.archway.route = 'health';
    try {
      // Fills write to tmp/ before anything reaches the cache: both must be writable.
      await access(opts.cacheDir, constants.W_OK);
      await access(join(opts.cacheDir, 'tmp'), constants.W_OK);
      return reply.send({ status: 'ready' });
    } catch {
      return reply.code(503).send({ status: 'not ready', reason: 'cache directory is not writable' });
    }
  });

  app.get('/metrics', async (request, reply) => {
    request.archway.route = 'metrics';
    opts.refreshGauges();
    return reply.header('content-type', opts.metrics.registry.contentType).send(await opts.metrics.registry.metrics());
  });
}
