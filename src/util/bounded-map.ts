/**
 * Upstream requests one client request may have in flight at once, however
 * large the index, member list or layer list it walks: a 40-entry index is
 * 40 manifest fetches, and unbounded they would hit the upstream (and its
 * rate limit) all at once for a single client. 8 keeps a typical
 * multi-platform index (2–12 entries) about as fast as unbounded.
 */
export const FAN_OUT = 8;

/**
 * `fn` over `items` with at most `limit` calls running at once; the results
 * in the items' order, each settled as Promise.allSettled reports them.
 */
export async function mapLimitSettled<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<Array<PromiseSettledResult<R>>> {
  const results = new Array<PromiseSettledResult<R>>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      try {
        results[i] = { status: 'fulfilled', value: await fn(items[i] as T, i) };
      } catch (reason) {
        results[i] = { status: 'rejected', reason };
      }
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
  return results;
}

/**
 * Like Promise.all over `items.map(fn)`, with at most `limit` calls at once.
 * After a failure nothing new starts; it rejects with the first failure once
 * the calls already running have ended (no work is left running unseen).
 */
export async function mapLimit<T, R>(items: readonly T[], limit: number, fn: (item: T, index: number) => Promise<R>): Promise<R[]> {
  let failed = false;
  const skipped = Symbol('skipped');
  const settled = await mapLimitSettled(items, limit, async (item, i) => {
    if (failed) throw skipped;
    try {
      return await fn(item, i);
    } catch (err) {
      failed = true;
      throw err;
    }
  });
  const failure = settled.find((r): r is PromiseRejectedResult => r.status === 'rejected' && r.reason !== skipped);
  if (failure) throw failure.reason;
  return settled.map((r) => (r as PromiseFulfilledResult<R>).value);
}
