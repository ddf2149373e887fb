import { qualifyPattern, type Principal } from '../access/client-auth.ts';
import type { Config } from '../config/schema.ts';
import { globToRegExp } from '../platform/glob.ts';
import type { Route } from '../routing/router.ts';

/** A repository that is archway's own (config `local`): its tags are pushed to archway, not fetched. */
export interface LocalRepository {
  /** `<upstream>/<repository>`, as routed: the key of its records in the local store. */
  key: string;
  /** The user and token names that may push to it and delete from it. */
  pushers: ReadonlySet<string>;
}

/**
 * Which routed names are local repositories. Patterns are matched against the
 * upstream-qualified name, like client grants (`team/**` is in the default
 * upstream), so `team/node` through a docker daemon's mirror, `?ns=` or a
 * path prefix is the same local repository. A name several namespaces match
 * may be pushed by anyone any of them names.
 */
export class LocalCatalog {
  private readonly namespaces: Array<{ pattern: RegExp[]; pushers: readonly string[] }>;

  constructor(config: Config['local'], defaultUpstream: string) {
    this.namespaces = config.namespaces.map((n) => ({ pattern: n.repositories.map((r) => globToRegExp(qualifyPattern(r, defaultUpstream))), pushers: n.push }));
  }

  get size(): number {
    return this.namespaces.length;
  }

  match(route: Route): LocalRepository | undefined {
    if (this.namespaces.length === 0) return undefined;
    const key = `${route.upstream.name}/${route.repository}`;
    const matching = this.namespaces.filter((n) => n.pattern.some((p) => p.test(key)));
    if (matching.length === 0) return undefined;
    return { key, pushers: new Set(matching.flatMap((n) => n.pushers)) };
  }

  /** May this client write `repository`? Anonymous clients never may (config `local` requires `auth`). */
  static mayPush(principal: Principal | undefined, repository: LocalRepository): boolean {
    return principal !== undefined && repository.pushers.has(principal.name);
  }
}
