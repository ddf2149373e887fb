import { setTimeout as sleep } from 'node:timers/promises';
import type { PrefetchJob } from '../admin/prefetch.ts';
import type { PurgeReport } from '../admin/cache-inventory.ts';
import type { CacheSummary } from '../admin/cache-summary.ts';
import { adminCall, type AdminTarget } from './admin-client.ts';
import { humanSize } from './inspect.ts';

type Out = { write(s: string): unknown; isTTY?: boolean };

/**
 * `archway prefetch IMAGE`: start the job, then follow it to the end: a
 * redrawn progress bar on a terminal, a plain line per 10 % otherwise (logs,
 * CI). Resolves true when every blob is cached.
 */
export async function prefetchCommand(target: AdminTarget, image: string, platforms: string[] | 'all', out: Out, pollMs = 500): Promise<boolean> {
  let job = await adminCall<PrefetchJob>(target, 'POST', '/_archway/prefetch', { image, platforms });
  out.write(`prefetch ${image} (${platforms === 'all' ? 'all platforms' : platforms.join(', ')}): job ${job.id}\n`);
  let lastDecile = -1;
  for (;;) {
    if (out.isTTY) {
      const width = 30;
      const filled = Math.round((job.percent / 100) * width);
      out.write(`\r[${'#'.repeat(filled)}${' '.repeat(width - filled)}] ${String(job.percent).padStart(3)}%  ${humanSize(job.bytes.done)} / ${humanSize(job.bytes.total)}  ${job.blobs.done}/${job.blobs.total} blobs`);
    } else if (Math.floor(job.percent / 10) !== lastDecile && job.blobs.total > 0) {
      lastDecile = Math.floor(job.percent / 10);
      out.write(`${job.percent}% ${job.bytes.done}/${job.bytes.total} bytes, ${job.blobs.done}/${job.blobs.total} blobs\n`);
    }
    if (job.state !== 'running') break;
    await sleep(pollMs);
    job = await adminCall<PrefetchJob>(target, 'GET', `/_archway/jobs/${job.id}`);
  }
  if (out.isTTY) out.write('\n');
  if (job.state === 'failed') {
    out.write(`failed: ${job.error}\n`);
    return false;
  }
  out.write(`done: ${job.fetched.join(', ')}; ${job.blobs.total} blobs, ${humanSize(job.bytes.total)} cached\n`);
  return true;
}

/** `archway purge REF`: REF is `registry/name[:tag|@digest]`, as in `DELETE /_archway/cache/<REF>`. */
export async function purgeCommand(target: AdminTarget, ref: string, out: Out): Promise<PurgeReport> {
  const path = `/_archway/cache/${ref.split('/').map(encodeURIComponent).join('/')}`;
  const report = await adminCall<PurgeReport>(target, 'DELETE', path);
  out.write(
    `purged ${ref}: ${report.tags.length} tag${report.tags.length === 1 ? '' : 's'}, ${report.manifests} manifests, ${report.blobs} blobs (${humanSize(report.bytes)})` +
      `; kept ${report.keptShared} shared and ${report.keptInUse} in-use blobs\n`,
  );
  return report;
}

/** `archway cache stats`: GET /_archway/cache, as a summary (or the JSON with --json). */
export async function cacheStatsCommand(target: AdminTarget, json: boolean, out: Out): Promise<void> {
  const s = await adminCall<CacheSummary>(target, 'GET', '/_archway/cache');
  if (json) return void out.write(`${JSON.stringify(s, null, 2)}\n`);
  const pct = s.maxBytes ? ((100 * s.bytes) / s.maxBytes).toFixed(1) : '?';
  const lines = [
    `cache: ${humanSize(s.bytes)} of ${humanSize(s.maxBytes)} (${pct}%), ${s.blobs} blobs, ${s.manifests} manifests, ${s.tags} tags`,
    `since ${s.since}: hit ratio ${s.hitRatio === null ? '–' : `${(100 * s.hitRatio).toFixed(1)}%`} (${s.hits} hits, ${s.misses} misses); ` +
      `${humanSize(s.bytesFromCache)} served from cache, ${humanSize(s.bytesFromUpstream)} from upstream`,
    'largest repositories:',
    ...(s.largestRepositories.length ? s.largestRepositories.map((r) => `  ${r.repository}  ${humanSize(r.bytes)}  (${r.tags} tags, ${r.blobs} blobs)`) : ['  (none)']),
    'most pulled:',
    ...(s.mostPulledRepositories.length ? s.mostPulledRepositories.map((r) => `  ${r.repository}  ${r.pulls} pulls, ${humanSize(r.bytesServed)} served`) : ['  (none)']),
    `local (pushed, never evicted): ${humanSize(s.local.bytes)} of ${humanSize(s.local.maxBytes)}`,
    ...s.local.repositories.flatMap((r) => r.tags.map((t) => `  ${r.repository}:${t.tag}  ${t.platforms.join(', ') || t.digest}`)),
  ];
  out.write(`${lines.join('\n')}\n`);
}
