/**
 * Concurrent calls with the same key share one execution: the first starts
 * it, the others join and get its result (or its error).
 */
export class SingleFlight<T> {
  private readonly running = new Map<string, Promise<T>>();

  async run(key: string, fn: () => Promise<T>): Promise<{ value: T; joined: boolean }> {
    const existing = this.running.get(key);
    if (existing) return { value: await existing, joined: true };
    const p = fn().finally(() => this.running.delete(key));
    this.running.set(key, p);
    return { value: await p, joined: false };
  }
}
