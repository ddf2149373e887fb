// Soak: many concurrent clients pull a mix of manifests and blobs of 20
// multi-platform images through archway (its own process) from a real
// registry, verifying the digest of every byte they receive, while the
// registry is stopped and restarted. Counts requests, bytes, corrupt bodies
// and errors (each classified: was the upstream down, was the content
// already cached?), and samples archway's RSS and open file descriptors.
//
//   npm run soak                          # 5 minutes, 64 clients; updates RELIABILITY.md
//   npm run soak -- --duration 60 --clients 16 --no-write
//
// test/e2e/soak.test.ts runs the same code for ~25 s inside `npm test`.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readdir, readFile, readlink, writeFile } from 'node:fs/promises';
import { cpus, totalmem } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { Agent, request } from 'undici';
import { startArchwayProcess, type ArchwayProcess } from '../test/harness/archway-process.ts';
import { ALL_PLATFORMS, buildImage, type BuiltImage, type Platform } from '../test/harness/images.ts';
import { startRegistry, type RegistryHandle } from '../test/harness/registry.ts';
import { removeDir, tempDir } from '../test/harness/tmp.ts';

export interface SoakOptions {
  durationMs: number;
  clients: number;
  /** Multi-platform images in the registry (default 20). */
  images?: number;
  platformsPerImage?: number;
  /** Upstream restarts, spread evenly over the run (default 2). */
  restarts?: number;
  /** How long the upstream stays down each time. */
  downtimeMs?: number;
  sampleEveryMs?: number;
  /**
   * After the load, how long to wait for descriptors to come back to where they were (default 10 s);
   * archway keeps idle upstream connections 30 s, so 35 s or more lets those close too.
   */
  settleMs?: number;
  /** Progress lines; default silent. */
  log?: (line: string) => void;
}

export interface Sample {
  /** ms since the load started */
  t: number;
  rssKiB: number;
  fds: number;
  requests: number;
}

export interface SoakError {
  t: number;
  kind: Kind;
  status: number;
  code: string;
  upstreamDown: boolean;
  cachedBefore: boolean;
  expected: boolean;
  what: string;
}

type Kind = 'tag' | 'manifest' | 'blob' | 'blob-range' | 'head';

export interface SoakResult {
  options: Required<Omit<SoakOptions, 'log'>>;
  durationMs: number;
  setupMs: number;
  requests: number;
  byKind: Record<Kind, number>;
  bytes: number;
  verifiedBodies: number;
  corrupt: number;
  corruptDetails: string[];
  errors: SoakError[];
  /** "kind status code upstream:down|up cached|uncached expected|UNEXPECTED" → count */
  errorCounts: Record<string, number>;
  unexpectedErrors: number;
  /** Distinct tags, manifests and blobs that failed at least once. */
  failedKeys: number;
  /** Of those, the ones never served successfully after their last failure (must be none). */
  unrecovered: string[];
  downtimes: Array<{ from: number; to: number }>;
  samples: Sample[];
  /** Before the load, and after it ended and connections settled. */
  fdsBefore: FdBreakdown;
  fdsAfter: FdBreakdown;
  rss: { firstMiB: number; lastMiB: number; maxMiB: number; middleThirdMaxMiB: number; lastThirdMaxMiB: number };
  fds: { first: number; last: number; max: number };
  archwayAlive: boolean;
  machine: { cpus: number; cpuModel: string; memoryGiB: number; node: string; platform: string };
}

const KiB = 1024;
/** A request overlapping [stop - BEFORE, up + GRACE] counts as during the downtime. */
const DOWN_BEFORE_MS = 500;
const DOWN_GRACE_MS = 3000;

const ACCEPT_ALL = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

interface Target {
  repo: string;
  image: BuiltImage;
}

