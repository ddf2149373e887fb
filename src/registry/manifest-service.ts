import type { Logger } from 'pino';
import { RegistryError } from '../errors.ts';
import type { Digest } from '../oci/digest.ts';
import { parseIndex } from '../oci/manifest.ts';
import { clientAcceptsIndex, isIndexMediaType } from '../oci/media-types.ts';
import type { Reference } from '../oci/reference.ts';
import type { Metrics } from '../observability/metrics.ts';
import { defaultPlatformEntry } from '../platform/default-platform.ts';
import type { Route } from '../routing/router.ts';
import type { FsManifestStore, StoredManifest } from '../store/manifest-store.ts';
import type { FsTagStore, TagRecord } from '../store/tag-store.ts';
import { isUpstreamOutage } from '../upstream/errors.ts';
import { SingleFlight } from '../util/single-flight.ts';
import type { CacheOutcome } from './cache-outcome.ts';

export interface ManifestAnswer {
  manifest: StoredManifest;
  outcome: CacheOutcome;
}

export interface ManifestServiceOptions {
  manifests: FsManifestStore;
  tags: FsTagStore;
  tagTtlMs: number;
  metrics: Metrics;
  logger: Logger;
  now?: () => number;
}

/**
 * Answers manifest requests from the cache, filling it from the upstream:
 * manifests by digest are immutable and kept; a tag's digest is trusted for
 * the TTL, then revalidated with a HEAD, and served stale when the upstream
 * fails. Tag requests are negotiated against the client's Accept header.
 */
export class ManifestService {
  private readonly tagFlights = new SingleFlight<{ record: TagRecord; manifest: StoredManifest; outcome: CacheOutcome }>();
  private readonly digestFlights = new SingleFlight<StoredManifest>();
  private readonly now: () => number;

  constructor(private readonly opts: ManifestServiceOptions) {
    this.now = opts.now ?? Date.now;
  }

  async get(route: Route, reference: Reference, accepted: Set<string>): Promise<ManifestAnswer> {
    if (reference.kind === 'digest') return this.byDigest(route, reference.digest);
    const answer = await this.byTag(route, reference.tag);
    const { manifest } = answer;
    if (!isIndexMediaType(manifest.mediaType) || clientAcceptsIndex(accepted, manifest.mediaType)) return answer;
    // A client that cannot read indexes gets the linux/amd64 image, as registries answer.
    const entry = defaultPlatformEntry(parseIndex(manifest.bytes, manifest.mediaType));
    if (!entry) {
      throw new RegistryError('MANIFEST_UNKNOWN', 'the tag is a multi-platform index without linux/amd64, and the client does not accept indexes', {
        detail: { tag: reference.tag, mediaType: manifest.mediaType },
      });
    }
    const child = await this.byDigest(route, entry.digest);
    return { manifest: child.manifest, outcome: answer.outcome };
  }

  async byDigest(route: Route, digest: Digest): Promise<ManifestAnswer> {
    const upstream = route.upstream.name;
    const cached = await this.opts.manifests.get(upstream, digest);
    if (cached) return this.counted({ manifest: cached, outcome: 'hit' });
    const { value, joined } = await this.digestFlights.run(`${upstream}\n${digest}`, async () => {
      const fetched = await route.upstream.getManifest(route.repository, digest);
      await this.opts.manifests.put(upstream, fetched);
      return fetched;
    });
    return this.counted({ manifest: value, outcome: joined ? 'coalesced' : 'miss' });
  }

  private async byTag(route: Route, tag: string): Promise<ManifestAnswer> {
    const upstream = route.upstream.name;
    const record = await this.opts.tags.get(upstream, route.repository, tag);
    if (record && this.now() - record.checkedAt < this.opts.tagTtlMs) {
      const manifest = await this.opts.manifests.get(upstream, record.digest);
      if (manifest) return this.counted({ manifest, outcome: 'hit' }, 'tag');
    }
    const key = `${upstream}\n${route.repository}\n${tag}`;
    const { value, joined } = await this.tagFlights.run(key, () => this.refreshTag(route, tag, record));
    return this.counted({ manifest: value.manifest, outcome: joined ? 'coalesced' : value.outcome }, 'tag');
  }

  /** Ask the upstream about a tag that is unknown or past its TTL. */
  private async refreshTag(route: Route, tag: string, known: TagRecord | undefined) {
    const upstream = route.upstream.name;
    const store = this.opts;
    try {
      if (known) {
        // HEAD first: Docker Hub does not count HEADs against the pull limit.
        const head = await route.upstream.headManifest(route.repository, tag);
        const manifest = head.digest === known.digest ? await store.manifests.get(upstream, known.digest) : undefined;
        if (manifest) {
          const record = { ...known, checkedAt: this.now() };
          await store.tags.set(upstream, route.repository, tag, record);
          return { record, manifest, outcome: 'revalidated' as const };
        }
      }
      const fetched = await route.upstream.getManifest(route.repository, tag);
      await store.manifests.put(upstream, fetched);
      const record: TagRecord = { digest: fetched.digest, mediaType: fetched.mediaType, checkedAt: this.now() };
      await store.tags.set(upstream, route.repository, tag, record);
      return { record, manifest: fetched, outcome: 'miss' as const };
    } catch (err) {
      if (known && isUpstreamOutage(err)) {
        const manifest = await store.manifests.get(upstream, known.digest);
        if (manifest) {
          store.metrics.staleServed.inc({ upstream });
          store.logger.warn(
            { upstream, repository: route.repository, tag, digest: known.digest, ageMs: this.now() - known.checkedAt, reason: (err as Error).message },
            'upstream failing; serving cached tag stale',
          );
          return { record: known, manifest, outcome: 'stale' as const };
        }
      }
      throw err;
    }
  }

  private counted(answer: ManifestAnswer, kind: 'manifest' | 'tag' = 'manifest'): ManifestAnswer {
    this.opts.metrics.cacheLookups.inc({ kind, outcome: answer.outcome });
    return answer;
  }
}
