import { access, rm } from 'node:fs/promises';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { request } from 'undici';
import { parseImageReference } from '../oci/image-reference.ts';
import { RegistryError } from '../errors.ts';
import { createServices, type Services } from '../services.ts';
import type { Config } from '../config/schema.ts';
import type { CachedState, PlatformReport, PlatformRow } from '../inspect/platform-inspector.ts';
import type { Digest } from '../oci/digest.ts';
import { blobFilePath } from '../store/fs-blob-store.ts';
import { errorText } from './admin-client.ts';

export interface InspectOptions {
  image: string;
  /** A running archway to ask; without it, archway's upstreams are asked directly with this config. */
  url?: string | undefined;
  /** Bearer token for an archway with client authentication. */
  token?: string | undefined;
}

/**
 * `archway inspect IMAGE`: the report of GET /_archway/platforms/<image>,
 * from a running archway, or made in this process straight from the
 * upstreams of the config (manifests fetched into a throw-away cache; the
 * cache column then tells what the configured cache directory holds).
 */
export async function inspectImage(config: Readonly<Config>, opts: InspectOptions): Promise<PlatformReport> {
  const path = `/_archway/platforms/${opts.image.split('/').map(encodeURIComponent).join('/')}`;
  if (opts.url) {
    const res = await request(new URL(path, opts.url), { headers: opts.token ? { authorization: `Bearer ${opts.token}` } : {} });
    const body = await res.body.text();
    if (res.statusCode !== 200) throw new Error(`${opts.url} answered ${res.statusCode}: ${errorText(body)}`);
    return JSON.parse(body) as PlatformReport;
  }
  const scratch = await mkdtemp(join(tmpdir(), 'archway-inspect-'));
  // Client authentication is for remote callers; this process is the operator's own. Its cache is
  // throw-away and local: never the shared bucket or Redis of a running deployment.
  const services = await createServices(
    { ...config, auth: undefined, redis: undefined, storage: { type: 'filesystem' }, cache: { ...config.cache, dir: scratch } },
    { logger: pino({ level: 'silent' }) },
  );
  try {
    const report = await inspectWith(services, opts.image);
    // The AWS SDK only when the cache is a bucket (src/store/s3/s3-modules.ts).
    const s3 = config.storage.type === 's3' && config.storage.s3 ? await import('../store/s3/s3-modules.ts') : undefined;
    const bucket = s3 && config.storage.s3 ? new s3.S3Bucket(config.storage.s3) : undefined;
    const present = s3 && bucket
      ? async (digest: Digest) => (await bucket.size(s3.blobObjectKey(digest))) !== undefined
      : (digest: Digest) => access(blobFilePath(config.cache.dir, digest)).then(() => true, () => false);
    try {
      for (const row of report.platforms) row.cached = await cachedState(row, present);
    } finally {
      bucket?.close();
    }
    return report;
  } finally {
    await services.close();
    await rm(scratch, { recursive: true, force: true });
  }
}

/** What GET /_archway/platforms/<image> answers, asked of the services directly. */
async function inspectWith(services: Services, image: string): Promise<PlatformReport> {
  try {
    const { name, reference } = parseImageReference(image);
    const generation = services.current();
    const route = generation.router.resolve(name);
    const local = generation.localCatalog.match(route);
    return await services.inspector.inspect({
      image,
      reference,
      route,
      local: local && { repository: local, router: generation.router },
      virtual: local ? undefined : generation.virtualCatalog.match(route),
    });
  } catch (err) {
    // As the endpoint would answer it, the spec's code with its message.
    if (err instanceof RegistryError) throw new Error(`${err.status}: ${err.code}: ${err.message}`);
    throw err;
  }
}

/** What the configured cache (directory or bucket) holds of a row's blobs. */
async function cachedState(row: PlatformRow, present: (digest: Digest) => Promise<boolean>): Promise<CachedState> {
  const blobs = [...(row.config ? [row.config] : []), ...row.layers];
  const n = (await Promise.all(blobs.map((b) => present(b.digest)))).filter(Boolean).length;
  return blobs.length > 0 && n === blobs.length ? 'yes' : n > 0 ? 'partial' : 'no';
}

const MEDIA_TYPE_NAMES: Record<string, string> = {
  'application/vnd.oci.image.index.v1+json': 'OCI index',
  'application/vnd.oci.image.manifest.v1+json': 'OCI manifest',
  'application/vnd.docker.distribution.manifest.list.v2+json': 'Docker manifest list',
  'application/vnd.docker.distribution.manifest.v2+json': 'Docker manifest v2',
};

/** The table a person reads: one line per platform. */
export function formatReport(report: PlatformReport): string {
  const kind = MEDIA_TYPE_NAMES[report.mediaType] ?? report.mediaType;
  const head = `${report.image}: ${report.registry}/${report.repository}${report.virtual ? ' (virtual)' : ''}, ${kind} ${report.digest}`;
  const virtual = report.virtual;
  const rows = [
    ['PLATFORM', 'DIGEST', 'MEDIA TYPE', 'LAYERS', 'SIZE', 'CACHED', ...(virtual ? ['MEMBER'] : [])],
    ...report.platforms.map((p) => [
      p.platform,
      p.digest,
      MEDIA_TYPE_NAMES[p.mediaType] ?? p.mediaType,
      String(p.layers.length),
      humanSize(p.size),
      p.cached,
      ...(virtual ? [p.member ?? '?'] : []),
    ]),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  const lines = rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i] ?? 0))).join('  '));
  const notes = report.attestations ? [`(${report.attestations} attestation manifest${report.attestations === 1 ? '' : 's'} not listed)`] : [];
  return [head, ...lines, ...notes].join('\n');
}

export function humanSize(bytes: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}