export async function runSoak(opts: SoakOptions): Promise<SoakResult> {
  const options = {
    durationMs: opts.durationMs,
    clients: opts.clients,
    images: opts.images ?? 20,
    platformsPerImage: opts.platformsPerImage ?? 3,
    restarts: opts.restarts ?? 2,
    downtimeMs: opts.downtimeMs ?? 5000,
    sampleEveryMs: opts.sampleEveryMs ?? 2000,
    settleMs: opts.settleMs ?? 10_000,
  };
  const log = opts.log ?? (() => {});
  const setupStarted = performance.now();
  const work = await tempDir('archway-soak-');
  let registry: RegistryHandle | undefined;
  let archway: ArchwayProcess | undefined;
  const agent = new Agent({ connections: options.clients * 2, keepAliveTimeout: 10_000, headersTimeout: 30_000, bodyTimeout: 30_000 });
  try {
    registry = await startRegistry();
    const targets: Target[] = [];
    for (let i = 0; i < options.images; i++) {
      // Every image has amd64 and arm64, and one or more of the others, in turn; OCI and Docker alternate.
      const others = ALL_PLATFORMS.slice(2);
      const platforms: Platform[] = [ALL_PLATFORMS[0]!, ALL_PLATFORMS[1]!];
      for (let k = 0; platforms.length < options.platformsPerImage && k < others.length; k++) platforms.push(others[(i + k) % others.length]!);
      const image = await buildImage({
        dir: join(work, `img-${i}`),
        tag: 'v1',
        platforms,
        format: i % 2 === 0 ? 'oci' : 'docker',
        // 64–512 KiB: a bigger layer of varying size and a small one.
        layerSizes: [64 * KiB + ((i * 97) % 449) * KiB, 64 * KiB],
        seed: `soak-${i}`,
      });
      targets.push({ repo: `soak/img-${String(i).padStart(2, '0')}`, image });
    }
    await pushAll(registry.url, targets);
    const blobBytes = new Map<string, Buffer>();
    for (const { image } of targets) for (const [digest, b] of image.blobs) blobBytes.set(digest, await readFile(b.path));

    archway = await startArchwayProcess({
      upstreams: { 'docker.io': { url: registry.url } },
      defaultUpstream: 'docker.io',
      // Tags revalidate often, so the outages exercise stale serving too.
      cache: { tagTtl: '5s' },
      timeouts: { connect: '2s', headers: '10s', bodyIdle: '10s', revalidate: '2s' },
      log: { level: 'warn' },
    });
    const pid = archway.child.pid!;
    const setupMs = performance.now() - setupStarted;
    log(`setup ${Math.round(setupMs)} ms: ${targets.length} images, ${blobBytes.size} blobs, ${(sum([...blobBytes.values()].map((b) => b.length)) / 1024 / 1024).toFixed(1)} MiB; archway pid ${pid}`);

    // ---- load
    const fdsBefore = await fdBreakdown(pid, registry.port);
    const started = performance.now();
    const now = () => performance.now() - started;
    const endAt = options.durationMs;
    const downtimes: Array<{ from: number; to: number }> = [];
    const movedUnlocks = new Set<number>();
    let upstreamDown = false;
    /** key → time its first verified answer completed */
    const verifiedAt = new Map<string, number>();
    const lastVerifiedAt = new Map<string, number>();
    const lastFailedAt = new Map<string, number>();
    const byKind: Record<Kind, number> = { tag: 0, manifest: 0, blob: 0, 'blob-range': 0, head: 0 };
    let requests = 0;
    let bytes = 0;
    let verifiedBodies = 0;
    const corruptDetails: string[] = [];
    const errors: SoakError[] = [];
    const samples: Sample[] = [];

    // Images become eligible one after another over the first 90% of the run, and one of them in the
    // middle of each downtime, so some content is first asked for while the upstream is down (it must
    // fail cleanly then, and be served once the upstream is back).
    const unlockAt = targets.map((_, k) => (k / targets.length) * endAt * 0.9);
    for (let i = 1; i <= options.restarts; i++) {
      const middle = (endAt * i) / (options.restarts + 1);
      const candidates = unlockAt.map((t, k) => [Math.abs(t - middle), k] as const).filter(([, k]) => k > 0 && !movedUnlocks.has(k));
      const nearest = candidates.sort((a, b) => a[0] - b[0])[0];
      if (nearest) {
        unlockAt[nearest[1]] = middle;
        movedUnlocks.add(nearest[1]);
      }
    }
    const eligible = () => targets.filter((_, k) => unlockAt[k]! <= now());

    const overlapsDowntime = (from: number, to: number) =>
      upstreamDown || downtimes.some((d) => from <= d.to + DOWN_GRACE_MS && to >= d.from - DOWN_BEFORE_MS);

    const fail = (kind: Kind, key: string, what: string, from: number, status: number, code: string) => {
      const to = now();
      const cachedBefore = (verifiedAt.get(key) ?? Infinity) < from;
      const down = overlapsDowntime(from, to);
      const clean = status === 502 || status === 504 || status === 0;
      const expected = down && !cachedBefore && clean;
      lastFailedAt.set(key, to);
      errors.push({ t: Math.round(to), kind, status, code, upstreamDown: down, cachedBefore, expected, what: `${what} (from t=${Math.round(from)})` });
    };

    const fetchVerified = async (kind: Kind, key: string, url: string, headers: Record<string, string>, check: (body: Buffer, h: Record<string, string | string[] | undefined>, status: number) => string | undefined, okStatus: number[]) => {
      const from = now();
      requests++;
      byKind[kind]++;
      let status = 0;
      try {
        const res = await request(url, { headers, dispatcher: agent, method: kind === 'head' ? 'HEAD' : 'GET' });
        status = res.statusCode;
        const chunks: Buffer[] = [];
        for await (const c of res.body) chunks.push(c as Buffer);
        const body = Buffer.concat(chunks);
        bytes += body.length;
        if (!okStatus.includes(status)) {
          let code = '';
          try {
            code = (JSON.parse(body.toString('utf8')) as { errors?: Array<{ code?: string }> }).errors?.[0]?.code ?? '';
          } catch {
            code = kind === 'head' ? '(HEAD, no body)' : 'non-JSON';
          }
          fail(kind, key, url, from, status, code || 'none');
          return;
        }
        const problem = check(body, res.headers, status);
        if (problem) {
          corruptDetails.push(`${kind} ${url}: ${problem}`);
          return;
        }
        verifiedBodies++;
        if (!verifiedAt.has(key)) verifiedAt.set(key, now());
        lastVerifiedAt.set(key, now());
      } catch (err) {
        fail(kind, key, url, from, status, (err as NodeJS.ErrnoException).code ?? (err as Error).name);
      }
    };

    const client = async () => {
      const random = (n: number) => Math.floor(Math.random() * n);
      while (now() < endAt) {
        const open = eligible();
        const target = open[random(open.length)]!;
        const { image, repo } = target;
        const m = image.manifests[random(image.manifests.length)]!;
        const base = `${archway!.url}/v2/${repo}`;
        // The tag: always the index, byte for byte.
        await fetchVerified('tag', `tag ${repo}`, `${base}/manifests/v1`, { accept: ACCEPT_ALL }, (body, h) => {
          const d = sha256(body);
          if (d !== image.topDigest) return `tag body ${d} is not ${image.topDigest}`;
          if (h['docker-content-digest'] !== image.topDigest) return `Docker-Content-Digest ${String(h['docker-content-digest'])}`;
          return undefined;
        }, [200]);
        if (random(10) === 0) {
          await fetchVerified('head', `tag ${repo}`, `${base}/manifests/v1`, { accept: ACCEPT_ALL }, (body, h) =>
            body.length === 0 && h['docker-content-digest'] === image.topDigest ? undefined : `HEAD: ${body.length} bytes, ${String(h['docker-content-digest'])}`, [200]);
        }
        // The platform's manifest by digest.
        await fetchVerified('manifest', m.digest, `${base}/manifests/${m.digest}`, { accept: ACCEPT_ALL }, (body) => (sha256(body) === m.digest ? undefined : `manifest body is not ${m.digest}`), [200]);
        // Its config and layers; now and then a byte range of a layer.
        for (const d of [m.configDigest, ...m.layers.map((l) => l.digest)]) {
          const full = blobBytes.get(d)!;
          if (random(8) === 0 && full.length > 2) {
            const s = random(full.length - 1);
            const e = s + random(full.length - s);
            await fetchVerified('blob-range', d, `${base}/blobs/${d}`, { range: `bytes=${s}-${e}` }, (body, h, status) => {
              if (status === 206) return body.equals(full.subarray(s, e + 1)) && h['content-range'] === `bytes ${s}-${e}/${full.length}` ? undefined : `range ${s}-${e} wrong`;
              return sha256(body) === d ? undefined : `ignored range, body is not ${d}`;
            }, [200, 206]);
          } else {
            await fetchVerified('blob', d, `${base}/blobs/${d}`, {}, (body) => (sha256(body) === d && body.length === full.length ? undefined : `blob body (${body.length} bytes) is not ${d}`), [200]);
          }
        }
      }
    };

    const sampler = (async () => {
      while (now() < endAt) {
        samples.push({ t: Math.round(now()), rssKiB: await rssKiB(pid), fds: await countFds(pid), requests });
        await sleep(options.sampleEveryMs);
      }
    })();

    const restarter = (async () => {
      for (let i = 1; i <= options.restarts; i++) {
        const at = (endAt * i) / (options.restarts + 1) - options.downtimeMs / 2;
        await sleep(Math.max(0, at - now()));
        const from = now();
        upstreamDown = true;
        log(`t=${(from / 1000).toFixed(1)}s upstream stopped (${requests} requests so far)`);
        await registry!.stop();
        await sleep(options.downtimeMs);
        await registry!.restart();
        const to = now();
        upstreamDown = false;
        downtimes.push({ from: Math.round(from), to: Math.round(to) });
        log(`t=${(to / 1000).toFixed(1)}s upstream back`);
      }
    })();

    const progress = setInterval(() => log(`t=${(now() / 1000).toFixed(0)}s requests=${requests} errors=${errors.length} corrupt=${corruptDetails.length} rss=${samples.at(-1) ? Math.round(samples.at(-1)!.rssKiB / 1024) : '?'}MiB fds=${samples.at(-1)?.fds ?? '?'}`), 30_000);
    await Promise.all([...Array.from({ length: options.clients }, () => client()), sampler, restarter]);
    clearInterval(progress);
    const durationMs = now();
    samples.push({ t: Math.round(now()), rssKiB: await rssKiB(pid), fds: await countFds(pid), requests });

    // ---- settle: our connections close; archway's idle upstream connections may stay (keep-alive), bounded.
    await agent.close();
    let fdsAfter = await fdBreakdown(pid, registry.port);
    for (const deadline = Date.now() + options.settleMs; (fdsAfter.rest > fdsBefore.rest + 2 || fdsAfter.upstream > 0) && Date.now() < deadline; ) {
      await sleep(250);
      fdsAfter = await fdBreakdown(pid, registry.port);
    }
    const archwayAlive = archway.child.exitCode === null && archway.child.signalCode === null;

    // What failed during a downtime must be served again once the upstream is back.
    const unrecovered = [...lastFailedAt].filter(([key, t]) => (lastVerifiedAt.get(key) ?? -1) < t).map(([key]) => key);
    const errorCounts: Record<string, number> = {};
    for (const e of errors) {
      const key = `${e.kind} ${e.status} ${e.code} upstream:${e.upstreamDown ? 'down' : 'up'} ${e.cachedBefore ? 'cached' : 'uncached'} ${e.expected ? 'expected' : 'UNEXPECTED'}`;
      errorCounts[key] = (errorCounts[key] ?? 0) + 1;
    }
    const thirds = (i: number) => samples.filter((s) => s.t >= (durationMs * i) / 3 && s.t <= (durationMs * (i + 1)) / 3 + 1);
    const maxMiB = (xs: Sample[]) => Math.max(0, ...xs.map((s) => s.rssKiB / 1024));
    return {
      options,
      durationMs,
      setupMs,
      requests,
      byKind,
      bytes,
      verifiedBodies,
      corrupt: corruptDetails.length,
      corruptDetails: corruptDetails.slice(0, 50),
      errors,
      errorCounts,
      unexpectedErrors: errors.filter((e) => !e.expected).length,
      failedKeys: lastFailedAt.size,
      unrecovered,
      downtimes,
      samples,
      fdsBefore,
      fdsAfter,
      rss: {
        firstMiB: (samples[0]?.rssKiB ?? 0) / 1024,
        lastMiB: (samples.at(-1)?.rssKiB ?? 0) / 1024,
        maxMiB: maxMiB(samples),
        middleThirdMaxMiB: maxMiB(thirds(1)),
        lastThirdMaxMiB: maxMiB(thirds(2)),
      },
      fds: { first: samples[0]?.fds ?? 0, last: samples.at(-1)?.fds ?? 0, max: Math.max(0, ...samples.map((s) => s.fds)) },
      archwayAlive,
      machine: { cpus: cpus().length, cpuModel: cpus()[0]?.model ?? 'unknown', memoryGiB: Math.round(totalmem() / 1024 ** 3), node: process.version, platform: `${process.platform}/${process.arch}` },
    };
  } finally {
    await agent.destroy().catch(() => {});
    await archway?.kill();
    await registry?.stop();
    await removeDir(work);
  }
}

