import type { Logger } from 'pino';
import type { Digest } from '../oci/digest.ts';
import type { Metrics } from '../observability/metrics.ts';
import { BlobFill, type FetchBlob } from './blob-fill.ts';
import type { BlobStore } from '../store/blob-store.ts';
import type { FillLimits } from './fill-limits.ts';
import type { StorageHealth } from '../store/storage-health.ts';
import { LocalFillCoordinator, type FillCoordinator, type FillLease, type WaitOutcome } from './fill-coordinator.ts';

/**
 * What `acquire` found: a fill (`joined` when it was started for another
 * request, whose repository is not necessarily this one's), `elsewhere` when
 * another replica is filling the blob, `stored` when another replica has just
 * stored it.
 */
export type Acquired = { fill: BlobFill; joined: boolean } | 'elsewhere' | 'stored';

/**
 * The fills under way in this process, one per upstream and digest: the
 * coalescing point. Per upstream, because a fill that fails at one registry
 * (404, refused credentials) must not fail clients of another that has the
 * blob; the committed blob is shared by all. A fill that lost its disk and
 * relays from memory cannot serve a newcomer from the first byte, so it
 * leaves the table (but not `running`) at that moment.
 */
export class FillTable {
  private readonly joinable = new Map<string, BlobFill>();
  /** Every fill running here (joinable or not), with its key and its end. */
  private readonly running = new Map<BlobFill, { key: string; done: Promise<void> }>();
  /** Claims under way across replicas: requests of this process arriving meanwhile share them. */
  private readonly claims = new Map<string, Promise<Acquired>>();
  /** Fills of this process that relay without caching: still running, no longer joinable. */
  private readonly relaying = new Set<string>();
  /** Waits for another replica's fill: one per blob in this process, however many requests wait. */
  private readonly waits = new Map<string, Promise<WaitOutcome>>();
  /** Fills going on with no reader (limits.backgroundFills at most). */
  private readonly background = new Set<BlobFill>();

  constructor(
    private readonly store: BlobStore,
    private readonly metrics: Metrics,
    private readonly logger: Logger,
    private readonly storage: StorageHealth,
    private limits: FillLimits,
    private readonly coordinator: FillCoordinator = new LocalFillCoordinator(),
  ) {}

  /** A reloaded configuration's bounds: fills started from now on run within them, running ones keep theirs. */
  setLimits(limits: FillLimits): void {
    this.limits = limits;
  }

  get(upstream: string, digest: Digest): BlobFill | undefined {
    return this.joinable.get(key(upstream, digest));
  }

  /**
   * The fill of this blob: the one running here, or a new one once this
   * replica holds the lease for it; `elsewhere` when another replica is
   * filling it (wait with `waitElsewhere`, then look in the store); `stored`
   * when another replica finished it just before this one took the lease.
   */
  async acquire(upstream: string, digest: Digest, fetch: FetchBlob, descriptorSize?: number): Promise<Acquired> {
    const k = key(upstream, digest);
    const running = this.joinable.get(k);
    if (running) return { fill: running, joined: true };
    // This replica's own fill of it is relaying (its disk failed) and holds the lease: waiting for
    // that lease would only mean waiting for our own relay to end. Fetch beside it.
    if (this.relaying.has(k)) return { fill: this.start(upstream, digest, fetch, descriptorSize), joined: false };
    const pending = this.claims.get(k);
    // Another request's claim: whatever fill it yields was started for that request (and its repository).
    if (pending) {
      const other = await pending;
      return typeof other === 'string' ? other : { fill: other.fill, joined: true };
    }
    const claim = (async (): Promise<Acquired> => {
      const lease = await this.coordinator.claim(upstream, digest);
      if (!lease) return 'elsewhere';
      // The lease may be free because another replica just stored the blob.
      const stored = this.coordinator.shared && (await this.store.stat(digest)) !== undefined;
      const fill = this.joinable.get(k);
      if (fill || stored) {
        lease.release();
        return fill ? { fill, joined: true } : 'stored';
      }
      return { fill: this.start(upstream, digest, fetch, descriptorSize, lease), joined: false };
    })().finally(() => this.claims.delete(k));
    this.claims.set(k, claim);
    return claim;
  }

  /** Resolves when this process's fill of the blob (if any) is over, committed or not. */
  async settled(upstream: string, digest: Digest): Promise<void> {
    const k = key(upstream, digest);
    // Joinable or not (relaying, stopped): every download of it here, cleanup included.
    await Promise.all([...this.running.values()].filter((r) => r.key === k).map((r) => r.done));
  }

  waitElsewhere(upstream: string, digest: Digest): Promise<WaitOutcome> {
    const k = key(upstream, digest);
    let wait = this.waits.get(k);
    if (!wait) {
      wait = this.coordinator.waitForRelease(upstream, digest).finally(() => this.waits.delete(k));
      this.waits.set(k, wait);
    }
    return wait;
  }

  /**
   * Start a fill (there must be none joinable for this upstream and digest).
   * `descriptorSize`: the size a manifest archway served gives the blob.
   */
  start(upstream: string, digest: Digest, fetch: FetchBlob, descriptorSize?: number, lease?: FillLease): BlobFill {
    const k = key(upstream, digest);
    const forget = () => {
      if (this.joinable.get(k) === fill) this.joinable.delete(k);
    };
    let relayed = false;
    const unjoinable = () => {
      forget();
      relayed = true;
      this.relaying.add(k);
      // Other replicas cannot share a fill that will not be stored: they need not wait for it.
      lease?.release();
    };
    const fill: BlobFill = new BlobFill({
      digest,
      upstream,
      store: this.store,
      metrics: this.metrics,
      logger: this.logger,
      storage: this.storage,
      limits: this.limits,
      descriptorSize,
      onUnjoinable: unjoinable,
      onReaderless: (f) => this.readerless(f),
      onReadersBack: (f) => this.setBackground(f, false),
    });
    this.joinable.set(k, fill);
    const done = fill.run(fetch).finally(() => {
      forget();
      this.setBackground(fill, false);
      if (relayed) this.relaying.delete(k);
      this.running.delete(fill);
      // After the commit (an upload, for an object store): other replicas now find the blob stored.
      lease?.release();
    });
    this.running.set(fill, { key: k, done });
    return fill;
  }

  get size(): number {
    return this.running.size;
  }

  /**
   * The last reader of a fill left. It may go on alone (so the next client
   * finds the blob cached) only if it can be cached, and only while fewer than
   * limits.backgroundFills do so: otherwise it stops now, and the upstream
   * connection with it.
   */
  private readerless(fill: BlobFill): void {
    if (fill.relaying) return fill.abandon('it cannot be cached and its last client left');
    if (this.background.size >= this.limits.backgroundFills) {
      return fill.abandon(`its last client left and ${this.background.size} fills already run without clients (limits.backgroundFills)`);
    }
    this.setBackground(fill, true);
  }

  private setBackground(fill: BlobFill, on: boolean): void {
    if (on) this.background.add(fill);
    else this.background.delete(fill);
    this.metrics.backgroundFills.set(this.background.size);
  }

  /** Shutdown: stop every download and wait until each has cleaned up. */
  async cancelAll(): Promise<void> {
    for (const fill of this.running.keys()) fill.cancel();
    await Promise.all([...this.running.values()].map((r) => r.done));
  }
}

function key(upstream: string, digest: Digest): string {
  return `${upstream}\n${digest}`;
}

