/**
 * Sizes of cached entries in least-recently-used order, with pins: an entry
 * being read or written is pinned and never chosen for eviction.
 *
 * lru-cache evicts by itself on insertion and cannot skip an entry that is in
 * use, so the order is kept here in a Map (insertion order; a touch re-inserts).
 */
export class LruIndex<K> {
  private readonly sizes = new Map<K, number>();
  private readonly pins = new Map<K, number>();
  private total = 0;

  get bytes(): number {
    return this.total;
  }

  get count(): number {
    return this.sizes.size;
  }

  has(key: K): boolean {
    return this.sizes.has(key);
  }

  size(key: K): number | undefined {
    return this.sizes.get(key);
  }

  /** Add or replace an entry, as the most recently used. */
  set(key: K, size: number): void {
    this.delete(key);
    this.sizes.set(key, size);
    this.total += size;
  }

  /** Mark as most recently used. */
  touch(key: K): void {
    const size = this.sizes.get(key);
    if (size === undefined) return;
    this.sizes.delete(key);
    this.sizes.set(key, size);
  }

  delete(key: K): boolean {
    const size = this.sizes.get(key);
    if (size === undefined) return false;
    this.sizes.delete(key);
    this.total -= size;
    return true;
  }

  /**
   * Put the entries in order of `rank` (lowest first: least recently used),
   * keeping the present order among equal ranks. For merging start-up scans.
   */
  reorder(rank: (key: K) => number): void {
    const ranked = [...this.sizes].map((entry, i) => ({ entry, rank: rank(entry[0]), i }));
    ranked.sort((a, b) => (a.rank === b.rank ? a.i - b.i : a.rank < b.rank ? -1 : 1));
    this.sizes.clear();
    for (const { entry } of ranked) this.sizes.set(entry[0], entry[1]);
  }

  /** A snapshot, least recently used first. */
  entries(): Array<[K, number]> {
    return [...this.sizes];
  }

  pin(key: K): void {
    this.pins.set(key, (this.pins.get(key) ?? 0) + 1);
  }

  unpin(key: K): void {
    const n = (this.pins.get(key) ?? 0) - 1;
    if (n > 0) this.pins.set(key, n);
    else this.pins.delete(key);
  }

  /** Bytes of the pinned entries (a few: those being read or written). */
  pinnedBytes(): number {
    let bytes = 0;
    for (const key of this.pins.keys()) bytes += this.sizes.get(key) ?? 0;
    return bytes;
  }

  isPinned(key: K): boolean {
    return this.pins.has(key);
  }

  /**
   * Remove least-recently-used unpinned entries until the total is at most
   * `limit`, and return them. Pinned entries stay even if that keeps the
   * total above the limit; the next call retries once they are released.
   */
  evict(limit: number): Array<{ key: K; size: number }> {
    const evicted: Array<{ key: K; size: number }> = [];
    if (this.total <= limit) return evicted;
    for (const [key, size] of this.sizes) {
      if (this.total <= limit) break;
      if (this.pins.has(key)) continue;
      this.sizes.delete(key);
      this.total -= size;
      evicted.push({ key, size });
    }
    return evicted;
  }
}
