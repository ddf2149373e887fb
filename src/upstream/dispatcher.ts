import { readFileSync } from 'node:fs';
import { Agent, interceptors, type Dispatcher } from 'undici';
import { ConfigError } from '../config/load.ts';
import type { Config, UpstreamConfig } from '../config/schema.ts';

/** Docker Hub sends one redirect per blob; a few more allow a CDN hop. More is a loop. */
const MAX_REDIRECTS = 5;

/**
 * Connection pools for upstreams: one shared keep-alive Agent for every
 * upstream on the default TLS settings, and one per upstream that needs its
 * own (extra CA, or verification off). Composed with undici's redirect
 * interceptor, which strips Authorization when a redirect changes origin.
 */
export class Dispatchers {
  private readonly shared: Agent;
  private readonly own = new Map<string, Agent>();

  constructor(private readonly config: Readonly<Config>) {
    this.shared = this.agent({});
  }

  for(name: string, upstream: UpstreamConfig): Dispatcher {
    let agent = this.shared;
    if (upstream.ca || upstream.insecure) {
      const tls = {
        ...(upstream.ca ? { ca: readCa(name, upstream.ca) } : {}),
        ...(upstream.insecure ? { rejectUnauthorized: false } : {}),
      };
      agent = this.agent(tls);
      this.own.set(name, agent);
    }
    return agent.compose(interceptors.redirect({ maxRedirections: MAX_REDIRECTS }));
  }

  async close(): Promise<void> {
    await Promise.all([this.shared.close(), ...[...this.own.values()].map((a) => a.close())]);
  }

  private agent(tls: { ca?: string; rejectUnauthorized?: boolean }): Agent {
    const t = this.config.timeouts;
    return new Agent({
      connect: { timeout: t.connect, ...tls },
      headersTimeout: t.headers,
      bodyTimeout: t.bodyIdle,
      keepAliveTimeout: 30_000,
      connections: 64,
    });
  }
}

function readCa(name: string, path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`upstreams.${name}.ca: cannot read ${path} (${(e as NodeJS.ErrnoException).code})`);
  }
}
