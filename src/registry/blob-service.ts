import type { Readable } from 'node:stream';
import type { Digest } from '../oci/digest.ts';
import type { Metrics } from '../observability/metrics.ts';
import type { Route } from '../routing/router.ts';
import type { BlobFill } from '../fill/blob-fill.ts';
import type { FillTable } from '../fill/fill-table.ts';
import type { BlobStore, ByteRange } from '../store/blob-store.ts';
import type { CacheOutcome } from '../observability/cache-outcome.ts';
import type { DescriptorSizes } from './descriptor-sizes.ts';
import type { RepositoryAccess } from './repository-access.ts';

/** How to cut the answer once the blob's size is known. */
export type RangeChooser = (size: number) => ByteRange | 'unsatisfiable' | undefined;

export type BlobAnswer =
  | {
      kind: 'body';
      size: number | undefined;
      range: ByteRange | undefined;
      stream: Readable;
      outcome: CacheOutcome;
      /** Relayed from the upstream without being cached, and why (too large for the cache, no room). */
      uncached?: string | undefined;
    }
  | { kind: 'unsatisfiable'; size: number; outcome: CacheOutcome }
  /** storage.s3.redirect: the client fetches the bytes from the object store itself. */
  | { kind: 'redirect'; url: string; outcome: CacheOutcome };

/**
 * Rounds of looking for a blob another replica is filling: after a released
 * lease (stored, failed, or a dead holder's expiry) this replica claims it
 * again; a wait that ran out (redis.fillWait) or lost Redis fetches here.
 */
const MAX_ROUNDS = 5;

/**
 * Serves blobs from the store, or from a fill that streams the upstream's
 * bytes into the store while clients read them. At most one fill per digest
 * runs at a time; later clients join it.
 */
export class BlobService {
  constructor(
    private readonly store: BlobStore,
    private readonly fills: FillTable,
    private readonly access: RepositoryAccess,
    private readonly metrics: Metrics,
    private readonly sizes: DescriptorSizes,
  ) {}

  /** HEAD: from the cache or a running fill; otherwise a HEAD upstream, never a download. */
  async head(route: Route, digest: Digest): Promise<{ size: number | undefined; outcome: CacheOutcome }> {
    const info = await this.store.stat(digest);
    if (info) {
      await this.access.ensure(route, digest, 'blob');
      return this.counted({ size: info.size, outcome: 'hit' });
    }
    const fill = this.fills.get(route.upstream.name, digest);
    if (fill?.size !== undefined) {
      await this.access.ensure(route, digest, 'blob');
      return this.counted({ size: fill.size, outcome: 'coalesced' });
    }
    const { size } = await route.upstream.headBlob(route.repository, digest);
    return this.counted({ size, outcome: 'pass' });
  }

  /** The size of a blob cached and visible to this repository, without reading it; undefined when it is not. */
  async cachedSize(route: Route, digest: Digest): Promise<number | undefined> {
    const info = await this.store.stat(digest);
    if (!info) return undefined;
    await this.access.ensure(route, digest, 'blob');
    return info.size;
  }

  /** Resolves once a download of this blob running here is over (its commit included). */
  settled(route: Route, digest: Digest): Promise<void> {
    return this.fills.settled(route.upstream.name, digest);
  }

  async get(route: Route, digest: Digest, chooseRange: RangeChooser): Promise<BlobAnswer> {
    let fetchHere = false;
    for (let round = 0; ; round++) {
      const hit = await this.fromStore(route, digest, chooseRange);
      if (hit) return hit;
      const fetch = async (signal: AbortSignal) => {
        const res = await route.upstream.getBlob(route.repository, digest, signal);
        await this.access.record(route, digest);
        return res;
      };
      const running = this.fills.get(route.upstream.name, digest);
      // The body may be no longer than the manifest that named the blob says.
      const descriptorSize = this.sizes.sizeOf(route.upstream.name, route.repository, digest);
      const acquired = running
        ? { fill: running, joined: true }
        : fetchHere || round >= MAX_ROUNDS
          ? { fill: this.fills.start(route.upstream.name, digest, fetch, descriptorSize), joined: false }
          : await this.fills.acquire(route.upstream.name, digest, fetch, descriptorSize);
      if (acquired === 'stored') continue;
      if (acquired === 'elsewhere') {
        // Another replica is filling it: wait for its lease to end, then it is in the shared store
        // (or, if that replica died or failed, the lease is free for the taking).
        fetchHere = (await this.fills.waitElsewhere(route.upstream.name, digest)) !== 'released';
        continue;
      }
      // Joining a download started for another request (maybe another repository) of an isolated
      // upstream needs the same confirmation as a hit. Fills are per upstream: on one whose content
      // all its repositories share, the fill itself is that upstream serving the blob.
      if (acquired.joined && route.upstream.isolated) await this.access.ensure(route, digest, 'blob');
      return this.follow(acquired.fill, acquired.joined ? 'coalesced' : 'miss', chooseRange);
    }
  }

