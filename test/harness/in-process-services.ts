// The registry services as the composition root wires them (src/app.ts,
// src/stores.ts), on a temp-dir filesystem store and with no HTTP: the fill,
// blob and manifest logic driven directly, in milliseconds, like
// distribution's proxy tests on its in-memory driver. Upstreams are whatever
// the test passes as a Route's upstream (a ScriptedUpstream).
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import pino from 'pino';
import type { FillLimits } from '../../src/fill/fill-limits.ts';
import { FillTable } from '../../src/fill/fill-table.ts';
import { createMetrics, type Metrics } from '../../src/observability/metrics.ts';
import { BlobService } from '../../src/registry/blob-service.ts';
import { DescriptorSizes } from '../../src/registry/descriptor-sizes.ts';
import { ManifestService } from '../../src/registry/manifest-service.ts';
import { RepositoryAccess } from '../../src/registry/repository-access.ts';
import type { Route } from '../../src/routing/router.ts';
import { FsConfirmationStore } from '../../src/store/confirmation-store.ts';
import { FsBlobStore } from '../../src/store/fs-blob-store.ts';
import { FsManifestStore } from '../../src/store/manifest-store.ts';
import { StorageHealth } from '../../src/store/storage-health.ts';
import { FsTagStore } from '../../src/store/tag-store.ts';
import type { Upstream } from '../../src/upstream/upstream.ts';
import { removeDir, tempDir } from './tmp.ts';

export interface InProcessOptions {
  /** cache.maxSize (default 1 GiB). */
  maxSize?: number;
  /** Fill limits; the rest generous, so only what a test sets can stop a fill. */
  limits?: Partial<FillLimits>;
  /** cache.tagTtl (default 60 s, on the test's clock). */
  tagTtlMs?: number;
  /** timeouts.revalidate (default 200 ms, real time: it is an AbortSignal's). */
  revalidateTimeoutMs?: number;
}

/** A clock the test moves: ManifestService reads tag ages from it. */
export class TestClock {
  constructor(public ms = Date.now()) {}
  readonly now = (): number => this.ms;
  advance(ms: number): void {
    this.ms += ms;
  }
}

export class InProcessServices {
  readonly logger = pino({ level: 'silent' });
  readonly metrics: Metrics = createMetrics();
  readonly clock = new TestClock();
  readonly storage: StorageHealth;
  readonly blobStore: FsBlobStore;
  readonly manifestStore: FsManifestStore;
  readonly tagStore: FsTagStore;
  readonly confirmations: FsConfirmationStore;
  readonly fills: FillTable;
  readonly sizes = new DescriptorSizes();
  readonly access: RepositoryAccess;
  readonly blobs: BlobService;
  readonly manifests: ManifestService;

  private constructor(
    readonly dir: string,
    opts: InProcessOptions,
  ) {
    const maxSize = opts.maxSize ?? 1024 ** 3;
    this.storage = new StorageHealth(this.metrics, this.logger);
    this.blobStore = new FsBlobStore({ dir, maxSize, logger: this.logger, onEvict: () => this.metrics.evictions.inc() });
    this.manifestStore = new FsManifestStore(dir, this.blobStore.budget);
    this.tagStore = new FsTagStore(dir, this.blobStore.budget);
    this.confirmations = new FsConfirmationStore(dir);
    const limits: FillLimits = { maxBlobSize: maxSize, cacheLimit: maxSize, bodyFloorMs: 30_000, bodyMinRate: 1, backgroundFills: 8, ...opts.limits };
    this.fills = new FillTable(this.blobStore, this.metrics, this.logger, this.storage, limits);
    this.access = new RepositoryAccess(this.confirmations, this.storage);
    this.blobs = new BlobService(this.blobStore, this.fills, this.access, this.metrics, this.sizes);
    this.manifests = new ManifestService({
      manifests: this.manifestStore,
      tags: this.tagStore,
      access: this.access,
      storage: this.storage,
      tagTtlMs: opts.tagTtlMs ?? 60_000,
      revalidateTimeoutMs: opts.revalidateTimeoutMs ?? 200,
      metrics: this.metrics,
      logger: this.logger,
      sizes: this.sizes,
      now: this.clock.now,
    });
  }

  static async start(opts: InProcessOptions = {}): Promise<InProcessServices> {
    const services = new InProcessServices(await tempDir('archway-inproc-'), opts);
    await services.blobStore.init();
    await services.manifestStore.init();
    await services.tagStore.init();
    await services.confirmations.init();
    await services.blobStore.whenIndexed();
    return services;
  }

  route(upstream: Upstream, repository = 'team/app'): Route {
    return { upstream, repository, via: 'default' };
  }

  metric(name: string, labels: Record<string, string> = {}): Promise<number> {
    return metricValue(this.metrics, name, labels);
  }

  /** Files in the store's temp directory (fills under way, or left behind). */
  tempFiles(): Promise<string[]> {
    return readdir(join(this.dir, 'tmp'));
  }

  async close(): Promise<void> {
    await this.fills.cancelAll();
    await removeDir(this.dir);
  }
}

/** A reader of a blob answer: what it received so far, and how it ended. */
export class Collected {
  readonly chunks: Buffer[] = [];
  received = 0;
  readonly done: Promise<Buffer>;

  constructor(readonly stream: Readable) {
    this.done = new Promise<Buffer>((resolve, reject) => {
      stream.on('data', (chunk: Buffer) => {
        this.chunks.push(chunk);
        this.received += chunk.length;
      });
      stream.once('end', () => resolve(Buffer.concat(this.chunks)));
      stream.once('error', reject);
    });
    // Tests that expect a failure await `done` themselves; nothing goes unhandled meanwhile.
    this.done.catch(() => undefined);
  }
}

/** A counter's or gauge's value for exactly these labels (0 when never counted), read from the registry without HTTP. */
export async function metricValue(metrics: Metrics, name: string, labels: Record<string, string> = {}): Promise<number> {
  const metric = metrics.registry.getSingleMetric(name);
  if (!metric) throw new Error(`no metric ${name}`);
  const { values } = await metric.get();
  const wanted = Object.entries(labels);
  const sample = values.find((v) => Object.keys(v.labels).length === wanted.length && wanted.every(([k, value]) => String(v.labels[k]) === value));
  return sample?.value ?? 0;
}
