/**
 * A store's start-up scan of what it holds, run in the background so serving
 * starts at once. Lookups go on meanwhile and ask the storage directly; what
 * they decide (a blob found, committed, deleted) is newer than what the scan
 * saw, and the scan must not override it when it merges its findings.
 */
export class BackgroundIndexing<K> {
  private decided: Set<K> | undefined;
  private done: Promise<void> = Promise.resolve();

  start(scan: () => Promise<void>, onError: (err: unknown) => void): void {
    this.decided = new Set();
    this.done = scan().then(
      () => {
        this.decided = undefined;
      },
      (err: unknown) => {
        // The index is incomplete for good: lookups keep asking the storage itself.
        onError(err);
      },
    );
  }

  /** While true, the index may be incomplete: lookups ask the storage, eviction waits. */
  get running(): boolean {
    return this.decided !== undefined;
  }

  /** The key's state is now known better than the scan can know it. */
  decide(key: K): void {
    this.decided?.add(key);
  }

  isDecided(key: K): boolean {
    return this.decided?.has(key) ?? false;
  }

  /** What was decided during the scan, for its merge. */
  decidedKeys(): ReadonlySet<K> {
    return this.decided ?? new Set();
  }

  whenDone(): Promise<void> {
    return this.done;
  }
}