// ---------------------------------------------------------------------------

/** Push built images with the registry's own upload API (faster than a skopeo per image). */
async function pushAll(registryUrl: string, targets: Target[]): Promise<void> {
  const agent = new Agent({ connections: 8 });
  try {
    let next = 0;
    const worker = async () => {
      while (next < targets.length) {
        const { repo, image } = targets[next++]!;
        const manifestDigests = new Set([image.topDigest, ...image.manifests.map((m) => m.digest), ...image.attestations.map((a) => a.digest)]);
        for (const [digest, blob] of image.blobs) {
          if (manifestDigests.has(digest)) continue;
          const start = await request(`${registryUrl}/v2/${repo}/blobs/uploads/`, { method: 'POST', dispatcher: agent });
          await start.body.dump();
          if (start.statusCode !== 202) throw new Error(`upload start ${repo}: ${start.statusCode}`);
          const location = new URL(String(start.headers.location), registryUrl);
          location.searchParams.set('digest', digest);
          const put = await request(location, { method: 'PUT', body: await readFile(blob.path), headers: { 'content-type': 'application/octet-stream' }, dispatcher: agent });
          await put.body.dump();
          if (put.statusCode !== 201) throw new Error(`upload ${repo} ${digest}: ${put.statusCode}`);
        }
        for (const m of image.manifests) await putManifest(agent, registryUrl, repo, m.digest, m.mediaType, m.bytes);
        await putManifest(agent, registryUrl, repo, image.tag, image.topMediaType, image.topBytes);
      }
    };
    await Promise.all(Array.from({ length: 4 }, worker));
  } finally {
    await agent.close();
  }
}

