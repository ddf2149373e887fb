import { randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Digest } from '../oci/digest.ts';
import { parseImageManifest, parseIndex } from '../oci/manifest.ts';
import { isIndexMediaType } from '../oci/media-types.ts';
import type { Reference } from '../oci/reference.ts';
import { isAttestationEntry } from '../platform/match.ts';
import { formatPlatform, parsePlatform, samePlatform, type Platform } from '../platform/platform.ts';
import type { BlobService } from '../registry/blob-service.ts';
import { ACCEPT_ALL_MANIFESTS, AS_PUBLISHED, type ManifestService, type ManifestSource } from '../registry/manifest-service.ts';
import type { Route } from '../routing/router.ts';
import { growingLru } from '../util/growing-lru.ts';

export interface PrefetchRequest {
  /** As given, for the job's report. */
  image: string;
  reference: Reference;
  route: Route;
  /** The manifests of the name (a repository or a virtual image). */
  source: ManifestSource;
  /** Where a blob under this name comes from (a virtual image's member, else the route). */
  blobRoute: (digest: Digest) => Promise<Route>;
  /** Normalised os/arch[/variant] strings, or every platform the index offers. */
  platforms: readonly string[] | 'all';
  /** Told when the job is over, done or failed (it releases the configuration generation the job runs under). */
  onSettled?: () => void;
}

export interface PrefetchJob {
  id: string;
  image: string;
  platforms: readonly string[] | 'all';
  state: 'running' | 'done' | 'failed';
  /** The platforms found and being fetched. */
  fetched: string[];
  blobs: { done: number; total: number };
  bytes: { done: number; total: number };
  /** 0–100, by bytes. */
  percent: number;
  error?: string;
  startedAt: string;
  finishedAt?: string;
}

/** Blob downloads of one job at a time: enough to fill a link, few enough to leave room for pulls. */
const PARALLEL_BLOBS = 4;

/**
 * Background prefetches (POST /_archway/prefetch): the tag's index, the
 * chosen platforms' manifests and all their blobs, fetched through the same
 * services as pulls, so they are cached, verified and coalesced with pulls
 * running meanwhile. A request equal to a running job returns that job.
 */
export class PrefetchJobs {
  private readonly jobs = growingLru<string, PrefetchJob>(1000);
  private readonly running = new Map<string, PrefetchJob>();
  private stopped = false;

  constructor(
    private readonly manifests: ManifestService,
    private readonly blobs: BlobService,
    private readonly logger: Logger,
  ) {}

  start(request: PrefetchRequest): PrefetchJob {
    const key = `${request.route.upstream.name}/${request.route.repository}\n${JSON.stringify(request.reference)}\n${JSON.stringify(request.platforms)}`;
    const existing = this.running.get(key);
    if (existing) {
      // The running job holds its own generation; this request's is not needed.
      request.onSettled?.();
      return existing;
    }
    const job: PrefetchJob = {
      id: randomUUID(),
      image: request.image,
      platforms: request.platforms,
      state: 'running',
      fetched: [],
      blobs: { done: 0, total: 0 },
      bytes: { done: 0, total: 0 },
      percent: 0,
      startedAt: new Date().toISOString(),
    };
    this.jobs.set(job.id, job);
    this.running.set(key, job);
    this.run(job, request)
      .then(
        () => {
          job.state = 'done';
          job.percent = 100;
        },
        (err: unknown) => {
          job.state = 'failed';
          job.error = err instanceof Error ? err.message : String(err);
          this.logger.warn({ job: job.id, image: job.image, err: job.error }, 'prefetch failed');
        },
      )
      .finally(() => {
        job.finishedAt = new Date().toISOString();
        this.running.delete(key);
        request.onSettled?.();
      });
    return job;
  }

  /** Shutdown: running jobs take no further blob and end failed. */
  stop(): void {
    this.stopped = true;
  }

  get(id: string): PrefetchJob | undefined {
    return this.jobs.get(id);
  }

  private async run(job: PrefetchJob, request: PrefetchRequest): Promise<void> {
    const { source } = request;
    const top = (await this.manifests.get(source, request.reference, ACCEPT_ALL_MANIFESTS, AS_PUBLISHED)).manifest;
    const images: Array<{ platform: string; digest: Digest }> = [];
    const missing: string[] = [];
    if (isIndexMediaType(top.mediaType)) {
      const entries = parseIndex(top.bytes, top.mediaType).manifests.filter((e) => e.platform && !isAttestationEntry(e));
      const wanted = request.platforms === 'all' ? entries.map((e) => e.platform as Platform) : request.platforms.map(parsePlatform);
      for (const platform of wanted) {
        const entry = entries.find((e) => samePlatform(e.platform as Platform, platform));
        if (entry) images.push({ platform: formatPlatform(platform), digest: entry.digest });
        else missing.push(formatPlatform(platform));
      }
    } else {
      images.push({ platform: 'single', digest: top.digest });
    }
    job.fetched = images.map((i) => i.platform);

    const blobs = new Map<Digest, number>();
    for (const image of images) {
      const manifest = (await source.digest(image.digest)).manifest;
      const parts = parseImageManifest(manifest.bytes);
      for (const b of [...(parts.config ? [parts.config] : []), ...parts.layers]) blobs.set(b.digest, b.size);
    }
    job.blobs.total = blobs.size;
    job.bytes.total = [...blobs.values()].reduce((a, b) => a + b, 0);

    const queue = [...blobs.keys()];
    const worker = async () => {
      try {
        for (let digest = queue.shift(); digest && !this.stopped; digest = queue.shift()) {
          await this.fetchBlob(job, request, digest);
          job.blobs.done++;
        }
      } catch (err) {
        queue.length = 0; // the job has failed: the other workers take nothing more
        throw err;
      }
    };
    const results = await Promise.allSettled(Array.from({ length: PARALLEL_BLOBS }, worker));
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
    if (this.stopped) throw new Error('archway is shutting down');
    if (missing.length) throw new Error(`${request.image} has no image for ${missing.join(', ')} (fetched: ${job.fetched.join(', ') || 'nothing'})`);
  }

  /** Into the cache like a pull: a hit is counted without reading it; a miss is read to the end as the fill runs. */
  private async fetchBlob(job: PrefetchJob, request: PrefetchRequest, digest: Digest): Promise<void> {
    const route = await request.blobRoute(digest);
    const cached = await this.blobs.cachedSize(route, digest);
    if (cached !== undefined) return this.progress(job, cached);
    const answer = await this.blobs.get(route, digest, () => undefined);
    if (answer.kind !== 'body') return;
    await drain(answer.stream, (n) => this.progress(job, n));
    // Read to the end is not cached: the disk may have refused it (then it was only relayed), or the
    // commit (an upload, for an object store) may still be running.
    await this.blobs.settled(route, digest);
    if ((await this.blobs.cachedSize(route, digest)) === undefined) throw new Error(`blob ${digest} was downloaded but could not be cached`);
  }

  private progress(job: PrefetchJob, bytes: number): void {
    job.bytes.done += bytes;
    job.percent = job.bytes.total === 0 ? 0 : Math.min(99, Math.floor((job.bytes.done / job.bytes.total) * 100));
  }
}

async function drain(stream: Readable, onBytes: (n: number) => void): Promise<void> {
  try {
    for await (const chunk of stream) onBytes((chunk as Buffer).length);
  } finally {
    stream.destroy();
  }
}
