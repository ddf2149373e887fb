import type { Digest } from '../oci/digest.ts';
import type { Route } from '../routing/router.ts';
import type { ConfirmationStore } from '../store/confirmation-store.ts';

/**
 * Repository isolation for upstreams with private content. Blobs and
 * manifests are stored once by digest, but on such an upstream a digest cached
 * through one repository is served for another only after the upstream
 * confirms, with a HEAD in that repository (and with the credentials), that it
 * has it there; the confirmation is kept. Otherwise knowing a digest would be
 * enough to read private content through any repository name. Upstreams
 * without credentials share cached content across repositories.
 */
export class RepositoryAccess {
  constructor(private readonly confirmations: ConfirmationStore) {}

  /** The upstream served `digest` in this repository: remember it. */
  async record(route: Route, digest: Digest): Promise<void> {
    if (route.upstream.isolated) await this.confirmations.add(route.upstream.name, route.repository, digest);
  }

  /** Before serving cached content: make sure this repository may see it (throws *_UNKNOWN if not). */
  async ensure(route: Route, digest: Digest, kind: 'blob' | 'manifest'): Promise<void> {
    if (!route.upstream.isolated) return;
    if (await this.confirmations.has(route.upstream.name, route.repository, digest)) return;
    if (kind === 'blob') await route.upstream.headBlob(route.repository, digest);
    else await route.upstream.headManifest(route.repository, digest);
    await this.record(route, digest);
  }
}
