// npm run bench:replicas — archway as several replicas sharing one cache (an
// S3 bucket on Ceph RGW; coordination through a real redis-server),
// on loopback, as the figures of docs/replicas.md ("Capacity, from the measured figures"):
//   1. upstream fetches per blob when 16 cold requests for one 64 MiB blob
//      land on three replicas at once (upstream throttled to 50 MB/s so they
//      overlap), and when each replica is on its own (no Redis, no bucket: the
//      filesystem store) for comparison;
//   2. warm blob throughput through an nginx load balancer with one replica
//      behind it and with three (wrk, 8 connections, a cached 64 MiB blob).
// `--quick` shrinks everything for a smoke run.
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { startArchwayProcess, type ArchwayProcess } from '../test/harness/archway-process.ts';
import { startRedis } from '../test/harness/redis.ts';
import { startRegistry } from '../test/harness/registry.ts';
import { ensureCommands } from '../test/harness/packages.ts';
import { run } from '../test/harness/process.ts';
import { startS3 } from '../test/harness/s3.ts';
import { removeDir, tempDir } from '../test/harness/tmp.ts';
import { startNginx } from './nginx.ts';
import { download, seedBlob, wrk } from './run.ts';
import { startThrottleFront } from './throttle-front.ts';

const MiB = 1024 * 1024;

interface Options {
  quick: boolean;
}

/** The body's size; anything but a 200 fails the run. */
async function getAll(url: string): Promise<number> {
  const d = await download(url);
  if (d.status !== 200) throw new Error(`${url}: ${d.status}`);
  return d.bytes;
}

export async function benchReplicas(opts: Options): Promise<Record<string, unknown>> {
  const blobSize = opts.quick ? 4 * MiB : 64 * MiB;
  const clients = 16;
  const seconds = opts.quick ? 2 : 10;
  // Its own needs, not the main bench's: this may be the first bench a fresh machine runs.
  await ensureCommands([{ command: 'wrk', debianPackage: 'wrk' }]);
  await run('npm', ['run', 'build']);
  const work = await tempDir('archway-bench-replicas-');
  const registry = await startRegistry();
  const front = await startThrottleFront(registry.url, 50e6);
  const [s3, redis] = await Promise.all([startS3(), startRedis()]);
  const started: ArchwayProcess[] = [];
  const results: Record<string, unknown> = { blobMiB: blobSize / MiB, clients };
  try {
    const replicasOf = async (n: number, shared: boolean, prefix: string) => {
      const out: ArchwayProcess[] = [];
      for (let i = 0; i < n; i++) {
        const proc = await startArchwayProcess(
          {
            upstreams: { 'docker.io': { url: front.url } },
            defaultUpstream: 'docker.io',
            cache: { maxSize: '100GiB', dir: join(work, `${prefix}-${i}`) },
            log: { level: 'warn' },
            ...(shared ? { storage: s3.storage(`${prefix}/`), redis: { url: redis.url } } : {}),
          },
          { compiled: true },
        );
        started.push(proc);
        out.push(proc);
      }
      return out;
    };

    // 1. Cold fan-in across replicas.
    for (const shared of [true, false]) {
      const blob = await seedBlob(registry, 'bench/replicas', randomBytes(blobSize));
      const replicas = await replicasOf(3, shared, shared ? 'shared' : 'alone');
      front.reset();
      const t0 = performance.now();
      const sizes = await Promise.all(Array.from({ length: clients }, (_, i) => getAll(`${replicas[i % 3]!.url}/v2/bench/replicas/blobs/${blob}`)));
      const ms = performance.now() - t0;
      if (sizes.some((s) => s !== blobSize)) throw new Error('a client got the wrong size');
      results[shared ? 'coldSharedFetches' : 'coldAloneFetches'] = front.blobFetches();
      results[shared ? 'coldSharedSeconds' : 'coldAloneSeconds'] = ms / 1000;
      console.log(`cold fan-in, 3 replicas ${shared ? 'sharing S3 + Redis' : 'each alone'}: ${front.blobFetches()} upstream fetches of the blob, all ${clients} clients done in ${(ms / 1000).toFixed(1)} s`);
      if (!shared) for (const r of replicas) await r.kill();
    }

    // 2. Warm throughput through nginx, one replica vs three (the shared ones, warm now).
    const shared = started.slice(0, 3);
    const warmBlob = await seedBlob(registry, 'bench/replicas', randomBytes(blobSize));
    for (const r of shared) await getAll(`${r.url}/v2/bench/replicas/blobs/${warmBlob}`);
    for (const n of [1, 3]) {
      const lb = await startNginx({ kind: 'balance', backends: shared.slice(0, n).map((r) => r.hostPort) });
      try {
        const w = await wrk(`${lb.url}/v2/bench/replicas/blobs/${warmBlob}`, 8, seconds);
        const gbps = w.bytes / w.seconds / 1e9;
        results[`warm${n}GBps`] = gbps;
        console.log(`warm blob through nginx, ${n} replica${n === 1 ? '' : 's'} (S3-backed): ${gbps.toFixed(2)} GB/s, ${w.errors + w.non2xx} errors`);
      } finally {
        await lb.stop();
      }
    }
    return results;
  } finally {
    for (const p of started) await p.kill().catch(() => undefined);
    await Promise.all([front.stop(), registry.stop(), s3.stop(), redis.stop()]);
    await removeDir(work);
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  benchReplicas({ quick: process.argv.includes('--quick') }).then(
    (r) => {
      console.log(JSON.stringify(r));
      process.exit(0);
    },
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
