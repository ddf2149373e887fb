// Benchmarks archway against the peers a user would pick instead, on the same
// loopback upstream and the same bytes (issue 5):
//   - upstream: a real distribution registry seeded with generated blobs and a 5-layer image;
//   - archway, as its own process (src/main.ts);
//   - distribution's own pull-through proxy (`docker-registry serve` with proxy.remoteurl);
//   - an nginx caching proxy (proxy_cache keyed on the URI + proxy_cache_lock);
//   - nginx serving the same blob file from disk with sendfile (the ceiling);
//   - for real pulls, a private dockerd pulling the image straight from the
//     upstream or through a warm proxy as its registry mirror.
// Scenarios run against each target in alternation over several rounds; the
// median and spread go to bench/results/<timestamp>.json and BENCHMARKS.md.
//
//   npm run bench                  # 3 rounds, full sizes; rewrites BENCHMARKS.md's table
//   npm run bench -- --quick       # each scenario once, tiny sizes (smoke check)
//   npm run bench -- --rounds 5 --only warmBlob,coldFanIn --no-write
import { createHash, randomBytes } from 'node:crypto';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFileSync } from 'node:fs';
import { link, mkdir, readFile, readdir, writeFile } from 'node:fs/promises';
import { get as httpGet, Agent as HttpAgent } from 'node:http';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { parse, stringify } from 'yaml';
import { archwayEntry, startArchwayProcess, type ArchwayProcess } from '../test/harness/archway-process.ts';
import { startDockerd, type DockerdHandle } from '../test/harness/dockerd.ts';
import { buildImage } from '../test/harness/images.ts';
import { ensureCommands } from '../test/harness/packages.ts';
import { freePort } from '../test/harness/ports.ts';
import { run } from '../test/harness/process.ts';
import { startRegistry, type RegistryHandle } from '../test/harness/registry.ts';
import { scrapeMetric } from '../test/harness/metrics.ts';
import { ACCEL_LOCATION, startNginxAccel } from '../test/harness/nginx-accel.ts';
import { pushLayout } from '../test/harness/skopeo.ts';
import { removeDir, tempDir } from '../test/harness/tmp.ts';
import { nginxVersion, startNginx, type NginxHandle } from './nginx.ts';
import { startThrottleFront, type ThrottleFront } from './throttle-front.ts';

const MiB = 1024 * 1024;
const ROOT = fileURLToPath(new URL('..', import.meta.url));

export const SCENARIOS = ['warmBlob', 'warmManifest', 'coldFanIn', 'memory', 'dockerPull', 'scale'] as const;
export type ScenarioName = (typeof SCENARIOS)[number];

export interface BenchOptions {
  quick: boolean;
  rounds: number;
  only?: ScenarioName[];
  /** Write bench/results/<timestamp>.json and BENCHMARKS.md (default true). */
  write?: boolean;
  /** Where the JSON goes (default bench/results). */
  resultsDir?: string;
  log?: (line: string) => void;
}

export interface Stat {
  median: number;
  min: number;
  max: number;
  runs: number[];
}

export interface ScenarioResult {
  title: string;
  /** target → metric → stat */
  targets: Record<string, Record<string, Stat>>;
  notes: string[];
}

export interface BenchResult {
  timestamp: string;
  commit: string;
  quick: boolean;
  rounds: number;
  command: string;
  machine: { cpus: number; cpuModel: string; memoryGiB: number; platform: string };
  versions: { node: string; nginx: string; distribution: string; wrk: string };
  sizes: Record<string, number>;
  scenarios: Partial<Record<ScenarioName, ScenarioResult>>;
  durationMs: number;
}

interface Sizes {
  warmBlob: number;
  fanInBlob: number;
  fanInClients: number;
  throttleBytesPerSecond: number;
  memoryBlob: number;
  memoryClients: number;
  scaleBlobs: number;
  /** Each of the 5 layers of the seeded image (what scenario 5 pulls). */
  imageLayer: number;
  wrkSeconds: number;
}

const FULL: Sizes = {
  warmBlob: 64 * MiB,
  fanInBlob: 64 * MiB,
  fanInClients: 16,
  throttleBytesPerSecond: 50e6,
  memoryBlob: 256 * MiB,
  memoryClients: 16,
  scaleBlobs: 100_000,
  imageLayer: 32 * MiB, // 160 MiB of incompressible layers: a pull is transfer + extraction
  wrkSeconds: 6,
};

const QUICK: Sizes = {
  warmBlob: 4 * MiB,
  fanInBlob: 4 * MiB,
  fanInClients: 16,
  throttleBytesPerSecond: 50e6,
  memoryBlob: 4 * MiB,
  memoryClients: 16,
  scaleBlobs: 2_000,
  imageLayer: 16 * 1024,
  wrkSeconds: 1,
};

const ACCEPT_MANIFESTS = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

// ---------------------------------------------------------------------------
// Helpers

function stat(runs: number[]): Stat {
  const sorted = [...runs].sort((a, b) => a - b);
  const n = sorted.length;
  const median = n === 0 ? NaN : n % 2 === 1 ? sorted[(n - 1) / 2]! : (sorted[n / 2 - 1]! + sorted[n / 2]!) / 2;
  return { median, min: sorted[0] ?? NaN, max: sorted[n - 1] ?? NaN, runs };
}

function sha256Hex(b: Buffer): string {
  return createHash('sha256').update(b).digest('hex');
}

/** KiB from /proc/<pid>/status (VmHWM = peak RSS, VmRSS = now). */
async function procStatusKiB(pid: number, field: 'VmHWM' | 'VmRSS'): Promise<number> {
  const text = await readFile(`/proc/${pid}/status`, 'utf8');
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text);
  if (!m) throw new Error(`no ${field} for pid ${pid}`);
  return Number(m[1]);
}

/**
 * Puts a blob straight into the registry's filesystem storage and links it
 * into `repo`: what a push leaves, without pushing gigabytes through HTTP.
 */
export async function seedBlob(registry: RegistryHandle, repo: string, data: Buffer): Promise<string> {
  const hex = sha256Hex(data);
  const v2 = join(registry.dataDir, 'docker', 'registry', 'v2');
  const blobDir = join(v2, 'blobs', 'sha256', hex.slice(0, 2), hex);
  await mkdir(blobDir, { recursive: true });
  if (!existsSync(join(blobDir, 'data'))) await writeFile(join(blobDir, 'data'), data);
  const linkDir = join(v2, 'repositories', repo, '_layers', 'sha256', hex);
  await mkdir(linkDir, { recursive: true });
  await writeFile(join(linkDir, 'link'), `sha256:${hex}`);
  return `sha256:${hex}`;
}

