import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { Agent, interceptors, type Dispatcher } from 'undici';
import { ConfigError } from '../config/load.ts';
import type { Config, UpstreamConfig } from '../config/schema.ts';
import type { Metrics } from '../observability/metrics.ts';
import { AddressPolicy } from './address-policy.ts';
import { guardedConnector } from './guarded-connect.ts';

/** Docker Hub sends one redirect per blob; a few more allow a CDN hop. More is a loop. */
const MAX_REDIRECTS = 5;

export interface DispatcherOptions {
  logger: Logger;
  metrics: Metrics;
}

/** An upstream's connection pool, and how to let it go (gracefully: requests under way finish first). */
export interface UpstreamDispatcher {
  dispatcher: Dispatcher;
  close(): Promise<void>;
}

/**
 * The connection pool of one upstream: one keep-alive Agent per upstream,
 * because where its connections may go depends on which upstream sent
 * archway there (its own host, its allowRedirectsTo, how far inside it
 * lives); pools are per origin anyway. Composed with undici's redirect
 * interceptor, which strips Authorization when a redirect changes origin;
 * every hop connects through the same guarded connector. Its own, so a
 * reload can close the pool of a changed upstream and keep the others.
 */
export function createDispatcher(name: string, upstream: UpstreamConfig, config: Readonly<Config>, opts: DispatcherOptions): UpstreamDispatcher {
  const t = config.timeouts;
  const tls = {
    ...(upstream.ca ? { ca: readCa(name, upstream.ca) } : {}),
    ...(upstream.insecure ? { rejectUnauthorized: false } : {}),
  };
  const upstreamHost = new URL(upstream.url).hostname;
  const policy = new AddressPolicy({ upstreamHost, allow: upstream.allowRedirectsTo, deny: config.network.deny });
  const connect = guardedConnector({
    connect: { timeout: t.connect, ...tls },
    policy,
    upstreamHost,
    onRefused: (err) => {
      opts.metrics.upstreamConnectionsRefused.inc({ upstream: name, reason: err.reason });
      // The host, never the URL: a redirect's query may be a presigned credential.
      opts.logger.warn({ upstream: name, host: err.host, address: err.address, reason: err.reason }, 'connection refused by the network policy');
    },
  });
  const agent = new Agent({
    connect,
    headersTimeout: t.headers,
    bodyTimeout: t.bodyIdle,
    keepAliveTimeout: 30_000,
    connections: 64,
  });
  return { dispatcher: agent.compose(interceptors.redirect({ maxRedirections: MAX_REDIRECTS })), close: () => agent.close() };
}

export function readCa(name: string, path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`upstreams.${name}.ca: cannot read ${path} (${(e as NodeJS.ErrnoException).code})`);
  }
}
