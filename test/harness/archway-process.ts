// archway as its own process, started the way users start it (src/main.ts
// with --config), for what only a real process shows: signals, exit codes.
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, request } from 'undici';
import { stringify } from 'yaml';
import { freePort } from './ports.ts';
import { tempDir } from './tmp.ts';

export interface ArchwayProcess {
  /** http://127.0.0.1:PORT, or https:// when the config sets server.tls. */
  url: string;
  /** 127.0.0.1:PORT */
  hostPort: string;
  port: number;
  cacheDir: string;
  /** The YAML file archway was started with. */
  configPath: string;
  child: ChildProcess;
  output(): string;
  /** Send a signal and wait for the exit code (null if killed by a signal). */
  signal(sig: NodeJS.Signals, timeoutMs?: number): Promise<{ code: number | null; ms: number }>;
  /** Send a signal archway survives (SIGHUP) without waiting for an exit. */
  notify(sig: NodeJS.Signals): void;
  /** Wait until the output matches, e.g. after notify('SIGHUP'); only output after `fromOffset` counts. */
  waitForOutput(pattern: RegExp, opts?: { fromOffset?: number; timeoutMs?: number }): Promise<void>;
  kill(): Promise<void>;
}

/**
 * `config` is archway's configuration; `server` keys given there (e.g. tls,
 * shutdownTimeout, 5s unless given) are kept, but host and port are the harness's, and
 * cache.dir is a fresh directory unless the config names one (to start a
 * second process on the cache of a first, e.g. after a crash).
 */
export async function startArchwayProcess(
  config: Record<string, unknown>,
  /** `compiled`: run dist/main.js (as the container image does; `npm run build` first) instead of the sources through tsx. */
  opts: {
    compiled?: boolean;
    /** Listen on this port instead of a free one (e.g. a replica restarted behind a load balancer that knows its port). */
    port?: number;
  } = {},
): Promise<ArchwayProcess> {
  const dir = await tempDir('archway-proc-');
  const port = opts.port ?? (await freePort());
  const givenDir = (config.cache as { dir?: unknown } | undefined)?.dir;
  const cacheDir = typeof givenDir === 'string' ? givenDir : join(dir, 'cache');
  const configPath = join(dir, 'archway.yaml');
  // A short shutdownTimeout unless the test is about it: a stuck shutdown must not hold the suite.
  const server = { shutdownTimeout: '5s', ...(config.server as object | undefined), host: '127.0.0.1', port };
  const tls = 'tls' in server && server.tls !== undefined;
  await writeFile(configPath, stringify({ ...config, server, cache: { dir: cacheDir, ...(config.cache as object) } }));
  const child = spawn(process.execPath, [...archwayEntry(opts.compiled), '--config', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const url = `${tls ? 'https' : 'http'}://127.0.0.1:${port}`;
  // The start-up probe checks liveness only; TLS tests verify certificates themselves.
  // Its own pool, closed after start-up: no probe connection stays open in archway
  // (tests count archway's sockets).
  const probeDispatcher = new Agent(tls ? { connect: { rejectUnauthorized: false } } : {});
  const healthy = async (): Promise<boolean> => {
    const res = await request(`${url}/healthz`, { dispatcher: probeDispatcher });
    await res.body.dump();
    return res.statusCode === 200;
  };
  const deadline = Date.now() + 20_000;
  try {
    for (;;) {
      if (child.exitCode !== null) throw new Error(`archway exited during start-up:\n${output}`);
      try {
        if (await healthy()) break;
      } catch {
        // not listening yet
      }
      if (Date.now() > deadline) {
        child.kill('SIGKILL');
        throw new Error(`archway did not start:\n${output}`);
      }
      await sleep(100);
    }
  } finally {
    await probeDispatcher.destroy();
  }
  return {
    url,
    hostPort: `127.0.0.1:${port}`,
    port,
    cacheDir,
    configPath,
    child,
    output: () => output,
    async signal(sig, timeoutMs = 15_000) {
      const started = Date.now();
      child.kill(sig);
      // Unref'd: a pending timeout must not keep the test process alive after the exit.
      const code = await Promise.race([exited, sleep(timeoutMs, undefined, { ref: false }).then(() => 'timeout' as const)]);
      if (code === 'timeout') throw new Error(`archway did not exit within ${timeoutMs} ms after ${sig}:\n${output}`);
      return { code, ms: Date.now() - started };
    },
    notify(sig) {
      child.kill(sig);
    },
    async waitForOutput(pattern, opts = {}) {
      const deadline = Date.now() + (opts.timeoutMs ?? 10_000);
      while (!pattern.test(output.slice(opts.fromOffset ?? 0))) {
        if (child.exitCode !== null) throw new Error(`archway exited while waiting for ${pattern}:\n${output}`);
        if (Date.now() > deadline) throw new Error(`archway did not print ${pattern}:\n${output}`);
        await sleep(50);
      }
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    },
  };
}

/** The node arguments that start archway: its sources through tsx, or the compiled build. */
export function archwayEntry(compiled = false): string[] {
  return compiled ? ['dist/main.js'] : ['--import', 'tsx', 'src/main.ts'];
}
