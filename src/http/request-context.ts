import type { FastifyInstance } from 'fastify';
import type { CacheOutcome } from '../observability/cache-outcome.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { TrafficStats } from '../observability/traffic.ts';

/** What a handler learns about a request, for its one log line and the metrics. */
export interface RequestContext {
  route: 'base' | 'manifest' | 'blob' | 'tags' | 'referrers' | 'upload' | 'platforms' | 'admin' | 'health' | 'metrics' | 'other';
  outcome?: CacheOutcome;
  /** Time spent waiting on the upstream before the answer could start. */
  upstreamMs?: number;
  /** `resolve:linux/arm64` when the answer was made for a platform. */
  platform?: string;
  /** `upstream/repository` once the name is routed. */
  repository?: string;
  /** A manifest request's tag. */
  tag?: string;
  /** Length of the body a GET answers with, once known (counted as served if the answer completes). */
  bodyBytes?: number;
  /** The nginx in front sent the blob from its file (server.accelRedirect); bodyBytes is what it was handed. */
  accel?: boolean;
  startedAt: number;
}

declare module 'fastify' {
  interface FastifyRequest {
    archway: RequestContext;
  }
}

/**
 * One JSON log line per request, with the cache outcome and upstream time, and
 * the request counter. Written when the connection's response closes, so
 * answers cut mid-body (a corrupt blob, a client that hung up) are logged too,
 * with `complete: false`.
 */
export function installRequestLog(app: FastifyInstance, metrics: Metrics, traffic: TrafficStats): void {
  app.decorateRequest('archway', null as unknown as RequestContext);
  app.addHook('onRequest', (request, reply, done) => {
    const ctx: RequestContext = { route: 'other', startedAt: performance.now() };
    request.archway = ctx;
    reply.raw.once('close', () => {
      const status = reply.raw.statusCode;
      const complete = reply.raw.writableFinished;
      metrics.requests.inc({ route: ctx.route, method: request.method, status: complete ? String(status) : 'aborted' });
      if ((ctx.route === 'manifest' || ctx.route === 'blob') && ctx.repository !== undefined && status < 400) {
        traffic.record({
          kind: ctx.route,
          repository: ctx.repository,
          tag: ctx.tag,
          outcome: ctx.outcome,
          bytes: complete && request.method === 'GET' && status !== 304 ? (ctx.bodyBytes ?? 0) : 0,
        });
      }
      if (ctx.route === 'health' || ctx.route === 'metrics') return;
      request.log.info(
        {
          method: request.method,
          url: request.url,
          status,
          complete,
          ms: Math.round((performance.now() - ctx.startedAt) * 10) / 10,
          cache: ctx.outcome,
          accel: ctx.accel,
          platform: ctx.platform,
          upstreamMs: ctx.upstreamMs === undefined ? undefined : Math.round(ctx.upstreamMs * 10) / 10,
          remote: request.ip,
          ua: request.headers['user-agent'],
        },
        'request',
      );
    });
    done();
  });
}
