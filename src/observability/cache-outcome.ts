/**
 * How a request was answered, for the request log line and metrics:
 * hit (from cache), miss (fetched now), coalesced (joined a fetch under way),
 * revalidated (tag past its TTL, upstream confirmed it), stale (tag past its
 * TTL, upstream failing, served from cache), pass (not cached by design).
 */
export type CacheOutcome = 'hit' | 'miss' | 'coalesced' | 'revalidated' | 'stale' | 'pass';
