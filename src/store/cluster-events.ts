import type { Digest } from '../oci/digest.ts';

/**
 * Every kind of event replicas tell each other, by name, with what it
 * carries. Adding a kind is a line here and its wire schema beside the Redis
 * bus (src/coordination/cluster-event-schemas.ts; the compiler asks for it).
 */
export interface ClusterEventMap {
  /**
   * Content was purged through the admin API of one replica (the shared
   * stores are already cleaned): the others drop what they hold in memory of
   * these manifests, so nobody serves them from a copy after the purge.
   */
  purge: { upstream: string; repository: string; tags: string[]; manifests: Digest[] };
  /**
   * `POST /_archway/reload` on one replica put its file in use: every other
   * replica reloads its own configuration file (`by` names the one asked, for
   * their log lines). A SIGHUP stays with the process it was sent to.
   */
  reload: { by: string };
  /**
   * A local repository changed through one replica (config `local`): a tag
   * pushed or deleted, manifests deleted. Tags are read from the shared store
   * on every request; the others drop their in-memory copies of the deleted
   * manifests, so none is served after its delete.
   */
  'local-changed': { repository: string; tag?: string; deletedManifests: Digest[] };
}

export type ClusterEventKind = keyof ClusterEventMap;

/** `self`: published by this replica (its handler may already have done the work where it happened). */
export type ClusterEventHandler<K extends ClusterEventKind> = (event: ClusterEventMap[K], origin: { self: boolean }) => void;

/**
 * Events that reach every replica at once, this one included: Redis pub/sub
 * across replicas (src/coordination/redis-events.ts), or in this process only
 * when there is no Redis. Delivery is at most once: a replica that was cut
 * off may have missed some, and is told so (`onGap`) when it is back, so it
 * can drop what the missed events would have invalidated.
 */
export interface ClusterEvents {
  /** Whether other replicas hear these events (false: this process only). */
  readonly shared: boolean;
  /** Deliver to every replica; handlers here run before it resolves. Never throws: an undelivered event is logged. */
  publish<K extends ClusterEventKind>(kind: K, event: ClusterEventMap[K]): Promise<void>;
  /** Returns the unsubscribe function. A handler that throws is logged and does not stop the others. */
  subscribe<K extends ClusterEventKind>(kind: K, handler: ClusterEventHandler<K>): () => void;
  /** Called after the bus was away and is back: events may have been missed meanwhile. */
  onGap(handler: () => void): () => void;
  close(): Promise<void>;
}

/** The handlers of one process, by kind: what both implementations deliver to. */
export class ClusterEventHandlers {
  private readonly handlers = new Map<ClusterEventKind, Set<ClusterEventHandler<ClusterEventKind>>>();
  private readonly gapHandlers = new Set<() => void>();

  constructor(private readonly onHandlerError: (err: unknown, kind: string) => void) {}

  add<K extends ClusterEventKind>(kind: K, handler: ClusterEventHandler<K>): () => void {
    let set = this.handlers.get(kind);
    if (!set) this.handlers.set(kind, (set = new Set()));
    const h = handler as ClusterEventHandler<ClusterEventKind>;
    set.add(h);
    return () => set.delete(h);
  }

  addGap(handler: () => void): () => void {
    this.gapHandlers.add(handler);
    return () => this.gapHandlers.delete(handler);
  }

  deliver<K extends ClusterEventKind>(kind: K, event: ClusterEventMap[K], origin: { self: boolean }): void {
    for (const h of this.handlers.get(kind) ?? []) this.guarded(kind, () => h(event, origin));
  }

  gap(): void {
    for (const h of this.gapHandlers) this.guarded('gap', h);
  }

  private guarded(kind: string, run: () => void): void {
    try {
      run();
    } catch (err) {
      this.onHandlerError(err, kind);
    }
  }
}

/** One archway on its own: events reach this process's handlers, synchronously. */
export class LocalClusterEvents implements ClusterEvents {
  readonly shared = false;
  private readonly handlers: ClusterEventHandlers;

  constructor(onHandlerError: (err: unknown, kind: string) => void = () => {}) {
    this.handlers = new ClusterEventHandlers(onHandlerError);
  }

  async publish<K extends ClusterEventKind>(kind: K, event: ClusterEventMap[K]): Promise<void> {
    this.handlers.deliver(kind, event, { self: true });
  }

  subscribe<K extends ClusterEventKind>(kind: K, handler: ClusterEventHandler<K>): () => void {
    return this.handlers.add(kind, handler);
  }

  onGap(handler: () => void): () => void {
    return this.handlers.addGap(handler);
  }

  async close(): Promise<void> {}
}
