/** One use of a generation: a request, or work a request started that outlives it. */
export interface Hold<T> {
  readonly value: T;
  /** The use is over (idempotent). */
  release(): void;
  /** One more use of the same generation (a job the request starts), released on its own. */
  retain(): () => void;
}

interface Entry<T> {
  value: T;
  holds: number;
  /** Set once it is no longer current: resolves when it has been retired. */
  retired?: Promise<void>;
  retire?: () => void;
}

/**
 * The value new work starts under (the configuration generation), and the
 * older ones still in use. Every use holds the generation it started with;
 * a replaced generation is retired (its resources closed) when its last
 * hold is released, or after `graceMs` whatever still holds it, so a stuck
 * request cannot keep old connections open for ever.
 */
export class Generations<T> {
  private entry: Entry<T>;
  private readonly retiring = new Set<Entry<T>>();
  private closed = false;

  constructor(
    first: T,
    private readonly onRetire: (old: T) => Promise<void>,
    private readonly graceMs: () => number,
  ) {
    this.entry = { value: first, holds: 0 };
  }

  get current(): T {
    return this.entry.value;
  }

  /** Generations replaced but not yet retired (holds still running). */
  get draining(): number {
    return this.retiring.size;
  }

  hold(): Hold<T> {
    return this.holdOn(this.entry);
  }

  /**
   * Put `next` in use for new holds; the one it replaces retires once its
   * holds are released (or after the grace period). Resolves when it has.
   */
  swap(next: T): Promise<void> {
    if (this.closed) throw new Error('generations are closed');
    const old = this.entry;
    this.entry = { value: next, holds: 0 };
    return this.startRetiring(old);
  }

  /** Shutdown: the current generation retires too, once drained (bounded like the others). */
  async close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      void this.startRetiring(this.entry);
    }
    await Promise.all([...this.retiring].map((e) => e.retired));
  }

  private holdOn(entry: Entry<T>): Hold<T> {
    entry.holds++;
    let released = false;
    return {
      value: entry.value,
      release: () => {
        if (released) return;
        released = true;
        entry.holds--;
        if (entry.holds === 0) entry.retire?.();
      },
      retain: () => this.holdOn(entry).release,
    };
  }

  private startRetiring(entry: Entry<T>): Promise<void> {
    if (entry.retired) return entry.retired;
    this.retiring.add(entry);
    entry.retired = new Promise<void>((resolve) => {
      // Held still: retired when the last hold goes, or at the end of the grace period whatever holds it.
      const timer = entry.holds === 0 ? undefined : setTimeout(() => entry.retire?.(), this.graceMs());
      entry.retire = () => {
        entry.retire = undefined;
        clearTimeout(timer);
        // onRetire reports its own failures: retiring is over either way.
        this.onRetire(entry.value)
          .catch(() => {})
          .finally(() => {
            this.retiring.delete(entry);
            resolve();
          });
      };
      if (entry.holds === 0) entry.retire();
    });
    return entry.retired;
  }
}
