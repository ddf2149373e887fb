import type { Logger } from 'pino';
import type { LRUCache } from 'lru-cache';
import { RegistryError } from '../errors.ts';
import type { Digest } from '../oci/digest.ts';
import { parseIndex, referencedDigests, type Descriptor } from '../oci/manifest.ts';
import { isIndexMediaType } from '../oci/media-types.ts';
import { tagPage, type TagPage, type TagPageRequest } from '../oci/tag-list.ts';
import { bestMatch } from '../platform/match.ts';
import { formatPlatform } from '../platform/platform.ts';
import type { CacheOutcome } from '../observability/cache-outcome.ts';
import type { ManifestAnswer, ManifestService, ManifestSource } from '../registry/manifest-service.ts';
import type { Route } from '../routing/router.ts';
import { FAN_OUT, mapLimitSettled } from '../util/bounded-map.ts';
import { assembleIndex, indexFormatFor } from './assemble.ts';
import type { MemberTags } from './member-tags.ts';
import type { VirtualProvenance } from './provenance.ts';
import type { VirtualImage, VirtualMember } from './virtual-catalog.ts';
import { growingLru } from '../util/growing-lru.ts';

/**
 * Manifest store key of the indexes archway assembles for one virtual name (not
 * a registry host: cannot clash with one). Per name: an index made for one name
 * is served by digest under that name only.
 */
function storeKeyOf(image: VirtualImage): string {
  return `_virtual:${image.home}/${image.repository}`;
}

/** Worst first: the request log shows the least cached part of an assembled answer. */
const OUTCOME_ORDER: readonly CacheOutcome[] = ['miss', 'coalesced', 'stale', 'revalidated', 'pass', 'hit'];

interface MemberEntry {
  member: VirtualMember;
  descriptor: Descriptor;
  outcome: CacheOutcome;
}

/**
 * Serves virtual images: a tag is answered with an index assembled from the
 * members' manifests for that tag (each fetched and cached like any tag, so
 * the TTL, revalidation and stale serving apply per member); manifests and
 * blobs by digest go to the member they came from.
 */
export class VirtualImageService {
  /**
   * Assembled indexes already stored with their provenance recorded, by virtual
   * name and digest: two names over the same members make the same bytes, and
   * each needs its own provenance. Forgotten after a minute, so the records are
   * written again now and then (a shared Redis may have lost them).
   */
  private readonly kept = growingLru<string, true>(10_000, { ttl: 60_000 });

  /** Members without a tag, remembered for the tag TTL: not asked again on every request of the virtual tag. */
  private readonly missing: LRUCache<string, RegistryError>;

  constructor(
    private readonly manifests: ManifestService,
    private readonly provenance: VirtualProvenance,
    private readonly logger: Logger,
    tagTtlMs: number,
    private readonly memberTags: MemberTags,
  ) {
    this.missing = growingLru<string, RegistryError>(10_000, { ttl: Math.max(1, tagTtlMs) });
  }

  source(image: VirtualImage): ManifestSource {
    return {
      storeKey: storeKeyOf(image),
      tag: (tag, accepted) => this.tag(image, tag, accepted),
      digest: (digest) => this.byDigest(image, digest),
      // Narrowed indexes are stored under the name's store key, where byDigest looks first.
      made: async () => {},
    };
  }

  /** The member repository a digest came from, if it passed through this name. */
  async memberOf(image: VirtualImage, digest: Digest): Promise<Route | undefined> {
    return (await this.provenance.memberOf(image, digest))?.route;
  }

  /** The member repository a blob under the virtual name comes from; BLOB_UNKNOWN when it came from none. */
  async blobRoute(image: VirtualImage, digest: Digest): Promise<Route> {
    const member = await this.provenance.memberOf(image, digest);
    if (!member) throw new RegistryError('BLOB_UNKNOWN', 'blob is not part of any member image seen through this name', { detail: { digest } });
    return member.route;
  }

