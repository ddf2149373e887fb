import type { FastifyInstance } from 'fastify';
import type { ClientAuth, Principal } from '../access/client-auth.ts';
import type { RateLimiter } from '../access/rate-limiter.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** Set when client authentication is on and the request authenticated. */
    principal?: Principal;
  }
}

/**
 * Who may talk to archway, and how much: authentication (when configured) for
 * /v2 and, optionally, /metrics; then per-client limits, keyed by the
 * authenticated name or else the client address. Health endpoints stay open
 * for orchestrators. Which repositories a principal may pull is checked once
 * the name is routed (v2-routes.ts).
 */
export function installAccessHook(app: FastifyInstance, opts: { auth: ClientAuth | undefined; protectMetrics: boolean; limiter: RateLimiter | undefined }): void {
  app.addHook('onRequest', async (request, reply) => {
    const path = request.url;
    const isV2 = path === '/v2' || path.startsWith('/v2/') || path.startsWith('/v2?');
    const isMetrics = path === '/metrics' || path.startsWith('/metrics?');
    if (opts.auth && (isV2 || (isMetrics && opts.protectMetrics))) {
      request.principal = await opts.auth.authenticate(request.headers.authorization);
    }
    if (opts.limiter && isV2) {
      const release = opts.limiter.admit(request.principal?.name ?? request.ip);
      reply.raw.once('close', release);
    }
  });
}
