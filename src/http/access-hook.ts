import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { ClientAuth, Principal } from '../access/client-auth.ts';
import type { RateLimiter } from '../access/rate-limiter.ts';
import { PLATFORMS_ROUTE } from './platforms-route.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** Set when client authentication is on and the request authenticated. */
    principal?: Principal;
  }
}

/**
 * Who may talk to archway, and how much: authentication (when configured) for
 * /v2 (and the platform inspector) and, optionally, /metrics; then per-client limits, keyed by the
 * authenticated name or else the client address. Health endpoints stay open
 * for orchestrators. Which repositories a principal may pull is checked once
 * the name is routed (v2-routes.ts).
 */
export interface AccessSettings {
  auth: ClientAuth | undefined;
  protectMetrics: boolean;
  limiter: RateLimiter | undefined;
}

/** `settingsFor`: those of the request's configuration generation (a reload changes them for new requests only). */
export function installAccessHook(app: FastifyInstance, settingsFor: (request: FastifyRequest) => AccessSettings): void {
  const check = async (request: FastifyRequest, reply: FastifyReply, opts: AccessSettings): Promise<void> => {
    // Decided by the route the router matched, not by the raw URL: `/metrics#`,
    // `/%6detrics` and friends reach the same handler and must meet the same check.
    const route = request.routeOptions.url;
    // The platform inspector shows what a pull would: it needs what a pull needs.
    const isV2 = route === '/v2' || route === '/v2/*' || route === PLATFORMS_ROUTE;
    const isMetrics = route === '/metrics';
    if (opts.auth && (isV2 || (isMetrics && opts.protectMetrics))) {
      request.principal = await opts.auth.authenticate(request.headers.authorization, request.ip);
    }
    if (opts.limiter && isV2) {
      const release = opts.limiter.admit(request.principal?.name ?? request.ip);
      reply.raw.once('close', release);
    }
  };
  app.addHook('onRequest', (request, reply, done) => {
    const opts = settingsFor(request);
    // Neither authentication nor limits configured (the shipped config): nothing to wait for.
    if (!opts.auth && !opts.limiter) return done();
    check(request, reply, opts).then(() => done(), done);
  });
}
