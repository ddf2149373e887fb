import { isTag } from './reference.ts';

/**
 * Tag lists as the distribution spec pages them: `tags/list?n=<n>&last=<tag>`
 * answers up to n tags lexically after `last`, and while more remain a
 * `Link: <…/tags/list?n=<n>&last=<its last tag>>; rel="next"`.
 */
export interface TagPageRequest {
  n?: number;
  last?: string;
}

/** What a client asked for: an `n` that is no non-negative integer is ignored (the whole list), as archway always did. */
export function tagPageRequest(query: URLSearchParams): TagPageRequest {
  const request: TagPageRequest = {};
  const n = query.get('n');
  if (n !== null && /^\d{1,9}$/.test(n)) request.n = Number(n);
  const last = query.get('last');
  if (last !== null) request.last = last;
  return request;
}

export interface TagPage {
  tags: string[];
  /** The request for the page after this one, when tags remain after it. */
  next?: { n: number; last: string };
}

/**
 * The page of `sorted` (lexically sorted, without duplicates) that `request`
 * names. No next page for n=0: its link would name the same page again, and a
 * client following links would never stop.
 */
export function tagPage(sorted: readonly string[], request: TagPageRequest): TagPage {
  const { n, last } = request;
  const start = last === undefined ? 0 : firstAfter(sorted, last);
  const end = n === undefined ? sorted.length : Math.min(sorted.length, start + n);
  const tags = sorted.slice(start, end);
  const lastTag = tags.at(-1);
  return n !== undefined && end < sorted.length && lastTag !== undefined ? { tags, next: { n, last: lastTag } } : { tags };
}

/** Index of the first element of `sorted` greater than `last`. */
function firstAfter(sorted: readonly string[], last: string): number {
  let lo = 0;
  let hi = sorted.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((sorted[mid] as string) <= last) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/**
 * The query (`?n=…&last=…`, or '' when the target has none) of the
 * `rel="next"` target in a tags/list answer's Link header (RFC 8288), or
 * undefined on the last page. Only the query is taken: the next page is asked
 * of the same upstream and repository, wherever the link points (an absolute
 * link to another host is no reason to go there). Re-encoded, so whatever the
 * header held is a well-formed query.
 */
export function nextPageQuery(link: string | string[] | undefined): string | undefined {
  const values = link === undefined ? [] : Array.isArray(link) ? link : [link];
  for (const value of values) {
    for (const [, target = '', params = ''] of value.matchAll(/<([^>]*)>((?:\s*;\s*[^;,]*)*)/g)) {
      const rel = /(?:^|;)\s*rel\s*=\s*(?:"([^"]*)"|([^\s;,"]+))/i.exec(params);
      const relations = (rel?.[1] ?? rel?.[2] ?? '').toLowerCase().split(/\s+/);
      if (!relations.includes('next')) continue;
      let search: URLSearchParams;
      try {
        search = new URL(target, 'http://upstream.invalid/').searchParams;
      } catch {
        return undefined;
      }
      return search.size > 0 ? `?${search.toString()}` : '';
    }
  }
  return undefined;
}

/** The tags of a tags/list body: the valid tags in its `tags`; anything else (or an unreadable body) contributes nothing. */
export function tagsOf(body: Buffer): string[] {
  try {
    const tags = (JSON.parse(body.toString('utf8')) as { tags?: unknown }).tags;
    return Array.isArray(tags) ? tags.filter((t): t is string => typeof t === 'string' && isTag(t)) : [];
  } catch {
    return [];
  }
}
