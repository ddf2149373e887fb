// Child processes for the e2e harness: long-running servers (registry,
// containerd, dockerd) and short commands (skopeo, ctr, docker, openssl).
//
// Every child is spawned in its own process group and tracked, so stop()
// and the exit hooks below can kill the whole group: a test run must never
// leave daemons behind, even when it crashes or is interrupted.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import type { WriteStream } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';

const TAIL_LINES = 200;

// ---------------------------------------------------------------------------
// Tracking and emergency cleanup

const live = new Set<ChildProcess>();
let hooksInstalled = false;

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // Group already gone (ESRCH) or the child was not a group leader.
    try {
      child.kill(signal);
    } catch {
      /* already dead */
    }
  }
}

function killAllNow(): void {
  for (const child of live) killGroup(child, 'SIGKILL');
}

function installHooks(): void {
  if (hooksInstalled) return;
  hooksInstalled = true;
  // 'exit' handlers run on normal exit, process.exit() and uncaught errors.
  // Prepended: children must die before tmp.ts removes their directories.
  process.prependListener('exit', killAllNow);
  // A signal listener replaces Node's default "die" action, so when we are
  // the only listener we must exit ourselves after cleaning up.
  const signals: Array<[NodeJS.Signals, number]> = [
    ['SIGINT', 130],
    ['SIGTERM', 143],
    ['SIGHUP', 129],
  ];
  for (const [signal, code] of signals) {
    const handler = (): void => {
      killAllNow();
      if (process.listenerCount(signal) === 1) process.exit(code);
    };
    process.on(signal, handler);
  }
}

function track(child: ChildProcess): void {
  installHooks();
  live.add(child);
  child.once('exit', () => live.delete(child));
}

function spawnTracked(
  command: string,
  args: string[],
  opts: { env?: NodeJS.ProcessEnv | undefined; cwd?: string | undefined; stdin: 'pipe' | 'ignore' },
): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      env: opts.env ?? process.env,
      cwd: opts.cwd,
      stdio: [opts.stdin, 'pipe', 'pipe'],
      // Own process group: lets us signal the child and its descendants.
      detached: true,
    });
    child.once('error', (err) => reject(new Error(`cannot start ${command}: ${err.message}`)));
    child.once('spawn', () => {
      track(child);
      resolve(child);
    });
  });
}

/** Splits a byte stream into lines, keeping a partial last line until more arrives. */
function lineSplitter(onLine: (line: string) => void): { push(chunk: Buffer): void; end(): void } {
  let pending = '';
  return {
    push(chunk) {
      pending += chunk.toString('utf8');
      const parts = pending.split('\n');
      pending = parts.pop() ?? '';
      for (const part of parts) onLine(part);
    },
    end() {
      if (pending !== '') onLine(pending);
      pending = '';
    },
  };
}

// ---------------------------------------------------------------------------
// Short commands

export interface RunOptions {
  /** Return non-zero exits instead of throwing. */
  allowFail?: boolean;
  /** Kill the command after this long (default 120 s). */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  input?: string | Buffer;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  /** Exact stdout bytes (e.g. raw manifests, whose digest matters). */
  stdoutBuffer: Buffer;
  code: number | null;
  signal: NodeJS.Signals | null;
}

function clip(text: string, max = 4000): string {
  return text.length <= max ? text : `…${text.slice(text.length - max)}`;
}

export async function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  const timeoutMs = opts.timeoutMs ?? 120_000;
  const child = await spawnTracked(cmd, args, {
    env: opts.env,
    cwd: opts.cwd,
    stdin: opts.input === undefined ? 'ignore' : 'pipe',
  });
  if (opts.input !== undefined) child.stdin?.end(opts.input);
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout?.on('data', (c: Buffer) => out.push(c));
  child.stderr?.on('data', (c: Buffer) => err.push(c));

  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    killGroup(child, 'SIGKILL');
  }, timeoutMs);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) => {
    child.once('close', (c: number | null, s: NodeJS.Signals | null) => resolve([c, s]));
  });
  clearTimeout(timer);

  const stdoutBuffer = Buffer.concat(out);
  const result: RunResult = {
    stdout: stdoutBuffer.toString('utf8'),
    stderr: Buffer.concat(err).toString('utf8'),
    stdoutBuffer,
    code,
    signal,
  };
  const commandLine = [cmd, ...args].join(' ');
  if (timedOut) {
    throw new Error(
      `${commandLine}: timed out after ${timeoutMs} ms\nstderr: ${clip(result.stderr)}\nstdout: ${clip(result.stdout)}`,
    );
  }
  if (code !== 0 && !opts.allowFail) {
    throw new Error(
      `${commandLine}: exited with ${code ?? signal}\nstderr: ${clip(result.stderr)}\nstdout: ${clip(result.stdout, 2000)}`,
    );
  }
  return result;
}

// ---------------------------------------------------------------------------
// Long-running processes

export interface StartProcessOptions {
  /** Short name used in error messages. */
  name: string;
  command: string;
  args: string[];
  /** stdout and stderr lines are appended here, for post-mortem debugging. */
  logFile: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Called for every complete output line (e.g. to parse access logs). */
  onLine?: (line: string, stream: 'stdout' | 'stderr') => void;
  /** Grace period between SIGTERM and SIGKILL in stop() (default 5 s). */
  stopTimeoutMs?: number;
}