async function putManifest(agent: Agent, registryUrl: string, repo: string, ref: string, mediaType: string, bytes: Buffer): Promise<void> {
  const res = await request(`${registryUrl}/v2/${repo}/manifests/${ref}`, { method: 'PUT', body: bytes, headers: { 'content-type': mediaType }, dispatcher: agent });
  const text = await res.body.text();
  if (res.statusCode !== 201) throw new Error(`manifest ${repo}:${ref}: ${res.statusCode} ${text}`);
}

function sha256(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

function sum(xs: number[]): number {
  return xs.reduce((a, b) => a + b, 0);
}

async function rssKiB(pid: number): Promise<number> {
  try {
    return Number(/VmRSS:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
  } catch {
    return 0;
  }
}

async function countFds(pid: number): Promise<number> {
  try {
    return (await readdir(`/proc/${pid}/fd`)).length;
  } catch {
    return 0;
  }
}

export interface FdBreakdown {
  total: number;
  /** TCP connections to the upstream registry (idle keep-alive ones stay for archway's 30 s keep-alive timeout). */
  upstream: number;
  /** Everything else: files, client connections, listeners, pipes, epoll. */
  rest: number;
  /** Targets of `rest`, for messages: `socket:[…] :PORT`, file paths, `pipe:[…]`. */
  restTargets: string[];
}

/** The descriptors of a process, with its TCP connections to `upstreamPort` told apart (/proc/<pid>/net/tcp). */
export async function fdBreakdown(pid: number, upstreamPort: number): Promise<FdBreakdown> {
  const remotePort = new Map<string, number>();
  for (const table of ['tcp', 'tcp6']) {
    let text = '';
    try {
      text = await readFile(`/proc/${pid}/net/${table}`, 'utf8');
    } catch {
      continue;
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length < 10) continue;
      const rem = cols[2]!;
      remotePort.set(cols[9]!, parseInt(rem.slice(rem.lastIndexOf(':') + 1), 16));
    }
  }
  let total = 0;
  let upstream = 0;
  const restTargets: string[] = [];
  let fds: string[] = [];
  try {
    fds = await readdir(`/proc/${pid}/fd`);
  } catch {
    return { total: 0, upstream: 0, rest: 0, restTargets: [] };
  }
  for (const fd of fds) {
    let target: string;
    try {
      target = await readlink(`/proc/${pid}/fd/${fd}`);
    } catch {
      continue;
    }
    total++;
    const inode = /^socket:\[(\d+)\]$/.exec(target)?.[1];
    const port = inode === undefined ? undefined : remotePort.get(inode);
    if (port === upstreamPort) upstream++;
    else restTargets.push(port === undefined ? target : `${target} :${port}`);
  }
  return { total, upstream, rest: restTargets.length, restTargets: restTargets.sort() };
}

// ---------------------------------------------------------------------------
// Reporting

export function summarize(r: SoakResult): string {
  const mib = (n: number) => `${n.toFixed(1)} MiB`;
  const lines = [
    `duration ${(r.durationMs / 1000).toFixed(1)} s (setup ${(r.setupMs / 1000).toFixed(1)} s), ${r.options.clients} clients, ${r.options.images} images × ${r.options.platformsPerImage} platforms`,
    `requests ${r.requests} (${Object.entries(r.byKind).map(([k, v]) => `${k} ${v}`).join(', ')}), ${(r.requests / (r.durationMs / 1000)).toFixed(0)}/s`,
    `bytes received ${(r.bytes / 1024 / 1024).toFixed(1)} MiB, bodies verified ${r.verifiedBodies}, corrupt ${r.corrupt}`,
    `upstream down ${r.downtimes.map((d) => `${(d.from / 1000).toFixed(1)}–${(d.to / 1000).toFixed(1)} s`).join(', ') || 'never'}`,
    `errors ${r.errors.length} (unexpected ${r.unexpectedErrors}) on ${r.failedKeys} distinct items, all served again after the upstream came back: ${r.unrecovered.length === 0}${Object.entries(r.errorCounts).map(([k, v]) => `\n  ${v} × ${k}`).join('')}`,
    `RSS first ${mib(r.rss.firstMiB)}, last ${mib(r.rss.lastMiB)}, max ${mib(r.rss.maxMiB)} (middle third max ${mib(r.rss.middleThirdMaxMiB)}, last third max ${mib(r.rss.lastThirdMaxMiB)})`,
    `fds first ${r.fds.first}, last ${r.fds.last}, max ${r.fds.max}; before the load ${r.fdsBefore.total} (${r.fdsBefore.upstream} to the upstream), after it settled ${r.fdsAfter.total} (${r.fdsAfter.upstream} idle to the upstream)`,
    `archway alive at the end: ${r.archwayAlive}`,
    `machine: ${r.machine.cpus} × ${r.machine.cpuModel}, ${r.machine.memoryGiB} GiB, Node ${r.machine.node}, ${r.machine.platform}`,
  ];
  return lines.join('\n');
}

/** A verdict for the command line and the short test: empty when the soak passed. */
export function problems(r: SoakResult, opts: { rssSlackMiB?: number; fdSlack?: number } = {}): string[] {
  const out: string[] = [];
  if (r.corrupt > 0) out.push(`${r.corrupt} corrupt bodies:\n${r.corruptDetails.join('\n')}`);
  if (r.unexpectedErrors > 0) {
    out.push(`${r.unexpectedErrors} unexpected errors:\n${r.errors.filter((e) => !e.expected).slice(0, 20).map((e) => `t=${e.t} ${e.kind} ${e.status} ${e.code} down=${e.upstreamDown} cached=${e.cachedBefore} ${e.what}`).join('\n')}`);
  }
  if (r.unrecovered.length > 0) out.push(`${r.unrecovered.length} items failed during a downtime and were never served afterwards: ${r.unrecovered.slice(0, 10).join(', ')}`);
  if (!r.archwayAlive) out.push('archway died');
  // Client connections, files and temp files must all be gone; idle keep-alive connections to the upstream may stay, a bounded few.
  const fdSlack = opts.fdSlack ?? 2;
  if (r.fdsAfter.rest > r.fdsBefore.rest + fdSlack) {
    out.push(`open fds (other than upstream connections): ${r.fdsBefore.rest} before the load, ${r.fdsAfter.rest} after it settled\nbefore: ${r.fdsBefore.restTargets.join(' ')}\nafter: ${r.fdsAfter.restTargets.join(' ')}`);
  }
  if (r.fdsAfter.upstream > r.options.clients) out.push(`${r.fdsAfter.upstream} connections to the upstream left open`);
  // RSS is flat when the last third peaks no higher than the middle third, with generous slack for GC timing.
  const slack = opts.rssSlackMiB ?? 48;
  if (r.rss.lastThirdMaxMiB > r.rss.middleThirdMaxMiB * 1.25 + slack) out.push(`RSS grew: middle third max ${r.rss.middleThirdMaxMiB.toFixed(1)} MiB, last third max ${r.rss.lastThirdMaxMiB.toFixed(1)} MiB`);
  return out;
}

const BEGIN = '<!-- soak:begin -->';
const END = '<!-- soak:end -->';

/** Replace the figures between the soak markers of RELIABILITY.md. */
export async function writeReliability(path: string, r: SoakResult, command: string, commit: string): Promise<void> {
  const date = new Date().toISOString().slice(0, 10);
  const block = [
    BEGIN,
    `Last run: ${date} on commit ${commit}, \`${command}\` — ${problems(r).length === 0 ? '**passed**' : '**FAILED**'}.`,
    '',
    '| figure | value |',
    '|---|---|',
    `| duration | ${(r.durationMs / 1000).toFixed(1)} s, ${r.options.clients} concurrent clients |`,
    `| images | ${r.options.images} × ${r.options.platformsPerImage} platforms (OCI and Docker, layers 64–512 KiB) |`,
    `| requests | ${r.requests} (${(r.requests / (r.durationMs / 1000)).toFixed(0)}/s): ${Object.entries(r.byKind).map(([k, v]) => `${k} ${v}`).join(', ')} |`,
    `| bytes received and verified | ${(r.bytes / 1024 / 1024).toFixed(1)} MiB, ${r.verifiedBodies} bodies |`,
    `| corrupt bodies | ${r.corrupt} |`,
    `| upstream restarts | ${r.downtimes.length}, down ${r.downtimes.map((d) => `${(d.from / 1000).toFixed(1)}–${(d.to / 1000).toFixed(1)} s`).join(' and ')} |`,
    `| errors | ${r.errors.length}, unexpected ${r.unexpectedErrors}; ${r.failedKeys} distinct items failed, ${r.unrecovered.length} of them not served again once the upstream was back |`,
    ...Object.entries(r.errorCounts).map(([k, v]) => `| &nbsp;&nbsp;${k} | ${v} |`),
    `| archway RSS | first ${r.rss.firstMiB.toFixed(1)} MiB, last ${r.rss.lastMiB.toFixed(1)} MiB, max ${r.rss.maxMiB.toFixed(1)} MiB (max of middle third ${r.rss.middleThirdMaxMiB.toFixed(1)}, of last third ${r.rss.lastThirdMaxMiB.toFixed(1)}) |`,
    `| archway open fds | first ${r.fds.first}, last ${r.fds.last}, max ${r.fds.max}; ${r.fdsBefore.total} before the load, ${r.fdsAfter.total} after it settled (${r.fdsAfter.upstream} of them idle keep-alive connections to the upstream) |`,
    `| archway alive at the end | ${r.archwayAlive ? 'yes' : 'no'} |`,
    `| machine | ${r.machine.cpus} × ${r.machine.cpuModel}, ${r.machine.memoryGiB} GiB RAM, Node ${r.machine.node}, ${r.machine.platform} |`,
    '',
    `RSS and fds, sampled every ${r.options.sampleEveryMs / 1000} s (t in s: RSS MiB / fds):`,
    '',
    '```',
    thin(r.samples, 30).map((s) => `${(s.t / 1000).toFixed(0).padStart(4)}: ${(s.rssKiB / 1024).toFixed(0).padStart(4)} / ${String(s.fds).padStart(4)}`).join('\n'),
    '```',
    END,
  ].join('\n');
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    text = `# Reliability\n\n${BEGIN}\n${END}\n`;
  }
  const from = text.indexOf(BEGIN);
  const to = text.indexOf(END);
  text = from >= 0 && to > from ? text.slice(0, from) + block + text.slice(to + END.length) : `${text.trimEnd()}\n\n${block}\n`;
  await writeFile(path, text);
}

