import { denied, type Principal } from '../access/client-auth.ts';
import type { Route } from '../routing/router.ts';
import type { VirtualImage } from '../virtual/virtual-catalog.ts';

/**
 * May `principal` pull `name` (routed to `route`)? Under a virtual name the
 * content is its members', so the principal needs a grant for every member
 * repository too, or the whole request is DENIED. Leaving the ungranted
 * members out instead would make the assembled index (cached per name, and
 * its digest what clients pin) depend on who asked, and the tag list and
 * digests under the name would still have to be filtered one by one; a
 * grant that names the virtual image but not its members grants nothing.
 */
export function checkGrants(principal: Principal | undefined, name: string, route: Route, virtual: VirtualImage | undefined): void {
  if (!principal) return;
  if (!principal.allows(`${route.upstream.name}/${route.repository}`)) throw denied(name);
  for (const member of virtual?.members ?? []) {
    if (!principal.allows(`${member.route.upstream.name}/${member.route.repository}`)) throw denied(name);
  }
}
