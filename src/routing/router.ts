import { RegistryError } from '../errors.ts';
import type { UpstreamClient } from '../upstream/client.ts';

/** Where a client's repository name goes: which upstream, and what the name is there. */
export interface Route {
  upstream: UpstreamClient;
  /** The repository name at the upstream (Docker Hub's `library/` applied). */
  repository: string;
}

/**
 * Chooses the upstream for a request. Only configured upstreams exist here,
 * so nothing a client sends can make archway contact another host.
 */
export class Router {
  constructor(
    private readonly upstreams: ReadonlyMap<string, UpstreamClient>,
    private readonly defaultUpstream: string,
  ) {}

  resolve(name: string): Route {
    const upstream = this.upstreams.get(this.defaultUpstream);
    if (!upstream) throw new RegistryError('NAME_UNKNOWN', 'no upstream for this name', { detail: { name } });
    return { upstream, repository: upstreamRepository(upstream.name, name) };
  }
}

/** Docker Hub keeps official images under `library/`: `alpine` there is `library/alpine`. */
export function upstreamRepository(upstream: string, name: string): string {
  if (upstream === 'docker.io' && !name.includes('/')) return `library/${name}`;
  return name;
}
