import type { Config } from '../config/schema.ts';
import { parsePlatform, type Platform } from '../platform/platform.ts';
import { upstreamRepository, type Route, type Router } from '../routing/router.ts';
import { growingLru } from '../util/growing-lru.ts';

/** One per-architecture repository of a virtual image. */
export interface VirtualMember {
  /** os/arch[/variant], normalised: the platform its index entry gets. */
  key: string;
  platform: Platform;
  /** Where its manifests and blobs come from. */
  route: Route;
}

/** A multi-platform name assembled from per-architecture repositories (config `virtual`). */
export interface VirtualImage {
  /** The registry the name lives in. */
  home: string;
  /** The repository name there, as routed (`multi/node`; Docker Hub's `library/` applied). */
  repository: string;
  members: readonly VirtualMember[];
}

/** The registry host a reference starts with (Docker's rule), or undefined for the home registry. */
function registryOf(reference: string): string | undefined {
  const slash = reference.indexOf('/');
  const first = slash < 0 ? '' : reference.slice(0, slash);
  return first.includes('.') || first.includes(':') || first === 'localhost' ? first : undefined;
}

interface Definition {
  home: string;
  /** An exact repository name, or for a template `prefix/*` the prefix with its slash. */
  name: string;
  template: boolean;
  /** platform key → member reference with `{name}`. */
  members: Readonly<Record<string, string>>;
}

/**
 * The configured virtual images, and which one (if any) a routed request
 * names. A name lives in one registry (its `upstream`, else the default):
 * `multi/node` through the default route, `?ns=docker.io` or a `docker.io/`
 * prefix are the same virtual image; the same name on another registry is
 * that registry's repository.
 */
export class VirtualCatalog {
  private readonly definitions: Definition[];
  /** Resolved images by home and repository (templates make one per name). */
  private readonly resolved = growingLru<string, VirtualImage>(10_000);

  constructor(
    config: Config['virtual'],
    defaultUpstream: string,
    private readonly router: Router,
  ) {
    this.definitions = Object.entries(config).map(([name, v]) => {
      const home = v.upstream ?? defaultUpstream;
      const template = name.endsWith('/*');
      return { home, name: template ? name.slice(0, -1) : upstreamRepository(home, name), template, members: v.members };
    });
  }

  get size(): number {
    return this.definitions.length;
  }

  match(route: Route): VirtualImage | undefined {
    if (this.definitions.length === 0) return undefined;
    const key = `${route.upstream.name}\n${route.repository}`;
    const known = this.resolved.get(key);
    if (known) return known;
    for (const d of this.definitions) {
      if (d.home !== route.upstream.name) continue;
      const captured = d.template
        ? route.repository.startsWith(d.name) && route.repository.length > d.name.length
          ? route.repository.slice(d.name.length)
          : undefined
        : route.repository === d.name
          ? route.repository.replace(/^library\//, '')
          : undefined;
      if (captured === undefined) continue;
      const members: VirtualMember[] = [];
      for (const [platform, reference] of Object.entries(d.members)) {
        const resolved = reference.replaceAll('{name}', captured);
        // What `*` matched is a repository name, never a registry: `mirror/registry.internal/secret`
        // must not turn a `{name}` member into a request to registry.internal.
        if (registryOf(resolved) !== registryOf(reference)) return undefined;
        members.push({ key: platform, platform: parsePlatform(platform), route: this.router.resolveIn(resolved, d.home) });
      }
      const image: VirtualImage = { home: d.home, repository: route.repository, members };
      this.resolved.set(key, image);
      return image;
    }
    return undefined;
  }
}
