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

export interface DispatchersOptions {
  logger: Logger;
  metrics: Metrics;
}

/**
 * Connection pools for upstreams: one keep-alive Agent per upstream, because
 * where its connections may go depends on which upstream sent archway there
 * (its own host, its allowRedirectsTo, how far inside it lives); pools are
 * per origin anyway. Composed with undici's redirect interceptor, which
 * strips Authorization when a redirect changes origin; every hop connects
 * through the same guarded connector.
 */
export class Dispatchers {
  private readonly agents: Agent[] = [];

  constructor(
    private readonly config: Readonly<Config>,
    private readonly opts: DispatchersOptions,
  ) {}

  for(name: string, upstream: UpstreamConfig): Dispatcher {
    const t = this.config.timeouts;
    const tls = {
      ...(upstream.ca ? { ca: readCa(name, upstream.ca) } : {}),
      ...(upstream.insecure ? { rejectUnauthorized: false } : {}),
    };
    const upstreamHost = new URL(upstream.url).hostname;
    const policy = new AddressPolicy({ upstreamHost, allow: upstream.allowRedirectsTo, deny: this.config.network.deny });
    const connect = guardedConnector({
      connect: { timeout: t.connect, ...tls },
      policy,
      upstreamHost,
      onRefused: (err) => {
        this.opts.metrics.upstreamConnectionsRefused.inc({ upstream: name, reason: err.reason });
        // The host, never the URL: a redirect's query may be a presigned credential.
        this.opts.logger.warn({ upstream: name, host: err.host, address: err.address, reason: err.reason }, 'connection refused by the network policy');
      },
    });
    const agent = new Agent({
      connect,
      headersTimeout: t.headers,
      bodyTimeout: t.bodyIdle,
      keepAliveTimeout: 30_000,
      connections: 64,
    });
    this.agents.push(agent);
    return agent.compose(interceptors.redirect({ maxRedirections: MAX_REDIRECTS }));
  }

  async close(): Promise<void> {
    await Promise.all(this.agents.map((a) => a.close()));
  }
}

function readCa(name: string, path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`upstreams.${name}.ca: cannot read ${path} (${(e as NodeJS.ErrnoException).code})`);
  }
}
