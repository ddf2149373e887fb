import type { Logger } from 'pino';
import { RegistryError } from '../errors.ts';
import { digestOf, type Digest } from '../oci/digest.ts';
import { parseIndex, type Descriptor, type ManifestIndex } from '../oci/manifest.ts';
import { clientAcceptsIndex, isIndexMediaType, isManifestMediaType, MediaType } from '../oci/media-types.ts';
import type { Reference } from '../oci/reference.ts';
import type { Metrics } from '../observability/metrics.ts';
import { filterIndex } from '../platform/filter-index.ts';
import { availablePlatforms, bestMatch } from '../platform/match.ts';
import { formatPlatform, type Platform } from '../platform/platform.ts';
import type { PlatformDecision } from '../platform/policy.ts';
import type { Route } from '../routing/router.ts';
import type { ManifestStore, StoredManifest } from '../store/manifest-store.ts';
import type { StorageHealth } from '../store/storage-health.ts';
import type { TagRecord, TagStore } from '../store/tag-store.ts';
import { badUpstream, isUpstreamOutage } from '../upstream/errors.ts';
import { SingleFlight } from '../util/single-flight.ts';
import type { CacheOutcome } from '../observability/cache-outcome.ts';
import type { DescriptorSizes } from './descriptor-sizes.ts';
import type { RepositoryAccess } from './repository-access.ts';
import { growingLru } from '../util/growing-lru.ts';

export interface ManifestAnswer {
  manifest: StoredManifest;
  outcome: CacheOutcome;
  /** Set when the answer was made for a platform from an upstream index. */
  rewrite?: { mode: 'resolve' | 'filter'; platform: Platform; sourceDigest: Digest };
}

export interface ManifestServiceOptions {
  manifests: ManifestStore;
  tags: TagStore;
  access: RepositoryAccess;
  /** Cache writes are best effort: a full disk must not fail a pull. */
  storage: StorageHealth;
  tagTtlMs: number;
  /** How long a revalidation may take before the cached tag is served stale. */
  revalidateTimeoutMs: number;
  metrics: Metrics;
  logger: Logger;
  /** Where the sizes of the blobs the served manifests name are kept, to bound those blobs' bodies. */
  sizes: DescriptorSizes;
  now?: () => number;
}

type TagAnswer = ManifestAnswer & { record: TagRecord };

/** For archway's own reads (inspector, prefetch): every manifest type, indexes as published. */
export const ACCEPT_ALL_MANIFESTS: ReadonlySet<string> = new Set<string>(Object.values(MediaType));
export const AS_PUBLISHED: PlatformDecision = { mode: 'passthrough', platform: { os: 'linux', architecture: 'amd64' }, source: 'default' };

/**
 * Where the manifests of one name come from: a repository at an upstream
 * (`ManifestService.source`), or a virtual image assembled from several
 * (src/virtual/). The platform rules apply to either the same way.
 */
export interface ManifestSource {
  /** The manifest store key under which archway keeps what it makes for this name (narrowed indexes). */
  readonly storeKey: string;
  /** The tag's manifest; `accepted` lets a source that writes its own index pick the format the client reads. */
  tag(tag: string, accepted: ReadonlySet<string>): Promise<ManifestAnswer>;
  digest(digest: Digest): Promise<ManifestAnswer>;
  /** archway made `digest` (a narrowed index) for this name: it may be served here by digest. */
  made(digest: Digest): Promise<void>;
}

/**
 * Answers manifest requests from the cache, filling it from the upstream:
 * manifests by digest are immutable and kept; a tag's digest is trusted for
 * the TTL, then revalidated with a HEAD, and served stale when the upstream
 * fails. Tag requests are negotiated against the client's Accept header.
 */
export class ManifestService {
  private readonly tagFlights = new SingleFlight<TagAnswer>();
  private readonly digestFlights = new SingleFlight<StoredManifest>();
  /** Narrowed indexes by (upstream, index digest, kept entry): computed once, not per request. */
  private readonly filteredIndexes = growingLru<string, StoredManifest>(10_000);
  private readonly now: () => number;
  private revalidateTimeoutMs: number;

  constructor(private readonly opts: ManifestServiceOptions) {
    this.now = opts.now ?? Date.now;
    this.revalidateTimeoutMs = opts.revalidateTimeoutMs;
  }

  /** timeouts.revalidate of a reloaded configuration (the caches above outlive configurations). */
  setRevalidateTimeout(ms: number): void {
    this.revalidateTimeoutMs = ms;
  }