function gitCommit(): string {
  try {
    const id = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--', 'src'], { encoding: 'utf8' }).trim() !== '';
    return dirty ? `${id} (with uncommitted changes in src/)` : id;
  } catch {
    return 'unknown';
  }
}

function thin<T>(xs: T[], n: number): T[] {
  if (xs.length <= n) return xs;
  const step = (xs.length - 1) / (n - 1);
  return Array.from({ length: n }, (_, i) => xs[Math.round(i * step)]!);
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      duration: { type: 'string', default: '300' },
      clients: { type: 'string', default: '64' },
      images: { type: 'string', default: '20' },
      'no-write': { type: 'boolean', default: false },
      json: { type: 'string' },
    },
  });
  const args = process.argv.slice(2).join(' ');
  const command = `npm run soak${args ? ` -- ${args}` : ''}`;
  // The code under test is what was checked out when archway started.
  const commit = gitCommit();
  const result = await runSoak({
    durationMs: Number(values.duration) * 1000,
    clients: Number(values.clients),
    images: Number(values.images),
    sampleEveryMs: 5000,
    settleMs: 40_000,
    log: (line) => process.stdout.write(`${line}\n`),
  });
  process.stdout.write(`\n${summarize(result)}\n`);
  const verdict = problems(result);
  process.stdout.write(verdict.length ? `\nFAILED:\n${verdict.join('\n')}\n` : '\npassed\n');
  if (values.json) await writeFile(values.json, JSON.stringify({ ...result, errors: result.errors.slice(0, 1000) }, null, 2));
  if (!values['no-write']) {
    const path = join(fileURLToPath(new URL('..', import.meta.url)), 'RELIABILITY.md');
    await writeReliability(path, result, command, commit);
    process.stdout.write(`figures written to ${path}\n`);
  }
  process.exit(verdict.length ? 1 : 0);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}