export class ManagedProcess {
  readonly name: string;
  readonly pid: number;
  readonly logFile: string;
  readonly #child: ChildProcess;
  readonly #log: WriteStream;
  readonly #tail: string[] = [];
  readonly #exit: Promise<void>;
  readonly #closed: Promise<void>;
  readonly #stopTimeoutMs: number;
  #exitDescription: string | undefined;
  #stopping: Promise<void> | undefined;

  constructor(child: ChildProcess, opts: StartProcessOptions) {
    if (child.pid === undefined) throw new Error(`${opts.name}: no pid`);
    this.name = opts.name;
    this.pid = child.pid;
    this.logFile = opts.logFile;
    this.#child = child;
    this.#stopTimeoutMs = opts.stopTimeoutMs ?? 5000;
    this.#log = createWriteStream(opts.logFile, { flags: 'a' });
    for (const stream of ['stdout', 'stderr'] as const) {
      const splitter = lineSplitter((line) => {
        this.#tail.push(line);
        if (this.#tail.length > TAIL_LINES) this.#tail.shift();
        this.#log.write(`${line}\n`);
        opts.onLine?.(line, stream);
      });
      const source = child[stream];
      source?.on('data', (c: Buffer) => splitter.push(c));
      source?.on('end', () => splitter.end());
    }
    // Listen from the start: 'close' may fire before anyone calls stop().
    this.#closed = new Promise((resolve) => child.once('close', () => resolve()));
    this.#exit = new Promise((resolve) => {
      child.once('exit', (code, signal) => {
        this.#exitDescription = `exited with ${code ?? signal}`;
        resolve();
      });
    });
  }

  /** Whether the process has exited (crashed or stopped). */
  get exited(): boolean {
    return this.#exitDescription !== undefined;
  }

  /** Last output lines plus the exit status: for error messages. */
  tail(lines = 40): string {
    const status = this.#exitDescription ? ` (${this.#exitDescription})` : '';
    return `--- last output of ${this.name}${status}, full log: ${this.logFile}\n${this.#tail.slice(-lines).join('\n')}`;
  }

  async waitForExit(): Promise<void> {
    await this.#exit;
  }

  /** SIGTERM the process group, SIGKILL it after the grace period, await exit. Idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= this.#stop();
    return this.#stopping;
  }

  async #stop(): Promise<void> {
    if (!this.exited) {
      killGroup(this.#child, 'SIGTERM');
      // A cleared timer, not a raced sleep: a pending grace timer would keep
      // the test process alive long after everything stopped.
      const escalate = setTimeout(() => killGroup(this.#child, 'SIGKILL'), this.#stopTimeoutMs);
      await this.#exit;
      clearTimeout(escalate);
    }
    // Descendants that ignored SIGTERM (still in our group) must not survive.
    killGroup(this.#child, 'SIGKILL');
    // Let the pipes drain so the log file holds the final lines; a grandchild
    // holding them open must not block us, hence the bound.
    let bound: NodeJS.Timeout | undefined;
    await Promise.race([this.#closed, new Promise((r) => (bound = setTimeout(r, 500)))]);
    clearTimeout(bound);
    await new Promise<void>((resolve) => this.#log.end(() => resolve()));
  }
}

export async function startProcess(opts: StartProcessOptions): Promise<ManagedProcess> {
  const child = await spawnTracked(opts.command, opts.args, { env: opts.env, cwd: opts.cwd, stdin: 'ignore' });
  return new ManagedProcess(child, opts);
}

// ---------------------------------------------------------------------------
// Waiting

export interface WaitOptions {
  timeoutMs: number;
  /** What we are waiting for, for the timeout error. */
  description: string;
  intervalMs?: number;
  /** Fail fast (with its output) if this process dies while we wait. */
  proc?: ManagedProcess;
}

export async function waitFor(check: () => Promise<boolean> | boolean, opts: WaitOptions): Promise<void> {
  const deadline = Date.now() + opts.timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      if (await check()) return;
    } catch (err) {
      lastError = err;
    }
    if (opts.proc?.exited) {
      throw new Error(`${opts.description}: ${opts.proc.name} exited\n${opts.proc.tail()}`);
    }
    if (Date.now() > deadline) {
      const cause = lastError instanceof Error ? `\nlast error: ${lastError.message}` : '';
      const tail = opts.proc ? `\n${opts.proc.tail()}` : '';
      throw new Error(`timed out after ${opts.timeoutMs} ms waiting for ${opts.description}${cause}${tail}`);
    }
    await sleep(opts.intervalMs ?? 100);
  }
}

/** Polls until the URL answers with any HTTP status. */
export async function waitForHttp(url: string, timeoutMs: number, proc?: ManagedProcess): Promise<void> {
  await waitFor(
    async () => {
      const res = await fetch(url, { signal: AbortSignal.timeout(2000) });
      await res.arrayBuffer();
      return true;
    },
    { timeoutMs, description: `${url} to answer`, ...(proc ? { proc } : {}) },
  );
}
