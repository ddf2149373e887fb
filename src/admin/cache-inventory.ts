import type { Digest } from '../oci/digest.ts';
import { parseIndex, referencedDigests } from '../oci/manifest.ts';
import { isIndexMediaType } from '../oci/media-types.ts';
import { isAttestationEntry } from '../platform/match.ts';
import { formatPlatform } from '../platform/platform.ts';
import type { BlobStore } from '../store/blob-store.ts';
import type { ClusterEventMap, ClusterEvents } from '../store/cluster-events.ts';
import type { ManifestStore } from '../store/manifest-store.ts';
import type { TagEntry, TagStore } from '../store/tag-store.ts';
import { FAN_OUT, mapLimit } from '../util/bounded-map.ts';

/** What a manifest brings along: its child manifests (an index's) and every blob below it. */
interface Closure {
  manifests: Set<Digest>;
  blobs: Set<Digest>;
}

export interface RepositorySize {
  /** `upstream/repository` */
  repository: string;
  tags: number;
  blobs: number;
  /** Cached blob bytes reachable from its tags (shared blobs count for each repository). */
  bytes: number;
}

export interface PurgeTarget {
  upstream: string;
  repository: string;
  /** Absent: every tag of the repository. */
  tag?: string;
  digest?: Digest;
}

export interface PurgeReport {
  tags: string[];
  manifests: number;
  blobs: number;
  bytes: number;
  /** Blobs left because another cached manifest refers to them. */
  keptShared: number;
  /** Blobs left because they were being read at that moment. */
  keptInUse: number;
}

/**
 * The cache as an inventory, read from the stores only (never an upstream):
 * sizes per repository, which platforms of a tag are cached, and purging a
 * tag or manifest with the blobs nothing else refers to. Walks every tag
 * and manifest record, so it is for the admin API, not the pull path.
 */
export class CacheInventory {
  constructor(
    private readonly blobs: BlobStore,
    private readonly manifests: ManifestStore,
    private readonly tags: TagStore,
    private readonly events?: ClusterEvents,
  ) {}

  /**
   * Purges made through other replicas: they cleaned the shared stores, but
   * this replica may still hold the manifests in memory (the S3 manifest
   * store keeps hot ones for a minute). Deleting them here drops those copies
   * (and is a no-op on the bucket, where they are gone already). Returns the
   * unsubscribe function.
   */
  followPurges(onError: (err: unknown) => void): () => void {
    const stopPurges =
      this.events?.subscribe('purge', (event, origin) => {
        if (origin.self) return;
        void this.forget(event).catch(onError);
      }) ?? (() => {});
    // Purges published while this replica was cut off never arrive: every copy in memory may be one of them.
    const stopGaps = this.events?.onGap(() => this.manifests.forgetCopies?.()) ?? (() => {});
    return () => {
      stopPurges();
      stopGaps();
    };
  }

  private async forget(event: ClusterEventMap['purge']): Promise<void> {
    await mapLimit(event.manifests, FAN_OUT, (digest) => this.manifests.delete(event.upstream, digest));
  }

  async counts(): Promise<{ manifests: number; tags: number }> {
    let manifests = 0;
    let tags = 0;
    for await (const _ of this.manifests.list()) manifests++;
    for await (const _ of this.tags.list()) tags++;
    return { manifests, tags };
  }

  async repositorySizes(): Promise<RepositorySize[]> {
    const byRepository = new Map<string, { tags: number; blobs: Set<Digest> }>();
    for await (const entry of this.tags.list()) {
      const key = `${entry.upstream}/${entry.repository}`;
      const repo = byRepository.get(key) ?? { tags: 0, blobs: new Set<Digest>() };
      repo.tags++;
      for (const blob of (await this.closure(entry.upstream, entry.record.digest)).blobs) repo.blobs.add(blob);
      byRepository.set(key, repo);
    }
    const sizes: RepositorySize[] = [];
    for (const [repository, { tags, blobs }] of byRepository) {
      let bytes = 0;
      let count = 0;
      for (const blob of blobs) {
        const info = await this.blobs.stat(blob);
        if (!info) continue;
        bytes += info.size;
        count++;
      }
      sizes.push({ repository, tags, blobs: count, bytes });
    }
    return sizes.sort((a, b) => b.bytes - a.bytes);
  }