  /**
   * A cached blob this process has verified, for the front proxy to send from its file
   * (server.accelRedirect), with the range it will send; undefined: answer as `get` does
   * (not stored here, not verified yet, an unsatisfiable range). The bytes counted as served
   * are those handed to the proxy.
   */
  async verifiedFile(route: Route, digest: Digest, chooseRange: RangeChooser): Promise<{ path: string; size: number; range: ByteRange | undefined } | undefined> {
    const file = await this.store.verifiedFile?.(digest);
    if (!file) return undefined;
    await this.access.ensure(route, digest, 'blob');
    const range = chooseRange(file.size);
    if (range === 'unsatisfiable') return undefined;
    this.metrics.servedBytes.inc({ source: 'cache' }, range ? range.end - range.start + 1 : file.size);
    this.metrics.accelRedirects.inc();
    this.metrics.cacheLookups.inc({ kind: 'blob', outcome: 'hit' });
    return { ...file, range };
  }

  /** A cached blob (or a redirect to it), or undefined on a miss. */
  private async fromStore(route: Route, digest: Digest, chooseRange: RangeChooser): Promise<BlobAnswer | undefined> {
    const info = await this.store.stat(digest);
    if (!info) return undefined;
    await this.access.ensure(route, digest, 'blob');
    const range = chooseRange(info.size);
    if (range === 'unsatisfiable') return this.counted({ kind: 'unsatisfiable' as const, size: info.size, outcome: 'hit' });
    if (this.store.redirectUrl && !range) {
      const url = await this.store.redirectUrl(digest);
      if (url) return this.counted({ kind: 'redirect' as const, url, outcome: 'hit' });
    }
    const read = await this.store.open(digest, range);
    // Evicted or removed between stat and open: fetch it like a miss.
    if (!read) return undefined;
    const stream = read.stream as Readable & { bytesRead?: number };
    // Counted when done: a 'data' listener here would start the stream before it is piped.
    stream.once('close', () => this.metrics.servedBytes.inc({ source: 'cache' }, stream.bytesRead ?? 0));
    return this.counted({ kind: 'body' as const, size: read.size, range, stream: read.stream, outcome: 'hit' });
  }

  /** Stream a fill's bytes as they arrive. */
  private async follow(fill: BlobFill, outcome: CacheOutcome, chooseRange: RangeChooser): Promise<BlobAnswer> {
    // Take the reader before waiting, so the fill keeps its file for us.
    const reader = fill.reader((n) => this.metrics.servedBytes.inc({ source: 'upstream' }, n));
    try {
      await fill.ready;
    } catch (err) {
      reader.destroy();
      throw err;
    }
    const size = fill.size;
    // A blob relayed uncached can be verified only whole, so a range of it could never be
    // answered as verified: the Range header is ignored (RFC 9110 allows it) and all of it is sent.
    const range = size === undefined || fill.uncached ? undefined : chooseRange(size);
    if (range === 'unsatisfiable') {
      reader.destroy();
      return this.counted({ kind: 'unsatisfiable' as const, size: size as number, outcome });
    }
    if (range) reader.setRange(range.start, range.end + 1);
    return this.counted({ kind: 'body' as const, size, range, stream: reader, outcome, uncached: fill.uncached });
  }

  private counted<T extends BlobAnswer | { size: number | undefined; outcome: CacheOutcome }>(answer: T): T {
    this.metrics.cacheLookups.inc({ kind: 'blob', outcome: answer.outcome });
    return answer;
  }
}
