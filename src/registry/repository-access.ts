import type { Digest } from '../oci/digest.ts';
import type { Route } from '../routing/router.ts';
import type { ConfirmationStore } from '../store/confirmation-store.ts';
import type { StorageHealth } from '../store/storage-health.ts';

/** Confirmation keys that are not a repository: content of an upstream as a whole, and the private marker. */
const ANY_REPOSITORY = '';
const PRIVATE = '\0private';

/**
 * Repository isolation for private content. Blobs are stored once by digest
 * (and manifests once per upstream), so without care, knowing a digest would
 * be enough to read private content through any name. So:
 * - on an isolated upstream (one with credentials, by default), content cached
 *   through one repository is served for another only after the upstream
 *   confirms, with a HEAD in that repository, that it has it there;
 * - a blob that came from an isolated upstream is served through another
 *   upstream only after that upstream confirms it has it;
 * - everything else (public content on public upstreams) is shared freely.
 * Confirmations are kept on disk.
 */
export class RepositoryAccess {
  constructor(
    private readonly confirmations: ConfirmationStore,
    private readonly storage: StorageHealth,
  ) {}

  /** The upstream served `digest` in this repository: remember it. */
  async record(route: Route, digest: Digest): Promise<void> {
    const upstream = route.upstream.name;
    await this.storage.bestEffort('confirmation', async () => {
      if (route.upstream.isolated) {
        await this.confirmations.add(upstream, route.repository, digest);
        await this.confirmations.add(PRIVATE, ANY_REPOSITORY, digest);
      } else {
        await this.confirmations.add(upstream, ANY_REPOSITORY, digest);
      }
    });
  }

  /** Before serving cached content: make sure this repository may see it (throws *_UNKNOWN if not). */
  async ensure(route: Route, digest: Digest, kind: 'blob' | 'manifest'): Promise<void> {
    const upstream = route.upstream.name;
    if (route.upstream.isolated) {
      if (await this.confirmations.has(upstream, route.repository, digest)) return;
    } else {
      // Manifests are stored per upstream: only blobs can cross from a private upstream.
      if (kind === 'manifest' || (await this.confirmations.has(upstream, ANY_REPOSITORY, digest))) return;
      if (!(await this.confirmations.has(PRIVATE, ANY_REPOSITORY, digest))) {
        // Public content: shared as it is. Remembered, so the next hit asks no disk about the private marker.
        await this.record(route, digest);
        return;
      }
    }
    if (kind === 'blob') await route.upstream.headBlob(route.repository, digest);
    else await route.upstream.headManifest(route.repository, digest);
    await this.record(route, digest);
  }
}