export interface Download {
  status: number;
  bytes: number;
  /** performance.now() when the request was sent, its first body byte arrived, its last. */
  sentAt: number;
  firstAt: number;
  lastAt: number;
}

/** One GET, body counted and dropped; a fresh connection each time. */
export function download(url: string, headers: Record<string, string> = {}): Promise<Download> {
  return new Promise((resolve, reject) => {
    const sentAt = performance.now();
    const req = httpGet(url, { headers, agent: false }, (res) => {
      let bytes = 0;
      let firstAt = 0;
      res.on('data', (c: Buffer) => {
        if (bytes === 0) firstAt = performance.now();
        bytes += c.length;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes, sentAt, firstAt: firstAt || performance.now(), lastAt: performance.now() }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.setTimeout(600_000, () => req.destroy(new Error(`timeout: ${url}`)));
  });
}

/** GET and return the body and headers (small things, warm-up checks). */
function fetchBody(url: string, headers: Record<string, string> = {}): Promise<{ status: number; body: Buffer; headers: Record<string, string | string[] | undefined> }> {
  return new Promise((resolve, reject) => {
    const req = httpGet(url, { headers, agent: keepAliveAgent }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), headers: res.headers }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
}
const keepAliveAgent = new HttpAgent({ keepAlive: false });

export interface WrkResult {
  requests: number;
  bytes: number;
  seconds: number;
  errors: number;
  non2xx: number;
  p50Ms: number;
  p99Ms: number;
}

let wrkScript: string | undefined;

export async function wrk(url: string, connections: number, seconds: number, headers: Record<string, string> = {}): Promise<WrkResult> {
  if (!wrkScript) {
    const dir = await tempDir('archway-bench-wrk-');
    wrkScript = join(dir, 'report.lua');
    // No response() callback: wrk parses and drops bodies without keeping them.
    await writeFile(
      wrkScript,
      `done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRKJSON {"requests":%d,"bytes":%d,"us":%d,"errors":%d,"non2xx":%d,"p50":%d,"p99":%d}\\n',
    summary.requests, summary.bytes, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
`,
    );
  }
  const args = ['-t', String(Math.min(2, connections)), '-c', String(connections), '-d', `${seconds}s`, '--timeout', '60s', '-s', wrkScript];
  for (const [k, v] of Object.entries(headers)) args.push('-H', `${k}: ${v}`);
  args.push(url);
  const r = await run('wrk', args, { timeoutMs: (seconds + 120) * 1000 });
  const line = r.stdout.split('\n').find((l) => l.startsWith('WRKJSON '));
  if (!line) throw new Error(`wrk printed no summary:\n${r.stdout}\n${r.stderr}`);
  const j = JSON.parse(line.slice('WRKJSON '.length)) as Record<string, number>;
  return {
    requests: j.requests!,
    bytes: j.bytes!,
    seconds: j.us! / 1e6,
    errors: j.errors!,
    non2xx: j.non2xx!,
    p50Ms: j.p50! / 1000,
    p99Ms: j.p99! / 1000,
  };
}

/** Clock ticks per second of /proc's utime and stime (USER_HZ: 100 on Linux). */
const CLOCK_TICKS = 100;

/**
 * CPU seconds (user + system) used so far by a process and every process under
 * it (nginx's workers): /proc, read the same way for every target, so the
 * figure per unit of work does not depend on how fast the machine is.
 */
export async function cpuSeconds(rootPid: number): Promise<number> {
  const procs: Array<{ pid: number; ppid: number; ticks: number }> = [];
  for (const name of await readdir('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const text = await readFile(`/proc/${name}/stat`, 'utf8').catch(() => '');
    // The command may hold spaces and parentheses: fields are counted from the last ')'.
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    if (fields.length < 13) continue;
    procs.push({ pid: Number(name), ppid: Number(fields[1]), ticks: Number(fields[11]) + Number(fields[12]) });
  }
  const tree = new Set([rootPid]);
  for (let grew = true; grew; ) {
    grew = false;
    for (const p of procs) {
      if (tree.has(p.pid) || !tree.has(p.ppid)) continue;
      tree.add(p.pid);
      grew = true;
    }
  }
  return procs.filter((p) => tree.has(p.pid)).reduce((sum, p) => sum + p.ticks, 0) / CLOCK_TICKS;
}

interface Target {
  name: string;
  url: string;
  pid: number;
  /** Other processes doing the target's work (archway behind the nginx that fronts it): their CPU counts too. */
  morePids?: number[];
  stop(): Promise<void>;
}

/** CPU seconds of a target: every process tree it is made of. */
async function targetCpuSeconds(t: Target): Promise<number> {
  let sum = 0;
  for (const pid of [t.pid, ...(t.morePids ?? [])]) sum += await cpuSeconds(pid);
  return sum;
}

/**
 * archway as it ships (config/default.yaml, request logging at info included): only the
 * upstream's URL and the cache directory are the bench's.
 */
function archwayConfig(upstreamUrl: string, cacheDir?: string): Record<string, unknown> {
  const shipped = parse(readFileSync(join(ROOT, 'config', 'default.yaml'), 'utf8')) as { cache: Record<string, unknown>; upstreams: Record<string, Record<string, unknown>> };
  return {
    ...shipped,
    upstreams: { 'docker.io': { ...shipped.upstreams['docker.io'], url: upstreamUrl } },
    cache: { ...shipped.cache, ...(cacheDir ? { dir: cacheDir } : {}) },
  };
}

async function startArchwayTarget(upstreamUrl: string): Promise<Target & { cacheDir: string; proc: ArchwayProcess }> {
  const dir = await tempDir('archway-bench-cache-');
  const proc = await startArchwayProcess(archwayConfig(upstreamUrl, join(dir, 'cache')), { compiled: true });
  return {
    name: 'archway',
    url: proc.url,
    pid: proc.child.pid!,
    cacheDir: proc.cacheDir,
    proc,
    stop: async () => {
      await proc.kill();
      await removeDir(dir);
    },
  };
}

/**
 * archway as it ships plus server.accelRedirect, behind nginx in that mode (the harness's
 * configuration, deploy/compose-accel's with loopback paths): archway decides, nginx sends
 * verified cached files with sendfile. CPU is both trees'.
 */
async function startArchwayAccelTarget(upstreamUrl: string): Promise<Target & { redirects(): Promise<number> }> {
  const dir = await tempDir('archway-bench-accel-');
  const config = archwayConfig(upstreamUrl, join(dir, 'cache'));
  const server = { ...(config.server as object | undefined), trustedProxies: ['127.0.0.1'], accelRedirect: { location: ACCEL_LOCATION } };
  const proc = await startArchwayProcess({ ...config, server }, { compiled: true });
  const front = await startNginxAccel({ archway: proc.hostPort, cacheDir: proc.cacheDir, workers: 'auto', accessLog: false });
  return {
    name: 'archway-accel',
    url: front.url,
    pid: front.pid,
    morePids: [proc.child.pid!],
    // What archway handed to nginx: the bench checks it measured redirects, not archway's own bodies.
    redirects: () => scrapeMetric(proc.url, 'archway_accel_redirects_total'),
    stop: async () => {
      await front.stop();
      await proc.kill();
      await removeDir(dir);
    },
  };
}

async function startDistributionProxy(upstreamUrl: string): Promise<Target> {
  const dir = await tempDir('archway-bench-distproxy-');
  const reg = await startRegistry({ proxyRemoteUrl: upstreamUrl, dataDir: join(dir, 'data') });
  const realPid = await registryPid(reg);
  return {
    name: 'distribution',
    url: reg.url,
    pid: realPid,
    stop: async () => {
      await reg.stop();
      await removeDir(dir);
    },
  };
}

/** docker-registry serve <dir>/config.yml, listening on reg.port: matched by its port in the config file. */
async function registryPid(reg: RegistryHandle): Promise<number> {
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const argv = (await readFile(`/proc/${entry}/cmdline`, 'utf8')).split('\0');
      if (!argv[0]?.endsWith('docker-registry') || argv[1] !== 'serve' || !argv[2]) continue;
      const conf = await readFile(argv[2], 'utf8');
      if (conf.includes(`"127.0.0.1:${reg.port}"`)) return Number(entry);
    } catch {
      /* gone */
    }
  }
  throw new Error(`no docker-registry process for port ${reg.port}`);
}

async function startNginxCache(upstreamUrl: string): Promise<Target> {
  const n: NginxHandle = await startNginx({ kind: 'cache', upstreamHostPort: new URL(upstreamUrl).host, manifestTtl: '10m' });
  return { name: 'nginx-cache', url: n.url, pid: n.pid, stop: () => n.stop() };
}

async function stopAll(targets: Target[]): Promise<void> {
  for (const t of targets) await t.stop().catch(() => undefined);
}

// ---------------------------------------------------------------------------
// The run

export async function runBench(opts: BenchOptions): Promise<BenchResult> {
  const started = performance.now();
  const log = opts.log ?? (() => {});
  const sizes = opts.quick ? QUICK : FULL;
  const rounds = opts.quick ? 1 : opts.rounds;
  const only = new Set<ScenarioName>(opts.only ?? SCENARIOS);
  await ensureCommands([
    { command: 'nginx', debianPackage: 'nginx' },
    { command: 'wrk', debianPackage: 'wrk' },
    { command: 'docker-registry', debianPackage: 'docker-registry' },
    { command: 'skopeo', debianPackage: 'skopeo' },
  ]);
  // archway runs as the container image runs it: the compiled build, not tsx.
  await run('npm', ['run', 'build'], { cwd: ROOT });
  const work = await tempDir('archway-bench-');
  const scenarios: BenchResult['scenarios'] = {};
  const live: Target[] = [];
  let upstream: RegistryHandle | undefined;
  let front: ThrottleFront | undefined;
  // Tracked as soon as started, so a failure anywhere stops them (archway is not in its own process group).
  const keep = <T extends Target>(t: T): T => {
    live.push(t);
    return t;
  };
  const killLive = (): void => {
    for (const t of live) {
      try {
        if (t.name === 'archway') process.kill(t.pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
  };
  process.once('exit', killLive);
  try {
    // ---- upstream and its content
    upstream = await startRegistry();
    const up = upstream;
    const image = await buildImage({
      dir: join(work, 'image'),
      tag: 'v1',
      platforms: [{ os: 'linux', architecture: 'amd64' }],
      format: 'docker',
      index: false,
      layerSizes: Array.from({ length: 5 }, () => sizes.imageLayer),
      seed: `bench-${Date.now()}`,
    });
    await pushLayout(image, { hostPort: up.hostPort, name: 'bench/image', tag: 'v1' });
    const warmBlob = randomBytes(sizes.warmBlob);
    const warmDigest = await seedBlob(up, 'bench/blobs', warmBlob);
    log(`upstream ${up.url}: image bench/image:v1 (5 layers), warm blob ${warmDigest.slice(0, 19)}… ${sizes.warmBlob / MiB} MiB`);

    // ---- 1. warm blob throughput
    if (only.has('warmBlob')) {
      const targets: Target[] = [];
      for (const start of [startArchwayTarget, startDistributionProxy, startNginxCache]) targets.push(keep(await start(up.url)));
      const root = join(work, 'sendfile-root');
      const dirForBlob = join(root, 'v2', 'bench', 'blobs', 'blobs');
      await mkdir(dirForBlob, { recursive: true });
      await link(up.blobPath(warmDigest), join(dirForBlob, warmDigest));
      const sendfile = await startNginx({ kind: 'sendfile', root });
      targets.push(keep({ name: 'nginx-sendfile', url: sendfile.url, pid: sendfile.pid, stop: () => sendfile.stop() }));
      // After the sendfile one: the warm-manifest scenario below takes the first three.
      const accel = await startArchwayAccelTarget(up.url);
      targets.push(keep(accel));
      let accelBodies = 0;
      const path = `/v2/bench/blobs/blobs/${warmDigest}`;
      // Warm every cache, and check it is warm: the body is right, and a second GET does not reach the upstream.
      for (const t of targets) {
        for (let i = 0; i < 2; i++) {
          const r = await fetchBody(`${t.url}${path}`);
          if (r.status !== 200 || `sha256:${sha256Hex(r.body)}` !== warmDigest) throw new Error(`${t.name}: warm-up GET ${path} → ${r.status}, ${r.body.length} bytes`);
          if (i === 1 && t.name === 'nginx-cache' && r.headers['x-cache-status'] !== 'HIT') throw new Error(`nginx cache not warm: ${String(r.headers['x-cache-status'])}`);
        }
      }
      const result: ScenarioResult = { title: `Warm blob throughput: 8 clients, cached ${sizes.warmBlob / MiB} MiB blob (wrk)`, targets: {}, notes: [] };
      const runs: Record<string, { gbps: number[]; cpuPerGB: number[]; upstreamRequests: number[] }> = {};
      for (let round = 0; round < rounds; round++) {
        for (const t of targets) {
          up.clearRequests();
          const cpuBefore = await targetCpuSeconds(t);
          const w = await wrk(`${t.url}${path}`, 8, sizes.wrkSeconds);
          const cpu = (await targetCpuSeconds(t)) - cpuBefore;
          const upReqs = (await up.requests()).filter((r) => r.path.includes('/blobs/')).length;
          if (w.errors > 0 || w.non2xx > 0) result.notes.push(`${t.name} round ${round + 1}: ${w.errors} socket errors, ${w.non2xx} non-2xx`);
          const gbps = w.bytes / w.seconds / 1e9;
          const cpuPerGB = cpu / (w.bytes / 1e9);
          (runs[t.name] ??= { gbps: [], cpuPerGB: [], upstreamRequests: [] }).gbps.push(gbps);
          runs[t.name]!.cpuPerGB.push(cpuPerGB);
          runs[t.name]!.upstreamRequests.push(upReqs);
          if (t === accel) accelBodies += w.requests;
          log(`warmBlob round ${round + 1} ${t.name}: ${gbps.toFixed(2)} GB/s, ${cpuPerGB.toFixed(3)} CPU s/GB (${w.requests} bodies, upstream blob requests ${upReqs})`);
        }
      }
      for (const [name, r] of Object.entries(runs)) result.targets[name] = { gbps: stat(r.gbps), cpuPerGB: stat(r.cpuPerGB), upstreamBlobRequests: stat(r.upstreamRequests) };
      result.notes.push(
        `archway-accel: archway with the shipped config plus server.accelRedirect, behind nginx (deploy/compose-accel/nginx.conf via test/harness/nginx-accel.ts): archway decides each request, nginx sends the verified file with sendfile; its CPU is both process trees'. archway redirected ${await accel.redirects()} requests for ${accelBodies} bodies wrk counted.`,
      );
      scenarios.warmBlob = result;

      // ---- 2. warm manifest by tag (same warm targets, without the sendfile one)
      if (only.has('warmManifest')) scenarios.warmManifest = await warmManifest(targets.slice(0, 3), up, sizes, rounds, log);
      await stopAll(targets);
      live.length = 0;
    } else if (only.has('warmManifest')) {
      const targets: Target[] = [];
      for (const start of [startArchwayTarget, startDistributionProxy, startNginxCache]) targets.push(keep(await start(up.url)));
      scenarios.warmManifest = await warmManifest(targets, up, sizes, rounds, log);
      await stopAll(targets);
      live.length = 0;
    }

    // ---- 3. cold fan-in through a throttled upstream
    if (only.has('coldFanIn')) {
      front = await startThrottleFront(up.url, sizes.throttleBytesPerSecond);
      const blob = randomBytes(sizes.fanInBlob);
      const digest = await seedBlob(up, 'bench/fanin', blob);
      const path = `/v2/bench/fanin/blobs/${digest}`;
      const result: ScenarioResult = {
        title: `Cold fan-in: ${sizes.fanInClients} concurrent cold GETs of one ${sizes.fanInBlob / MiB} MiB blob, upstream throttled to ${sizes.throttleBytesPerSecond / 1e6} MB/s per response`,
        targets: {},
        notes: [],
      };
      const starters: Array<[string, (u: string) => Promise<Target>]> = [
        ['archway', startArchwayTarget],
        ['distribution', startDistributionProxy],
        ['nginx-cache', startNginxCache],
      ];
      const runs: Record<string, Record<string, number[]>> = {};
      for (let round = 0; round < rounds; round++) {
        for (const [name, start] of starters) {
          const t = keep(await start(front.url)); // a fresh, empty cache every time
          front.reset();
          const downloads = await Promise.all(Array.from({ length: sizes.fanInClients }, () => download(`${t.url}${path}`)));
          await sleep(200); // a fill may still be finishing after the clients
          const bad = downloads.filter((d) => d.status !== 200 || d.bytes !== sizes.fanInBlob);
          if (bad.length > 0) result.notes.push(`${name} round ${round + 1}: ${bad.length} clients got a bad answer (${bad.map((d) => `${d.status}/${d.bytes}`).join(', ')})`);
          const upFirst = front.firstBlobByteAt() ?? NaN;
          const sent = Math.min(...downloads.map((d) => d.sentAt));
          const ttfbAfterUpstream = downloads.map((d) => d.firstAt - upFirst).sort((a, b) => a - b);
          const m: Record<string, number> = {
            upstreamRatio: front.blobBytes() / sizes.fanInBlob,
            upstreamFetches: front.blobFetches(),
            ttfbAfterUpstreamMedianMs: ttfbAfterUpstream[Math.floor(ttfbAfterUpstream.length / 2)]!,
            ttfbAfterUpstreamMaxMs: ttfbAfterUpstream[ttfbAfterUpstream.length - 1]!,
            lastByteMaxMs: Math.max(...downloads.map((d) => d.lastAt)) - sent,
            lastByteMedianMs: stat(downloads.map((d) => d.lastAt - sent)).median,
          };
          for (const [k, v] of Object.entries(m)) ((runs[name] ??= {})[k] ??= []).push(v);
          log(`coldFanIn round ${round + 1} ${name}: upstream ×${m.upstreamRatio!.toFixed(2)} (${m.upstreamFetches} fetches), first byte ≤ ${m.ttfbAfterUpstreamMaxMs!.toFixed(0)} ms after upstream's, last byte ${m.lastByteMaxMs!.toFixed(0)} ms`);
          await t.stop();
          live.splice(live.indexOf(t), 1);
        }
      }
      for (const [name, r] of Object.entries(runs)) result.targets[name] = Object.fromEntries(Object.entries(r).map(([k, v]) => [k, stat(v)]));
      scenarios.coldFanIn = result;
      await front.stop();
      front = undefined;
    }

    // ---- 4. memory: distinct cold big blobs at once
    if (only.has('memory')) {
      const digests: string[] = [];
      for (let i = 0; i < sizes.memoryClients; i++) digests.push(await seedBlob(up, 'bench/memory', randomBytes(sizes.memoryBlob)));
      const result: ScenarioResult = {
        title: `Memory: peak RSS while ${sizes.memoryClients} clients download distinct cold ${sizes.memoryBlob / MiB} MiB blobs at once (unthrottled upstream)`,
        targets: {},
        notes: [],
      };
      const starters: Array<[string, (u: string) => Promise<Target>]> = [
        ['archway', startArchwayTarget],
        ['distribution', startDistributionProxy],
      ];
      const runs: Record<string, Record<string, number[]>> = {};
      for (let round = 0; round < rounds; round++) {
        for (const [name, start] of starters) {
          const t = keep(await start(up.url));
          const idleKiB = await procStatusKiB(t.pid, 'VmRSS');
          const t0 = performance.now();
          const downloads = await Promise.all(digests.map((d) => download(`${t.url}/v2/bench/memory/blobs/${d}`)));
          const seconds = (performance.now() - t0) / 1000;
          const bad = downloads.filter((d) => d.status !== 200 || d.bytes !== sizes.memoryBlob);
          if (bad.length > 0) result.notes.push(`${name} round ${round + 1}: ${bad.length} bad downloads`);
          const peakKiB = await procStatusKiB(t.pid, 'VmHWM');
          const m = {
            peakRssMiB: peakKiB / 1024,
            idleRssMiB: idleKiB / 1024,
            seconds,
            aggregateGBps: (sizes.memoryBlob * sizes.memoryClients) / seconds / 1e9,
          };
          for (const [k, v] of Object.entries(m)) ((runs[name] ??= {})[k] ??= []).push(v);
          log(`memory round ${round + 1} ${name}: peak RSS ${m.peakRssMiB.toFixed(0)} MiB (idle ${m.idleRssMiB.toFixed(0)}), ${seconds.toFixed(1)} s`);
          await t.stop();
          live.splice(live.indexOf(t), 1);
        }
      }
      for (const [name, r] of Object.entries(runs)) result.targets[name] = Object.fromEntries(Object.entries(r).map(([k, v]) => [k, stat(v)]));
      scenarios.memory = result;
    }

    // ---- 5. real pulls: docker pull straight from the upstream vs through a warm proxy
    if (only.has('dockerPull')) {
      const proxies: Target[] = [];
      for (const start of [startArchwayTarget, startDistributionProxy]) proxies.push(keep(await start(up.url)));
      scenarios.dockerPull = await dockerPull(up, proxies, image.manifests[0]!.configDigest, sizes, rounds, log);
      await stopAll(proxies);
      for (const t of proxies) live.splice(live.indexOf(t), 1);
    }

    // ---- 6. cache scale: start on 100,000 cached blobs
    if (only.has('scale')) scenarios.scale = await scale(up, work, sizes, rounds, log);
  } finally {
    await stopAll(live);
    await front?.stop();
    await upstream?.stop();
    await removeDir(work).catch(() => undefined);
    process.off('exit', killLive);
  }

  const result: BenchResult = {
    timestamp: new Date().toISOString(),
    commit: await gitCommit(),
    quick: opts.quick,
    rounds,
    command: opts.quick ? 'npm run bench -- --quick' : `npm run bench${opts.rounds !== 3 ? ` -- --rounds ${opts.rounds}` : ''}`,
    machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? 'unknown', memoryGiB: Math.round(totalmem() / 1024 ** 3), platform: `${process.platform} ${process.arch}` },
    versions: { node: process.version, nginx: await nginxVersion(), distribution: await distributionVersion(), wrk: await wrkVersion() },
    sizes: { ...sizes },
    scenarios,
    durationMs: performance.now() - started,
  };
  if (opts.write ?? true) {
    const dir = opts.resultsDir ?? join(ROOT, 'bench', 'results');
    await mkdir(dir, { recursive: true });
    const file = join(dir, `${result.timestamp.replace(/[:.]/g, '-')}.json`);
    await writeFile(file, `${JSON.stringify(result, null, 2)}\n`);
    log(`wrote ${file}`);
  }
  return result;
}

async function warmManifest(targets: Target[], up: RegistryHandle, sizes: Sizes, rounds: number, log: (l: string) => void): Promise<ScenarioResult> {
  const path = '/v2/bench/image/manifests/v1';
  const headers = { accept: ACCEPT_MANIFESTS };
  for (const t of targets) {
    for (let i = 0; i < 2; i++) {
      const r = await fetchBody(`${t.url}${path}`, headers);
      if (r.status !== 200) throw new Error(`${t.name}: warm-up GET ${path} → ${r.status} ${r.body.toString()}`);
      if (i === 1 && t.name === 'nginx-cache' && r.headers['x-cache-status'] !== 'HIT') throw new Error(`nginx manifest cache not warm: ${String(r.headers['x-cache-status'])}`);
    }
  }
  const result: ScenarioResult = { title: 'Warm manifest by tag: GET /v2/<name>/manifests/<tag> within the tag TTL, 16 connections (wrk)', targets: {}, notes: [] };
  const runs: Record<string, Record<string, number[]>> = {};
  for (let round = 0; round < rounds; round++) {
    for (const t of targets) {
      up.clearRequests();
      const cpuBefore = await cpuSeconds(t.pid);
      const w = await wrk(`${t.url}${path}`, 16, sizes.wrkSeconds, headers);
      const cpu = (await cpuSeconds(t.pid)) - cpuBefore;
      const upReqs = (await up.requests()).length;
      if (w.errors > 0 || w.non2xx > 0) result.notes.push(`${t.name} round ${round + 1}: ${w.errors} socket errors, ${w.non2xx} non-2xx`);
      const m = { rps: w.requests / w.seconds, cpuUsPerRequest: (cpu / w.requests) * 1e6, p50Ms: w.p50Ms, p99Ms: w.p99Ms, upstreamRequests: upReqs };
      for (const [k, v] of Object.entries(m)) ((runs[t.name] ??= {})[k] ??= []).push(v);
      log(`warmManifest round ${round + 1} ${t.name}: ${m.rps.toFixed(0)} req/s, ${m.cpuUsPerRequest.toFixed(0)} µs CPU/request, p50 ${m.p50Ms.toFixed(2)} ms, p99 ${m.p99Ms.toFixed(2)} ms, upstream requests ${upReqs}`);
    }
  }
  for (const [name, r] of Object.entries(runs)) result.targets[name] = Object.fromEntries(Object.entries(r).map(([k, v]) => [k, stat(v)]));
  return result;
}

function bytesLabel(n: number): string {
  return n >= MiB ? `${+(n / MiB).toFixed(1)} MiB` : `${+(n / 1024).toFixed(1)} KiB`;
}

/** Removes every image from the daemon, and checks nothing is left, so the next pull downloads and extracts every layer. */
async function removeImages(d: DockerdHandle, ref: string): Promise<void> {
  await d.rmi(ref);
  await d.docker(['image', 'prune', '--all', '--force']);
  const left = (await d.docker(['image', 'ls', '--all', '--quiet'])).stdout.trim();
  if (left) throw new Error(`images left in dockerd after rmi + prune: ${left}`);
}

/**
 * Scenario 5: `docker pull` of the seeded 5-layer image by a real dockerd,
 * straight from the upstream (an insecure registry on loopback) and through
 * each warm proxy as dockerd's registry mirror (the image named as a Docker
 * Hub one with a slash, so no library/ prefix: the mirror is asked for
 * /v2/bench/image/..., which both proxies map to the same upstream repository).
 *
 * Every target gets a freshly started dockerd each round; its first pull is
 * not timed (it warms the proxy's cache, and the daemon), the image is
 * removed, and the second pull is the timed one.
 */
async function dockerPull(up: RegistryHandle, proxies: Target[], configDigest: string, sizes: Sizes, rounds: number, log: (l: string) => void): Promise<ScenarioResult> {
  const UPSTREAM = 'upstream (direct)';
  const pulls: Array<{ name: string; mirror: string; ref: string; extraArgs: string[] }> = [
    // dockerd needs a mirror; pulls naming another registry never use it.
    { name: UPSTREAM, mirror: up.url, ref: `${up.hostPort}/bench/image:v1`, extraArgs: ['--insecure-registry', up.hostPort] },
    ...proxies.map((t) => ({ name: t.name, mirror: t.url, ref: 'bench/image:v1', extraArgs: [] })),
  ];
  const runs: Record<string, Record<string, number[]>> = {};
  let dockerdVersion = 'unknown';
  let dockerd: DockerdHandle | undefined;
  try {
    for (let round = 0; round < rounds; round++) {
      let upstreamSeconds = NaN;
      for (const p of pulls) {
        const d = await startDockerd({ mirror: p.mirror, extraArgs: p.extraArgs });
        dockerd = d;
        dockerdVersion = (await d.docker(['version', '--format', '{{.Server.Version}}'])).stdout.trim() || dockerdVersion;
        const check = async (): Promise<void> => {
          const id = await d.imageId(p.ref);
          if (id !== configDigest) throw new Error(`${p.name}: pulled image ${id}, expected ${configDigest}`);
          await removeImages(d, p.ref);
        };
        // Untimed: warms the proxy's cache (and the daemon).
        await d.pull(p.ref);
        await check();
        await sleep(200); // a cache fill may still be finishing after the client
        up.clearRequests();
        const t0 = performance.now();
        await d.pull(p.ref);
        const seconds = (performance.now() - t0) / 1000;
        const reqs = await up.requests();
        await check();
        await d.stop();
        dockerd = undefined;
        if (p.name === UPSTREAM) upstreamSeconds = seconds;
        const m = {
          seconds,
          ratioToUpstream: seconds / upstreamSeconds,
          upstreamBlobRequests: reqs.filter((r) => r.path.includes('/blobs/')).length,
          upstreamRequests: reqs.length,
        };
        for (const [k, v] of Object.entries(m)) ((runs[p.name] ??= {})[k] ??= []).push(v);
        log(`dockerPull round ${round + 1} ${p.name}: ${seconds.toFixed(2)} s (${m.ratioToUpstream.toFixed(2)}× direct), upstream requests ${m.upstreamRequests} (blobs ${m.upstreamBlobRequests})`);
      }
    }
  } finally {
    await dockerd?.stop();
  }
  const result: ScenarioResult = {
    title: `Real pulls: \`docker pull\` of a 5-layer image (5 × ${bytesLabel(sizes.imageLayer)} incompressible) by dockerd ${dockerdVersion}, straight from the upstream and through a warm proxy as its registry mirror`,
    targets: {},
    notes: [
      'Each timed pull is the second one on a freshly started dockerd (vfs storage driver); the first, untimed, warms the proxy. Before every pull the image is removed and pruned, so each pull downloads and extracts all 5 layers. Seconds are the `docker pull` command\'s wall time; the ratio is to the direct pull of the same round. Upstream requests are those the upstream saw during the timed pull (for the direct pull: the pull itself).',
    ],
  };
  for (const [name, r] of Object.entries(runs)) result.targets[name] = Object.fromEntries(Object.entries(r).map(([k, v]) => [k, stat(v)]));
  return result;
}

/** GET until 200 (fresh connection each try); resolves with performance.now() of the answer. */
async function pollUntil200(url: string, deadline: number): Promise<number> {
  for (;;) {
    try {
      const r = await download(url);
      if (r.status === 200) return r.lastAt;
    } catch {
      /* not listening yet */
    }
    if (performance.now() > deadline) throw new Error(`${url} did not answer 200 in time`);
    await sleep(5);
  }
}

async function scale(up: RegistryHandle, work: string, sizes: Sizes, rounds: number, log: (l: string) => void): Promise<ScenarioResult> {
  const cacheDir = join(work, 'scale-cache');
  const emptyDir = join(work, 'scale-empty');
  const t0 = performance.now();
  // Small blobs of 256–1279 bytes straight into archway's cache layout; the first is also upstream.
  let first: Buffer | undefined;
  const made = new Set<string>();
  const batch: Array<Promise<void>> = [];
  for (let i = 0; i < sizes.scaleBlobs; i++) {
    const data = Buffer.alloc(256 + (i % 1024), `archway-bench-scale-${i}|`);
    const hex = sha256Hex(data);
    first ??= data;
    const shard = join(cacheDir, 'blobs', 'sha256', hex.slice(0, 2));
    if (!made.has(shard)) {
      made.add(shard);
      await mkdir(shard, { recursive: true });
    }
    batch.push(writeFile(join(shard, hex), data));
    if (batch.length >= 256) await Promise.all(batch.splice(0));
  }
  await Promise.all(batch);
  const digest = await seedBlob(up, 'bench/scale', first!);
  log(`scale: wrote ${sizes.scaleBlobs} blobs in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

  const result: ScenarioResult = {
    title: `Cache scale: archway started on a cache of ${sizes.scaleBlobs.toLocaleString('en-US')} small blobs (and, for reference, on an empty cache)`,
    targets: {},
    notes: [],
  };
  const runs: Record<string, Record<string, number[]>> = {};
  for (let round = 0; round < rounds; round++) {
    for (const [name, dir] of [
      [`archway (${sizes.scaleBlobs} blobs)`, cacheDir],
      ['archway (empty cache)', emptyDir],
    ] as const) {
      await mkdir(dir, { recursive: true });
      const port = await freePort();
      const configPath = join(work, `scale-${round}-${port}.yaml`);
      await writeFile(configPath, stringify({ ...archwayConfig(up.url, dir), server: { host: '127.0.0.1', port } }));
      const spawnedAt = performance.now();
      const child = spawn(process.execPath, [...archwayEntry(true), '--config', configPath], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      try {
        const deadline = spawnedAt + 120_000;
        const healthAt = await pollUntil200(`http://127.0.0.1:${port}/healthz`, deadline);
        // The cached blob (only the first is also upstream; either way it is in the cache).
        const blobUrl = `http://127.0.0.1:${port}/v2/bench/scale/blobs/${digest}`;
        const servedAt = await pollUntil200(blobUrl, deadline);
        const m = {
          healthzMs: healthAt - spawnedAt,
          servedMs: servedAt - spawnedAt,
          rssMiB: (await procStatusKiB(child.pid!, 'VmRSS')) / 1024,
          peakRssMiB: (await procStatusKiB(child.pid!, 'VmHWM')) / 1024,
        };
        for (const [k, v] of Object.entries(m)) ((runs[name] ??= {})[k] ??= []).push(v);
        log(`scale round ${round + 1} ${name}: /healthz after ${m.healthzMs.toFixed(0)} ms, blob served after ${m.servedMs.toFixed(0)} ms, RSS ${m.rssMiB.toFixed(0)} MiB`);
      } catch (err) {
        throw new Error(`${err instanceof Error ? err.message : String(err)}\n${stderr}`);
      } finally {
        child.kill('SIGKILL');
        await new Promise((r) => (child.exitCode !== null || child.signalCode !== null ? r(undefined) : child.once('exit', r)));
      }
      if (dir === emptyDir) await removeDir(emptyDir).catch(() => undefined);
    }
  }
  for (const [name, r] of Object.entries(runs)) result.targets[name] = Object.fromEntries(Object.entries(r).map(([k, v]) => [k, stat(v)]));
  result.notes.push(
    'Times are from spawning `node dist/main.js` (the compiled build the container image runs) until the answer; the empty-cache row is the start-up cost without any blobs. The blob index is built in the background: lookups ask the disk until it is complete, so serving does not wait for it.',
  );
  return result;
}

async function gitCommit(): Promise<string> {
  const r = await run('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, allowFail: true });
  const dirty = await run('git', ['status', '--porcelain', '--', 'src'], { cwd: ROOT, allowFail: true });
  return `${r.stdout.trim()}${dirty.stdout.trim() ? ' (src/ modified)' : ''}`;
}

async function distributionVersion(): Promise<string> {
  const r = await run('docker-registry', ['--version'], { allowFail: true });
  return r.stdout.trim().split(/\s+/).pop() ?? 'unknown';
}

async function wrkVersion(): Promise<string> {
  const r = await run('wrk', ['-v'], { allowFail: true });
  return /wrk (\S+)/.exec(r.stdout + r.stderr)?.[1] ?? 'unknown';
}

// ---------------------------------------------------------------------------
// BENCHMARKS.md

const BEGIN = '<!-- bench:begin (generated by npm run bench; edit outside these markers) -->';
const END = '<!-- bench:end -->';

function f(n: number | undefined, digits = 2): string {
  return n === undefined || Number.isNaN(n) ? '–' : n.toFixed(digits);
}

function cell(s: Stat | undefined, digits = 2): string {
  if (!s) return '–';
  return s.runs.length > 1 ? `${f(s.median, digits)} (${f(s.min, digits)}–${f(s.max, digits)})` : f(s.median, digits);
}

export function renderTable(r: BenchResult): string {
  const lines: string[] = [];
  const s = r.scenarios;
  lines.push(BEGIN, '');
  lines.push(`Run ${r.timestamp} on commit ${r.commit}${r.quick ? ' (--quick: tiny sizes, one round; not figures to quote)' : ''}: ${r.rounds} round${r.rounds === 1 ? '' : 's'}, targets in alternation; each cell is the median (min–max over rounds).`);
  lines.push('');
  lines.push(`Machine: ${r.machine.cpus} × ${r.machine.cpuModel}, ${r.machine.memoryGiB} GiB, ${r.machine.platform}. Node ${r.versions.node}, nginx ${r.versions.nginx}, distribution ${r.versions.distribution}, wrk ${r.versions.wrk}. Everything on loopback, load generator on the same 2 cores.`);
  lines.push('');
  lines.push(`Reproduce: \`${r.command}\` (results in \`bench/results/<timestamp>.json\`).`);
  lines.push('');
  lines.push('### Goals');
  lines.push('');
  lines.push('| # | Goal | Measured | Holds |');
  lines.push('|---|------|----------|-------|');
  const yes = (b: boolean | undefined) => (b === undefined ? '–' : b ? 'yes' : '**no**');
  if (s.warmBlob) {
    const t = s.warmBlob.targets;
    const a = t.archway?.gbps?.median ?? NaN;
    const ratio = a / (t['nginx-sendfile']?.gbps?.median ?? NaN);
    const ahead = a > (t['nginx-cache']?.gbps?.median ?? Infinity) && a > (t.distribution?.gbps?.median ?? Infinity);
    // Judged on archway as it ships; behind nginx with server.accelRedirect is a separate figure.
    const accel = (t['archway-accel']?.gbps?.median ?? NaN) / (t['nginx-sendfile']?.gbps?.median ?? NaN);
    lines.push(`| 1 | warm blob: archway ≥ 0.9× nginx sendfile, ahead of both peers | ${f(ratio)}× sendfile (behind nginx with X-Accel-Redirect: ${f(accel)}×); nginx cache ${f((t['nginx-cache']?.gbps?.median ?? NaN) / (t['nginx-sendfile']?.gbps?.median ?? NaN))}×, distribution ${f((t.distribution?.gbps?.median ?? NaN) / (t['nginx-sendfile']?.gbps?.median ?? NaN))}× | ${yes(ratio >= 0.9 && ahead)} |`);
  }
  if (s.warmManifest) {
    const t = s.warmManifest.targets;
    const ratio = (t.archway?.rps?.median ?? NaN) / (t['nginx-cache']?.rps?.median ?? NaN);
    lines.push(`| 2 | warm manifest by tag: archway ≥ 0.5× nginx caching proxy | ${f(ratio)}× (distribution ${f((t.distribution?.rps?.median ?? NaN) / (t['nginx-cache']?.rps?.median ?? NaN), 3)}×) | ${yes(ratio >= 0.5)} |`);
  }
  if (s.coldFanIn) {
    const a = s.coldFanIn.targets.archway;
    const ratio = a?.upstreamRatio?.median;
    const ttfb = a?.ttfbAfterUpstreamMaxMs?.max;
    lines.push(`| 3 | cold fan-in: upstream bytes ÷ blob = 1.00 | ${f(ratio)} (worst round ${f(a?.upstreamRatio?.max)}) | ${yes(ratio !== undefined && (a?.upstreamRatio?.max ?? 9) < 1.005)} |`);
    lines.push(`| 3 | cold fan-in: every client's first byte ≤ 100 ms after the upstream's | worst client, worst round: ${f(ttfb, 0)} ms | ${yes(ttfb !== undefined && ttfb <= 100)} |`);
  }
  if (s.memory) {
    const peak = s.memory.targets.archway?.peakRssMiB?.max;
    lines.push(`| 4 | memory: archway peak RSS < 200 MiB (16 × ${r.sizes.memoryBlob! / MiB} MiB cold) | worst round ${f(peak, 0)} MiB (distribution ${f(s.memory.targets.distribution?.peakRssMiB?.max, 0)} MiB) | ${yes(peak !== undefined && peak < 200)} |`);
  }
  if (s.dockerPull) {
    const t = s.dockerPull.targets;
    const ratio = t.archway?.ratioToUpstream?.median;
    lines.push(`| 5 | docker pull through warm archway ≤ 1.1× straight from upstream | ${f(ratio)}× (distribution ${f(t.distribution?.ratioToUpstream?.median)}×) | ${yes(ratio === undefined ? undefined : ratio <= 1.1)} |`);
  } else {
    lines.push(`| 5 | docker pull through warm archway ≤ 1.1× straight from upstream | not measured in this run | – |`);
  }
  if (s.scale) {
    const key = Object.keys(s.scale.targets).find((k) => !k.includes('empty'));
    const served = key ? s.scale.targets[key]?.servedMs?.max : undefined;
    lines.push(`| 6 | cache scale: serving within 2 s on ${r.sizes.scaleBlobs} blobs | worst round ${f(served !== undefined ? served / 1000 : undefined)} s, RSS ${f(key ? s.scale.targets[key]?.rssMiB?.median : undefined, 0)} MiB | ${yes(served !== undefined && served <= 2000)} |`);
  }
  lines.push('');
  const section = (res: ScenarioResult | undefined, n: number, cols: Array<[string, string, number]>) => {
    if (!res) return;
    lines.push(`### ${n}. ${res.title}`, '');
    lines.push(`| target | ${cols.map((c) => c[1]).join(' | ')} |`);
    lines.push(`|---|${cols.map(() => '---').join('|')}|`);
    for (const [name, m] of Object.entries(res.targets)) lines.push(`| ${name} | ${cols.map(([k, , d]) => cell(m[k], d)).join(' | ')} |`);
    for (const note of res.notes) lines.push('', `- ${note}`);
    lines.push('');
  };
  section(s.warmBlob, 1, [
    ['gbps', 'GB/s', 2],
    ['cpuPerGB', 'CPU s per GB', 3],
    ['upstreamBlobRequests', 'upstream blob requests during the run', 0],
  ]);
  section(s.warmManifest, 2, [
    ['rps', 'req/s', 0],
    ['cpuUsPerRequest', 'CPU µs per request', 0],
    ['p50Ms', 'p50 ms', 2],
    ['p99Ms', 'p99 ms', 2],
    ['upstreamRequests', 'upstream requests during the run', 0],
  ]);
  section(s.coldFanIn, 3, [
    ['upstreamRatio', 'upstream bytes ÷ blob', 2],
    ['upstreamFetches', 'upstream fetches', 0],
    ['ttfbAfterUpstreamMedianMs', 'first byte after upstream\'s, median client (ms)', 0],
    ['ttfbAfterUpstreamMaxMs', 'first byte after upstream\'s, last client (ms)', 0],
    ['lastByteMedianMs', 'last byte, median client (ms)', 0],
    ['lastByteMaxMs', 'last byte, last client (ms)', 0],
  ]);
  section(s.memory, 4, [
    ['peakRssMiB', 'peak RSS MiB (VmHWM)', 0],
    ['idleRssMiB', 'RSS before, MiB', 0],
    ['seconds', 'seconds for all', 1],
    ['aggregateGBps', 'aggregate GB/s', 2],
  ]);
  section(s.dockerPull, 5, [
    ['seconds', 'seconds for the pull', 2],
    ['ratioToUpstream', '× the direct pull', 2],
    ['upstreamBlobRequests', 'upstream blob requests during the pull', 0],
    ['upstreamRequests', 'upstream requests during the pull', 0],
  ]);
  section(s.scale, 6, [
    ['healthzMs', '/healthz answers after (ms)', 0],
    ['servedMs', 'cached blob served after (ms)', 0],
    ['rssMiB', 'RSS MiB', 0],
    ['peakRssMiB', 'peak RSS MiB', 0],
  ]);
  lines.push(END);
  return lines.join('\n');
}

export async function writeBenchmarksMd(r: BenchResult, file = join(ROOT, 'BENCHMARKS.md')): Promise<void> {
  const table = renderTable(r);
  let text: string;
  if (existsSync(file)) {
    const old = await readFile(file, 'utf8');
    const b = old.indexOf(BEGIN);
    const e = old.indexOf(END);
    text = b !== -1 && e !== -1 ? `${old.slice(0, b)}${table}${old.slice(e + END.length)}` : `${old.trimEnd()}\n\n${table}\n`;
  } else {
    text = `# Benchmarks\n\n${table}\n`;
  }
  await writeFile(file, text);
}

// ---------------------------------------------------------------------------
// CLI

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      quick: { type: 'boolean', default: false },
      rounds: { type: 'string', default: '3' },
      only: { type: 'string' },
      'no-write': { type: 'boolean', default: false },
      'results-dir': { type: 'string' },
    },
  });
  const only = values.only?.split(',').map((s) => s.trim()) as ScenarioName[] | undefined;
  for (const o of only ?? []) if (!SCENARIOS.includes(o)) throw new Error(`unknown scenario ${o}; known: ${SCENARIOS.join(', ')}`);
  const write = !values['no-write'];
  const result = await runBench({
    quick: values.quick,
    rounds: Number(values.rounds),
    ...(only ? { only } : {}),
    write,
    ...(values['results-dir'] ? { resultsDir: values['results-dir'] } : {}),
    log: (l) => console.log(l),
  });
  console.log(renderTable(result));
  // A quick run never overwrites the published figures.
  if (write && !values.quick) await writeBenchmarksMd(result);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  process.chdir(ROOT);
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