  /**
   * Answer a manifest request. By digest: the stored bytes, never rewritten.
   * By tag: the upstream's answer, or, when it is an index and the decision
   * (or a client that cannot read indexes) asks for it, the chosen platform's
   * image manifest (resolve) or the index narrowed to it (filter).
   */
  async get(source: ManifestSource, reference: Reference, accepted: ReadonlySet<string>, decision: PlatformDecision): Promise<ManifestAnswer> {
    if (reference.kind === 'digest') return this.counted(await source.digest(reference.digest), 'manifest');
    const answer = this.counted(await source.tag(reference.tag, accepted), 'tag');
    const { manifest } = answer;
    if (!isIndexMediaType(manifest.mediaType)) return answer;
    const mode = clientAcceptsIndex(accepted, manifest.mediaType) ? decision.mode : 'resolve';
    if (mode === 'passthrough') return answer;

    const index = this.index(source, manifest);
    const entry = bestMatch(index, decision.platform);
    if (!entry?.platform) {
      const offered = availablePlatforms(index).map(formatPlatform);
      throw new RegistryError(
        'MANIFEST_UNKNOWN',
        `no image for ${formatPlatform(decision.platform)} in ${reference.tag}; it has ${offered.length ? offered.join(', ') : 'no platforms'}`,
        { detail: { tag: reference.tag, wanted: formatPlatform(decision.platform), available: offered } },
      );
    }
    const platform = entry.platform;
    this.opts.metrics.platformRewrites.inc({ mode, platform: formatPlatform(platform) });
    const rewrite = { mode, platform, sourceDigest: manifest.digest };
    if (mode === 'resolve') {
      const child = await source.digest(entry.digest);
      return { manifest: child.manifest, outcome: answer.outcome, rewrite };
    }
    return { manifest: await this.filtered(source, manifest, entry), outcome: answer.outcome, rewrite };
  }

  /** The manifests of a repository at its upstream, cached. */
  source(route: Route): ManifestSource {
    return {
      storeKey: route.upstream.name,
      tag: (tag) => this.byTag(route, tag),
      digest: (digest) => this.byDigest(route, digest),
      // Made by archway for this repository's tag: the upstream has never seen this digest.
      made: (digest) => this.opts.access.record(route, digest),
    };
  }

  /**
   * The index narrowed to one entry. It is stored like any manifest, so a GET
   * or HEAD by its new digest (containerd resolves a tag with HEAD, then GETs
   * by digest) answers the same bytes, also after a restart.
   */
  private async filtered(source: ManifestSource, index: StoredManifest, keep: Descriptor): Promise<StoredManifest> {
    const upstream = source.storeKey;
    const key = `${upstream}\n${index.digest}\n${keep.digest}`;
    let filtered = this.filteredIndexes.get(key);
    // Computed before, but evicted from the store since (cache.maxSize): made and stored again.
    if (filtered && !(await this.opts.manifests.get(upstream, filtered.digest))) filtered = undefined;
    if (!filtered) {
      const bytes = filterIndex(index.bytes, keep);
      filtered = { digest: digestOf(bytes), mediaType: index.mediaType, bytes };
      await this.persist(() => this.opts.manifests.put(upstream, filtered as StoredManifest));
      this.filteredIndexes.set(key, filtered);
    }
    await source.made(filtered.digest);
    return filtered;
  }

  private async byDigest(route: Route, digest: Digest): Promise<ManifestAnswer> {
    const upstream = route.upstream.name;
    const cached = await this.cached(upstream, digest);
    if (cached) {
      await this.opts.access.ensure(route, digest, 'manifest');
      this.opts.sizes.learn(upstream, route.repository, cached);
      return { manifest: cached, outcome: 'hit' };
    }
    const { value, joined } = await this.digestFlights.run(`${upstream}\n${route.repository}\n${digest}`, async () => {
      const fetched = await route.upstream.getManifest(route.repository, digest);
      await this.persist(() => this.opts.manifests.put(upstream, fetched));
      await this.opts.access.record(route, digest);
      return fetched;
    });
    this.opts.sizes.learn(upstream, route.repository, value);
    return { manifest: value, outcome: joined ? 'coalesced' : 'miss' };
  }