  /**
   * Tags any member has (a tag counts when one member has it, as the index for
   * it is made of the members that have it), sorted, paged with n and last as
   * the spec says. A member whose list cannot be read is left out.
   */
  async tags(image: VirtualImage, request: TagPageRequest): Promise<TagPage> {
    const lists = await mapLimitSettled(image.members, FAN_OUT, (m) => this.memberTags.of(m.route));
    const all = new Set<string>();
    for (const [i, result] of lists.entries()) {
      const tags = result.status === 'fulfilled' ? result.value : undefined;
      if (tags) {
        for (const t of tags) all.add(t);
        continue;
      }
      const member = image.members[i] as VirtualMember;
      this.logger.warn(
        { virtual: `${image.home}/${image.repository}`, member: `${member.route.upstream.name}/${member.route.repository}`, platform: member.key },
        'virtual image member left out of tags/list',
      );
    }
    return tagPage([...all].sort(), request);
  }

  private async tag(image: VirtualImage, tag: string, accepted: ReadonlySet<string>): Promise<ManifestAnswer> {
    const results = await mapLimitSettled(image.members, FAN_OUT, (member) => this.memberEntry(member, tag));
    const entries: MemberEntry[] = [];
    const tried: string[] = [];
    let failure: unknown;
    for (const [i, result] of results.entries()) {
      const member = image.members[i] as VirtualMember;
      const reference = `${member.route.upstream.name}/${member.route.repository}:${tag}`;
      tried.push(reference);
      if (result.status === 'fulfilled') {
        entries.push(result.value);
        continue;
      }
      const err = result.reason as Error;
      const missing = err instanceof RegistryError && err.status === 404;
      if (!missing) failure ??= err;
      this.logger[missing ? 'info' : 'warn'](
        { virtual: `${image.home}/${image.repository}`, member: reference, platform: member.key, err: err.message },
        'virtual image member left out',
      );
    }
    if (entries.length === 0) {
      if (failure) throw failure;
      throw new RegistryError('MANIFEST_UNKNOWN', `no member of ${image.repository} has tag ${tag} (tried ${tried.join(', ')})`, {
        detail: { tag, tried },
      });
    }
    const manifest = assembleIndex(
      entries.map((e) => ({ descriptor: e.descriptor, platform: e.member.platform })),
      indexFormatFor(accepted),
    );
    const keptKey = `${image.home}/${image.repository}\n${manifest.digest}`;
    if (!this.kept.has(keptKey)) {
      await this.manifests.keep(storeKeyOf(image), manifest);
      for (const e of entries) await this.provenance.record(image, e.member, [e.descriptor.digest]);
      this.kept.set(keptKey, true);
    }
    const outcome = OUTCOME_ORDER.find((o) => entries.some((e) => e.outcome === o)) ?? 'hit';
    return { manifest, outcome };
  }

  /** The member's manifest for the tag, as an index entry: its own, or its entry for the member's platform. */
  private async memberEntry(member: VirtualMember, tag: string): Promise<MemberEntry> {
    const missingKey = `${member.route.upstream.name}/${member.route.repository}:${tag}`;
    const known = this.missing.get(missingKey);
    if (known) throw known;
    const source = this.manifests.source(member.route);
    let answer: ManifestAnswer;
    try {
      answer = await source.tag(tag, new Set());
    } catch (err) {
      if (err instanceof RegistryError && err.status === 404) this.missing.set(missingKey, err);
      throw err;
    }
    const { manifest, outcome } = answer;
    if (!isIndexMediaType(manifest.mediaType)) {
      return { member, outcome, descriptor: { mediaType: manifest.mediaType, digest: manifest.digest, size: manifest.bytes.length } };
    }
    const entry = bestMatch(parseIndex(manifest.bytes, manifest.mediaType), member.platform);
    if (!entry) {
      throw new RegistryError('MANIFEST_UNKNOWN', `${member.route.repository}:${tag} has no image for ${formatPlatform(member.platform)}`);
    }
    return { member, outcome, descriptor: entry };
  }

  private async byDigest(image: VirtualImage, digest: Digest): Promise<ManifestAnswer> {
    const made = await this.manifests.stored(storeKeyOf(image), digest);
    if (made) return { manifest: made, outcome: 'hit' };
    const member = await this.provenance.memberOf(image, digest);
    if (!member) {
      throw new RegistryError('MANIFEST_UNKNOWN', 'manifest is not part of any member image seen through this name', { detail: { digest } });
    }
    const answer = await this.manifests.source(member.route).digest(digest);
    // What it points at (layers, config, a nested index's images) is fetched next, under the virtual name.
    await this.provenance.record(image, member, referencedDigests(answer.manifest.bytes));
    return answer;
  }
}
