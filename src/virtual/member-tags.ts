import type { Logger } from 'pino';
import { LRUCache } from 'lru-cache';
import { RegistryError } from '../errors.ts';
import { nextPageQuery, tagsOf } from '../oci/tag-list.ts';
import type { Route } from '../routing/router.ts';

/** How much of one member's tag list is read (limits.memberTagPages, limits.memberTags). */
export interface MemberTagLimits {
  pages: number;
  tags: number;
}

/**
 * Tag text kept across all member lists (least recently used lists go first): over
 * 20 lists at the default limits with every tag 128 characters long, about a
 * thousand lists of 1,000 ordinary tags.
 */
const KEPT_TAG_CHARS = 32 * 1024 * 1024;
/** Per tag, besides its characters: what an array slot and a string header cost, roughly. */
const TAG_OVERHEAD = 16;

/**
 * Each member repository's whole tag list, read by following its upstream's
 * `Link` pages (bounded by the limits: a hostile or broken upstream can link
 * on forever), kept for the tag TTL and shared by every virtual name with
 * that member. Concurrent requests for one list share its reading. A list
 * that cannot be read again is served as it was last read (stale), as tags
 * are when their upstream fails.
 */
export class MemberTags {
  private readonly lists: LRUCache<string, readonly string[], Route>;

  constructor(
    private readonly logger: Logger,
    tagTtlMs: number,
    private limits: MemberTagLimits,
    /** The TTL's clock, for tests that move time; lru-cache's own (performance.now) otherwise. */
    now?: () => number,
  ) {
    this.lists = new LRUCache<string, readonly string[], Route>({
      // ttlResolution 0: lru-cache would otherwise keep a clock reading for a real millisecond.
      ...(now ? { perf: { now }, ttlResolution: 0 } : {}),
      maxSize: KEPT_TAG_CHARS,
      sizeCalculation: (tags) => tags.reduce((sum, t) => sum + t.length + TAG_OVERHEAD, 1),
      ttl: Math.max(1, tagTtlMs),
      allowStaleOnFetchRejection: true,
      fetchMethod: (_key, stale, { context }) => this.read(context, stale !== undefined),
    });
  }

  /** limits.memberTagPages and memberTags of a reloaded configuration, for lists read from now on. */
  setLimits(limits: MemberTagLimits): void {
    this.limits = limits;
  }

  /** The member repository's tags, sorted; undefined when they cannot be read (logged) and were never read before. */
  async of(route: Route): Promise<readonly string[] | undefined> {
    return this.lists.fetch(`${route.upstream.name}\n${route.repository}`, { context: route });
  }

  private async read(route: Route, hasStale: boolean): Promise<string[]> {
    const member = `${route.upstream.name}/${route.repository}`;
    // Known down: the list read last time, without waiting out a timeout on every request.
    if (hasStale && route.upstream.health.down) throw new Error(`${route.upstream.name} is down`);
    const { pages: maxPages, tags: maxTags } = this.limits;
    const tags = new Set<string>();
    const asked = new Set<string>();
    let query = '';
    for (let pages = 1; ; pages++) {
      asked.add(query);
      let body: Buffer;
      let link: string | string[] | undefined;
      try {
        ({ body, headers: { link } } = await route.upstream.listTags(route.repository, query));
      } catch (err) {
        // No such repository: no tags (an answer, kept like one).
        if (pages === 1 && err instanceof RegistryError && err.status === 404) return [];
        this.logger.warn({ member, pages, err: (err as Error).message }, 'member tag list unreadable');
        throw err;
      }
      let cut: string | undefined;
      for (const tag of tagsOf(body)) {
        if (tags.size >= maxTags && !tags.has(tag)) {
          cut = `more than limits.memberTags (${maxTags}) tags`;
          break;
        }
        tags.add(tag);
      }
      const next = nextPageQuery(link);
      if (cut === undefined && next !== undefined) {
        if (tags.size >= maxTags) cut = `more than limits.memberTags (${maxTags}) tags`;
        else if (pages >= maxPages) cut = `more than limits.memberTagPages (${maxPages}) pages`;
        else if (asked.has(next)) cut = 'its next page is one already read';
      }
      if (cut !== undefined) {
        this.logger.warn({ member, pages, tags: tags.size, reason: cut }, 'member tag list cut short');
        break;
      }
      if (next === undefined) break;
      query = next;
    }
    return [...tags].sort();
  }
}