  private async byTag(route: Route, tag: string): Promise<TagAnswer> {
    const upstream = route.upstream.name;
    const record = await this.opts.tags.get(upstream, route.repository, tag);
    if (record && this.now() - record.checkedAt < this.opts.tagTtlMs) {
      const manifest = await this.cached(upstream, record.digest);
      if (manifest) {
        this.opts.sizes.learn(upstream, route.repository, manifest);
        return { record, manifest, outcome: 'hit' };
      }
    }
    const key = `${upstream}\n${route.repository}\n${tag}`;
    const { value, joined } = await this.tagFlights.run(key, () => this.refreshTag(route, tag, record));
    this.opts.sizes.learn(upstream, route.repository, value.manifest);
    return joined ? { ...value, outcome: 'coalesced' } : value;
  }

  /** Ask the upstream about a tag that is unknown or past its TTL. */
  private async refreshTag(route: Route, tag: string, known: TagRecord | undefined): Promise<TagAnswer> {
    const upstream = route.upstream;
    const { manifests, tags } = this.opts;
    const cached = known ? await this.cached(upstream.name, known.digest) : undefined;
    if (known && cached && upstream.health.down) {
      // Known to be failing: do not make this client wait for it to fail again.
      return this.stale(route, tag, known, cached, upstream.health.lastError ?? 'upstream down');
    }
    try {
      if (known && cached) {
        // HEAD first (Docker Hub does not count HEADs against the pull limit), with a
        // deadline: a cached answer beats waiting on a struggling upstream.
        const head = await upstream.headManifest(route.repository, tag, AbortSignal.timeout(this.revalidateTimeoutMs));
        if (head.digest === known.digest) {
          const record = { ...known, checkedAt: this.now() };
          await this.persist(() => tags.set(upstream.name, route.repository, tag, record));
          return { record, manifest: cached, outcome: 'revalidated' };
        }
      }
      const fetched = await upstream.getManifest(route.repository, tag);
      await this.persist(() => manifests.put(upstream.name, fetched));
      await this.opts.access.record(route, fetched.digest);
      const record: TagRecord = { digest: fetched.digest, mediaType: fetched.mediaType, checkedAt: this.now() };
      await this.persist(() => tags.set(upstream.name, route.repository, tag, record));
      return { record, manifest: fetched, outcome: 'miss' };
    } catch (err) {
      if (known && cached && isUpstreamOutage(err)) return this.stale(route, tag, known, cached, (err as Error).message);
      throw err;
    }
  }

  private stale(route: Route, tag: string, known: TagRecord, manifest: StoredManifest, reason: string): TagAnswer {
    const upstream = route.upstream.name;
    this.opts.metrics.staleServed.inc({ upstream });
    this.opts.logger.warn(
      { upstream, repository: route.repository, tag, digest: known.digest, ageMs: this.now() - known.checkedAt, reason },
      'upstream failing; serving cached tag stale',
    );
    return { record: known, manifest, outcome: 'stale' };
  }

  /** An index from the upstream; if it cannot be read, the upstream is at fault, not the client. */
  private index(source: ManifestSource, manifest: StoredManifest): ManifestIndex {
    try {
      return parseIndex(manifest.bytes, manifest.mediaType);
    } catch (err) {
      throw badUpstream(source.storeKey, `sent an invalid index (${(err as Error).message})`, { digest: manifest.digest });
    }
  }

  /** A manifest kept under a store key (an index archway made), or undefined. */
  stored(storeKey: string, digest: Digest): Promise<StoredManifest | undefined> {
    return this.cached(storeKey, digest);
  }

  /**
   * A stored manifest, if it may be served. One an older archway stored under
   * the upstream's word for its type (text/html, say) is a miss rather than a
   * 502: its bytes are sound (digest-checked), only the label is not, and the
   * upstream's answer, checked now, replaces it; a 502 would keep the entry
   * unservable until someone purged it.
   */
  private async cached(storeKey: string, digest: Digest): Promise<StoredManifest | undefined> {
    const manifest = await this.opts.manifests.get(storeKey, digest);
    return manifest && isManifestMediaType(manifest.mediaType) ? manifest : undefined;
  }

  /** Keep a manifest archway made (best effort, like every cache write). */
  keep(storeKey: string, manifest: StoredManifest): Promise<void> {
    return this.persist(() => this.opts.manifests.put(storeKey, manifest));
  }

  private persist(op: () => Promise<void>): Promise<void> {
    return this.opts.storage.bestEffort('manifest', op);
  }

  private counted<T extends ManifestAnswer>(answer: T, kind: 'manifest' | 'tag'): T {
    this.opts.metrics.cacheLookups.inc({ kind, outcome: answer.outcome });
    return answer;
  }
}