  /** Each platform of a cached tag and whether all its blobs are cached; empty when the tag is not cached. */
  async platformMatrix(upstream: string, repository: string, tag: string): Promise<Array<{ platform: string; cached: 'yes' | 'partial' | 'no' }>> {
    const record = await this.tags.get(upstream, repository, tag);
    const top = record && (await this.manifests.get(upstream, record.digest));
    if (!top) return [];
    const rows: Array<{ digest: Digest; platform: string }> = [];
    if (isIndexMediaType(top.mediaType)) {
      for (const entry of parseIndex(top.bytes, top.mediaType).manifests) {
        if (entry.platform && !isAttestationEntry(entry)) rows.push({ digest: entry.digest, platform: formatPlatform(entry.platform) });
      }
    } else {
      rows.push({ digest: top.digest, platform: 'single' });
    }
    // Store reads may be requests (S3): as bounded as the inspector's.
    return mapLimit(rows, FAN_OUT, async ({ digest, platform }) => {
      const child = await this.manifests.get(upstream, digest);
      if (!child) return { platform, cached: 'no' as const };
      const blobs = referencedDigests(child.bytes);
      let present = 0;
      for (const blob of blobs) if (await this.blobs.stat(blob)) present++;
      return { platform, cached: blobs.length > 0 && present === blobs.length ? ('yes' as const) : present > 0 ? ('partial' as const) : ('no' as const) };
    });
  }

  /**
   * Remove a tag (or every tag of a repository, or a manifest by digest with
   * the tags of this repository that point to it), the manifests below it
   * that no remaining tag reaches, and the blobs no remaining manifest refers
   * to. A blob being read stays (the store refuses to delete it).
   */
  async purge(target: PurgeTarget): Promise<PurgeReport> {
    const { upstream, repository } = target;
    const allTags: TagEntry[] = [];
    for await (const entry of this.tags.list()) allTags.push(entry);
    const inRepository = (e: TagEntry) => e.upstream === upstream && e.repository === repository;
    const purgedTags = allTags.filter(
      (e) => inRepository(e) && (target.digest ? e.record.digest === target.digest : target.tag === undefined || e.tag === target.tag),
    );
    const roots = new Set<Digest>(purgedTags.map((e) => e.record.digest));
    if (target.digest) roots.add(target.digest);

    const doomed: Closure = { manifests: new Set(), blobs: new Set() };
    for (const root of roots) merge(doomed, await this.closure(upstream, root));
    // Manifests another tag still reaches stay, with everything below them.
    const purgedSet = new Set(purgedTags);
    for (const other of allTags) {
      if (purgedSet.has(other) || other.upstream !== upstream) continue;
      for (const m of (await this.closure(upstream, other.record.digest)).manifests) doomed.manifests.delete(m);
    }
    // Blobs any remaining manifest (of any upstream) refers to stay.
    const shared = new Set<Digest>();
    for await (const { upstream: u, digest } of this.manifests.list()) {
      if (u === upstream && doomed.manifests.has(digest)) continue;
      const m = await this.manifests.get(u, digest);
      if (m) for (const d of referencedDigests(m.bytes)) if (doomed.blobs.has(d)) shared.add(d);
    }

    const report: PurgeReport = { tags: [], manifests: 0, blobs: 0, bytes: 0, keptShared: shared.size, keptInUse: 0 };
    for (const e of purgedTags) {
      if (await this.tags.delete(e.upstream, e.repository, e.tag)) report.tags.push(e.tag);
    }
    for (const m of doomed.manifests) if (await this.manifests.delete(upstream, m)) report.manifests++;
    // Every replica drops its in-memory copies now, rather than when they expire.
    await this.events?.publish('purge', { upstream, repository, tags: report.tags, manifests: [...doomed.manifests] });
    for (const blob of doomed.blobs) {
      if (shared.has(blob)) continue;
      const info = await this.blobs.stat(blob);
      if (!info) continue;
      if (await this.blobs.delete(blob)) {
        report.blobs++;
        report.bytes += info.size;
      } else {
        report.keptInUse++;
      }
    }
    return report;
  }

  /** The manifests and blobs below a cached manifest (what is not cached is not followed). */
  private async closure(upstream: string, root: Digest): Promise<Closure> {
    const out: Closure = { manifests: new Set(), blobs: new Set() };
    const pending = [root];
    while (pending.length) {
      const digest = pending.pop() as Digest;
      if (out.manifests.has(digest)) continue;
      const manifest = await this.manifests.get(upstream, digest);
      if (!manifest) continue;
      out.manifests.add(digest);
      const refs = referencedDigests(manifest.bytes);
      if (isIndexMediaType(manifest.mediaType)) pending.push(...refs);
      else for (const d of refs) out.blobs.add(d);
    }
    return out;
  }
}

function merge(into: Closure, from: Closure): void {
  for (const m of from.manifests) into.manifests.add(m);
  for (const b of from.blobs) into.blobs.add(b);
}
