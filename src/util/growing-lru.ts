import { LRUCache } from 'lru-cache';

/**
 * An LRUCache of at most `entries` entries whose memory grows with what it
 * holds. Given `max`, lru-cache allocates its arrays for `max` entries up
 * front (8 to 40 bytes an entry: `max: 100_000` is 2–4 MiB before the first
 * set); archway's caches are sized for a busy day, and allocated up front they
 * were about 21 MiB of an idle process. The same bound as a `maxSize` of
 * entries counted 1 each allocates nothing in advance. (Keys and values are
 * non-nullish, as lru-cache requires.)
 */
export function growingLru<K extends NonNullable<unknown>, V extends NonNullable<unknown>>(
  entries: number,
  options: Omit<LRUCache.OptionsBase<K, V, unknown>, 'max' | 'maxSize' | 'maxEntrySize' | 'sizeCalculation'> = {},
): LRUCache<K, V> {
  return new LRUCache<K, V>({ ...options, maxSize: entries, sizeCalculation: () => 1 });
}
