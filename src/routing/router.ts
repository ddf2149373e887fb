import { RegistryError } from '../errors.ts';
import type { Upstream } from '../upstream/upstream.ts';

/** Where a client's repository name goes: which upstream, and what the name is there. */
export interface Route {
  upstream: Upstream;
  /** The repository name at the upstream (Docker Hub's `library/` applied). */
  repository: string;
  /** How the client addressed the upstream: `ns` query, a path prefix, or neither (the default upstream). */
  via: 'ns' | 'prefix' | 'default';
}

export interface RouterUpstream {
  client: Upstream;
  /** Other names of the same registry (docker.io = index.docker.io = registry-1.docker.io). */
  aliases: readonly string[];
}

/**
 * Chooses the upstream for a request, three ways:
 * - `?ns=<registry host>`, which containerd mirrors append to every request;
 * - a path prefix, `/v2/<registry host>/<name>/…`, for clients without ns (podman, skopeo, the docker CLI);
 * - otherwise the default upstream (a docker daemon's registry-mirrors).
 * Only configured upstreams and their aliases exist here: an ns or prefix
 * naming anything else is NAME_UNKNOWN, and nothing is contacted, so no
 * client can make archway reach a host of its choosing.
 */
export class Router {
  private readonly byHost = new Map<string, Upstream>();

  constructor(
    upstreams: ReadonlyMap<string, RouterUpstream>,
    private readonly defaultUpstream: string,
  ) {
    for (const [key, { client, aliases }] of upstreams) {
      for (const host of [key, ...aliases]) this.byHost.set(host.toLowerCase(), client);
    }
  }

  resolve(name: string, ns?: string): Route {
    const route = this.route(name, ns);
    // The name as the upstream will see it (library/ added) must still be a valid one.
    if (route.repository.length > MAX_NAME_LENGTH) {
      throw new RegistryError('NAME_INVALID', `repository name longer than ${MAX_NAME_LENGTH} characters at the upstream`, { detail: { name } });
    }
    return route;
  }

  /**
   * A repository reference from the config (a virtual image's member): on the
   * registry its first component names when that is a host, else on `home`.
   */
  resolveIn(name: string, home: string): Route {
    const first = name.slice(0, Math.max(0, name.indexOf('/')));
    return this.resolve(name, looksLikeHost(first) ? undefined : home);
  }

  private route(name: string, ns?: string): Route {
    if (ns !== undefined) {
      const upstream = this.byHost.get(ns.toLowerCase());
      if (!upstream) throw notConfigured(ns);
      return { upstream, repository: upstreamRepository(upstream.name, name), via: 'ns' };
    }
    const slash = name.indexOf('/');
    const first = slash < 0 ? '' : name.slice(0, slash);
    if (looksLikeHost(first)) {
      const upstream = this.byHost.get(first);
      // A host that is not configured is refused, never tried and never sent to the default.
      if (!upstream) throw notConfigured(first);
      return { upstream, repository: upstreamRepository(upstream.name, name.slice(slash + 1)), via: 'prefix' };
    }
    const upstream = this.byHost.get(this.defaultUpstream);
    if (!upstream) throw notConfigured(this.defaultUpstream);
    return { upstream, repository: upstreamRepository(upstream.name, name), via: 'default' };
  }
}

const MAX_NAME_LENGTH = 255;

/** Docker's rule: a first component with a dot or a colon, or `localhost`, is a registry host. */
function looksLikeHost(component: string): boolean {
  return component.includes('.') || component.includes(':') || component === 'localhost';
}

function notConfigured(host: string): RegistryError {
  return new RegistryError('NAME_UNKNOWN', `registry ${host} is not configured in archway`, { detail: { registry: host } });
}

/** Docker Hub keeps official images under `library/`: `alpine` there is `library/alpine`. */
export function upstreamRepository(upstream: string, name: string): string {
  if (upstream === 'docker.io' && !name.includes('/')) return `library/${name}`;
  return name;
}
