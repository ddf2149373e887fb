import type { Digest } from '../oci/digest.ts';
import type { Route } from '../routing/router.ts';
import type { ConfirmationStore } from '../store/confirmation-store.ts';
import type { StorageHealth } from '../store/storage-health.ts';

/** Confirmation keys that are not a repository: content of an upstream as a whole, and the public marker. */
const ANY_REPOSITORY = '';
const PUBLIC = '\0public';

/**
 * Repository isolation for private content. Blobs are stored once by digest
 * (and manifests once per upstream), so without care, knowing a digest would
 * be enough to read private content through any name. So:
 * - on an isolated upstream (one with credentials, by default), content cached
 *   through one repository is served for another only after the upstream
 *   confirms, with a HEAD in that repository, that it has it there;
 * - a blob is shared across upstreams without asking only when it carries a
 *   PUBLIC marker, written when a non-isolated upstream served it; any other
 *   blob (from an isolated upstream, or whose marker could not be written, or
 *   cached before markers existed) is served through another upstream only
 *   after that upstream confirms it has it (one HEAD), and is recorded then.
 * The marker is positive on purpose: a record that is missing — a write that
 * failed on a full disk, a Redis that lost it — can only cost a HEAD, never
 * make private content public (a negative "private" marker would).
 * Confirmations are kept on disk (or in Redis).
 */
export class RepositoryAccess {
  constructor(
    private readonly confirmations: ConfirmationStore,
    private readonly storage: StorageHealth,
  ) {}

  /** Whether a confirmation is recorded; undefined when the store cannot tell (Redis away): never read as "no". */
  private known(upstream: string, repository: string, digest: Digest): Promise<boolean | undefined> {
    return this.confirmations.has(upstream, repository, digest).catch(() => undefined);
  }

  /** The upstream served `digest` in this repository: remember it. */
  async record(route: Route, digest: Digest): Promise<void> {
    const upstream = route.upstream.name;
    await this.storage.bestEffort('confirmation', async () => {
      if (route.upstream.isolated) {
        await this.confirmations.add(upstream, route.repository, digest);
      } else {
        await this.confirmations.add(upstream, ANY_REPOSITORY, digest);
        await this.confirmations.add(PUBLIC, ANY_REPOSITORY, digest);
      }
    });
  }

  /** Before serving cached content: make sure this repository may see it (throws *_UNKNOWN if not). */
  async ensure(route: Route, digest: Digest, kind: 'blob' | 'manifest'): Promise<void> {
    const upstream = route.upstream.name;
    if (route.upstream.isolated) {
      if ((await this.known(upstream, route.repository, digest)) === true) return;
    } else {
      // Manifests are stored per upstream: only blobs can cross from a private upstream.
      if (kind === 'manifest' || (await this.known(upstream, ANY_REPOSITORY, digest)) === true) return;
      if ((await this.known(PUBLIC, ANY_REPOSITORY, digest)) === true) {
        // Public content: shared as it is. Remembered, so the next hit asks no store about the marker.
        await this.record(route, digest);
        return;
      }
      // Private, or never recorded, or the records cannot tell (away, or lost): the upstream decides.
    }
    if (kind === 'blob') await route.upstream.headBlob(route.repository, digest);
    else await route.upstream.headManifest(route.repository, digest);
    await this.record(route, digest);
  }
}
