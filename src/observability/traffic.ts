import { LRUCache } from 'lru-cache';
import type { CacheOutcome } from './cache-outcome.ts';

/** One answered /v2 request, as the request log sees it when the response closes. */
export interface TrafficEvent {
  kind: 'manifest' | 'blob';
  /** `upstream/repository` */
  repository: string;
  /** Set for manifest requests by tag: a pull starts with one. */
  tag?: string | undefined;
  outcome: CacheOutcome | undefined;
  /** Body bytes of a complete answer (0 for HEAD and cut answers). */
  bytes: number;
}

export interface MinuteBucket {
  /** Start of the minute, ms since epoch. */
  at: number;
  bytesFromCache: number;
  bytesFromUpstream: number;
  hits: number;
  misses: number;
}

export interface RepositoryTraffic {
  repository: string;
  pulls: number;
  bytesServed: number;
}

const MINUTES = 60;
/** Outcomes that needed no new upstream fetch. */
const SERVED_FROM_CACHE: ReadonlySet<CacheOutcome> = new Set(['hit', 'revalidated', 'stale']);

/**
 * What the status page and `GET /_archway/cache` show of the traffic: totals
 * since start, a per-minute series for the last hour, and the most pulled
 * repositories and tags (bounded: the least recently seen are forgotten).
 */
export class TrafficStats {
  readonly since = Date.now();
  private hits = 0;
  private misses = 0;
  private bytesFromCache = 0;
  private bytesFromUpstream = 0;
  private readonly minutes: MinuteBucket[] = [];
  private readonly repositories = new LRUCache<string, RepositoryTraffic>({ max: 10_000 });
  private readonly tags = new LRUCache<string, { repository: string; tag: string; pulls: number }>({ max: 10_000 });

  constructor(private readonly now: () => number = Date.now) {}

  record(event: TrafficEvent): void {
    if (event.outcome === undefined || event.outcome === 'pass') return;
    const fromCache = SERVED_FROM_CACHE.has(event.outcome);
    const bucket = this.bucket();
    if (fromCache) {
      this.hits++;
      bucket.hits++;
      this.bytesFromCache += event.bytes;
      bucket.bytesFromCache += event.bytes;
    } else {
      this.misses++;
      bucket.misses++;
      this.bytesFromUpstream += event.bytes;
      bucket.bytesFromUpstream += event.bytes;
    }
    const repo = this.repositories.get(event.repository) ?? { repository: event.repository, pulls: 0, bytesServed: 0 };
    repo.bytesServed += event.bytes;
    if (event.kind === 'manifest' && event.tag !== undefined) {
      repo.pulls++;
      const key = `${event.repository}:${event.tag}`;
      const tag = this.tags.get(key) ?? { repository: event.repository, tag: event.tag, pulls: 0 };
      tag.pulls++;
      this.tags.set(key, tag);
    }
    this.repositories.set(event.repository, repo);
  }

  totals(): { hits: number; misses: number; hitRatio: number | null; bytesFromCache: number; bytesFromUpstream: number; since: number } {
    const lookups = this.hits + this.misses;
    return {
      hits: this.hits,
      misses: this.misses,
      hitRatio: lookups === 0 ? null : this.hits / lookups,
      bytesFromCache: this.bytesFromCache,
      bytesFromUpstream: this.bytesFromUpstream,
      since: this.since,
    };
  }

  /** The last hour, one bucket per minute, oldest first, minutes without traffic included. */
  lastHour(): MinuteBucket[] {
    const current = this.minuteOf(this.now());
    const byMinute = new Map(this.minutes.map((b) => [b.at, b]));
    const out: MinuteBucket[] = [];
    for (let i = MINUTES - 1; i >= 0; i--) {
      const at = current - i * 60_000;
      out.push(byMinute.get(at) ?? { at, bytesFromCache: 0, bytesFromUpstream: 0, hits: 0, misses: 0 });
    }
    return out;
  }

  mostPulledRepositories(n: number): RepositoryTraffic[] {
    return [...this.repositories.values()].sort((a, b) => b.pulls - a.pulls || b.bytesServed - a.bytesServed).slice(0, n);
  }

  mostPulledTags(n: number): Array<{ repository: string; tag: string; pulls: number }> {
    return [...this.tags.values()].sort((a, b) => b.pulls - a.pulls).slice(0, n);
  }

  private bucket(): MinuteBucket {
    const at = this.minuteOf(this.now());
    let last = this.minutes.at(-1);
    if (last?.at !== at) {
      last = { at, bytesFromCache: 0, bytesFromUpstream: 0, hits: 0, misses: 0 };
      this.minutes.push(last);
      while (this.minutes.length > MINUTES) this.minutes.shift();
    }
    return last;
  }

  private minuteOf(t: number): number {
    return t - (t % 60_000);
  }
}
