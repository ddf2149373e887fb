// archway as its own process, started the way users start it (src/main.ts
// with --config), for what only a real process shows: signals, exit codes.
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { stringify } from 'yaml';
import { freePort } from './ports.ts';
import { tempDir } from './tmp.ts';

export interface ArchwayProcess {
  url: string;
  cacheDir: string;
  child: ChildProcess;
  output(): string;
  /** Send a signal and wait for the exit code (null if killed by a signal). */
  signal(sig: NodeJS.Signals, timeoutMs?: number): Promise<{ code: number | null; ms: number }>;
  kill(): Promise<void>;
}

export async function startArchwayProcess(config: Record<string, unknown>): Promise<ArchwayProcess> {
  const dir = await tempDir('archway-proc-');
  const port = await freePort();
  const cacheDir = join(dir, 'cache');
  const configPath = join(dir, 'archway.yaml');
  await writeFile(configPath, stringify({ ...config, server: { host: '127.0.0.1', port, shutdownTimeout: '5s' }, cache: { dir: cacheDir, ...(config.cache as object) } }));
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts', '--config', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  let output = '';
  child.stdout?.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr?.on('data', (d: Buffer) => (output += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  const url = `http://127.0.0.1:${port}`;
  const deadline = Date.now() + 20_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`archway exited during start-up:\n${output}`);
    try {
      if ((await fetch(`${url}/healthz`)).ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`archway did not start:\n${output}`);
    await sleep(100);
  }
  return {
    url,
    cacheDir,
    child,
    output: () => output,
    async signal(sig, timeoutMs = 15_000) {
      const started = Date.now();
      child.kill(sig);
      const code = await Promise.race([exited, sleep(timeoutMs).then(() => 'timeout' as const)]);
      if (code === 'timeout') throw new Error(`archway did not exit within ${timeoutMs} ms after ${sig}:\n${output}`);
      return { code, ms: Date.now() - started };
    },
    async kill() {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGKILL');
        await exited;
      }
    },
  };
}
