// The real CNCF distribution registry (docker-registry 2.8) as upstream for
// the proxy. Request counting uses its Apache-style access log on stdout,
// which (unlike the "response completed" logrus lines on stderr, emitted only
// for 2xx/3xx) covers every request including 401s and 404s.
import { randomBytes } from 'node:crypto';
import bcrypt from 'bcryptjs';
import { mkdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, request } from 'undici';
import { digestHex } from './digest.ts';
import { markOwned, sweepOrphans } from './host-cleanup.ts';
import { ensureCommands } from './packages.ts';
import { freePort } from './ports.ts';
import { startProcess, waitFor } from './process.ts';
import type { ManagedProcess } from './process.ts';
import { removeDir, tempDir } from './tmp.ts';
import type { TokenAuthConfig } from './token-issuer.ts';

export type { TokenAuthConfig } from './token-issuer.ts';

export interface RegistryRequest {
  method: string;
  /** URI path without the query string, e.g. /v2/library/foo/blobs/sha256:... */
  path: string;
  /** Full request URI including any query string. */
  uri: string;
  status: number;
  /** Response body bytes actually written (short for aborted downloads). */
  bytes: number;
  userAgent: string;
}

export interface RegistryHandle {
  /** http://127.0.0.1:PORT */
  url: string;
  /** 127.0.0.1:PORT */
  hostPort: string;
  port: number;
  dataDir: string;
  /** The file holding that blob inside the registry's storage. */
  blobPath(digest: string): string;
  /** Every request answered so far (after making sure the log is flushed). */
  requests(): Promise<RegistryRequest[]>;
  /** Polls requests() until the predicate holds, e.g. for background fetches. */
  waitForRequests(predicate: (reqs: RegistryRequest[]) => boolean, timeoutMs?: number): Promise<RegistryRequest[]>;
  clearRequests(): void;
  /**
   * Stops the registry process (SIGTERM, then SIGKILL). Data stays until the
   * test process exits, so restart() may follow to end a simulated outage.
   */
  stop(): Promise<void>;
  /** (Stop if running and) start again on the same port and data. */
  restart(): Promise<void>;
  /** Last log lines, for assertion messages. */
  logTail(): string;
}

export interface StartRegistryOptions {
  tokenAuth?: TokenAuthConfig;
  /** Keep data here (not removed on stop) to restart a registry on the same data. */
  dataDir?: string;
  /** Run the registry itself as a pull-through cache of this URL. */
  proxyRemoteUrl?: string;
  /** Basic auth (distribution's `auth: htpasswd`): user -> password. */
  htpasswd?: Record<string, string>;
  /** Serve HTTPS with this certificate (distribution's `http.tls`); url is then https://. */
  tls?: { certPath: string; keyPath: string };
}

/** Requests we send ourselves to flush the log; hidden from requests(). */
const SYNC_PREFIX = '/archway-harness-sync/';

// 127.0.0.1 - - [27/Nov/2026:04:55:14 +0000] "GET /v2/ HTTP/1.1" 200 2 "" "curl/7.88.1"
const ACCESS_LINE = /^\S+ \S+ \S+ \[[^\]]*\] "(\S+) (\S+) [^"]*" (\d{3}) (\d+|-) "[^"]*" "([^"]*)"/;

function parseAccessLine(line: string): RegistryRequest | undefined {
  const m = ACCESS_LINE.exec(line);
  if (!m) return undefined;
  const [, method = '', uri = '', status = '0', bytes = '0', userAgent = ''] = m;
  const q = uri.indexOf('?');
  return {
    method,
    uri,
    path: q === -1 ? uri : uri.slice(0, q),
    status: Number(status),
    bytes: bytes === '-' ? 0 : Number(bytes),
    userAgent,
  };
}

function registryConfig(opts: StartRegistryOptions, dataDir: string, port: number, htpasswdPath: string): unknown {
  return {
    version: '0.1',
    // Text format: access log on stdout, app log on stderr.
    log: { level: 'info', formatter: 'text', accesslog: { disabled: false } },
    storage: {
      filesystem: { rootdirectory: dataDir },
      delete: { enabled: true },
      // Background purging would touch storage at random times.
      maintenance: { uploadpurging: { enabled: false } },
    },
    http: {
      addr: `127.0.0.1:${port}`,
      secret: randomBytes(16).toString('hex'),
      ...(opts.tls ? { tls: { certificate: opts.tls.certPath, key: opts.tls.keyPath } } : {}),
    },
    ...(opts.htpasswd ? { auth: { htpasswd: { realm: 'archway-test', path: htpasswdPath } } } : {}),
    ...(opts.tokenAuth
      ? {
          auth: {
            token: {
              realm: opts.tokenAuth.realm,
              service: opts.tokenAuth.service,
              issuer: opts.tokenAuth.issuer,
              rootcertbundle: opts.tokenAuth.rootCertBundlePath,
            },
          },
        }
      : {}),
    ...(opts.proxyRemoteUrl ? { proxy: { remoteurl: opts.proxyRemoteUrl } } : {}),
  };
}

/** The registry reads REGISTRY_* variables as config overrides: drop them. */
function cleanEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('REGISTRY_')));
}

export async function startRegistry(opts: StartRegistryOptions = {}): Promise<RegistryHandle> {
  await ensureCommands([{ command: 'docker-registry', debianPackage: 'docker-registry' }]);
  // Registries of a SIGKILLed test run survive it (own process group).
  await sweepOrphans(tmpdir(), ['archway-registry-']);
  const dir = await tempDir('archway-registry-');
  await markOwned(dir);
  const dataDir = opts.dataDir ?? join(dir, 'data');
  await mkdir(dataDir, { recursive: true });
  const configPath = join(dir, 'config.yml');

  let entries: RegistryRequest[] = [];
  const syncSeen = new Set<string>();
  let lastLineAt = Date.now();
  let syncCounter = 0;
  let proc: ManagedProcess | undefined;
  let port = 0;
  const scheme = opts.tls ? 'https' : 'http';
  // The harness's own requests (start-up probe, log flushes) do not check the registry's certificate: tests do.
  const own = new Agent(opts.tls ? { connect: { rejectUnauthorized: false } } : {});
  const get = async (path: string): Promise<void> => {
    const res = await request(`${scheme}://127.0.0.1:${port}${path}`, { dispatcher: own, signal: AbortSignal.timeout(5000) });
    await res.body.dump();
  };

  const onLine = (line: string, stream: 'stdout' | 'stderr'): void => {
    lastLineAt = Date.now();
    if (stream !== 'stdout') return;
    const req = parseAccessLine(line);
    if (!req) return;
    if (req.path.startsWith(SYNC_PREFIX)) syncSeen.add(req.path);
    else entries.push(req);
  };

  const launch = async (): Promise<void> => {
    // JSON is valid YAML, and avoids hand-rolled YAML quoting.
    const htpasswdPath = join(dir, 'htpasswd');
    if (opts.htpasswd) {
      // distribution checks bcrypt hashes, as `htpasswd -B` writes them.
      const lines = Object.entries(opts.htpasswd).map(([user, password]) => `${user}:${bcrypt.hashSync(password, 4)}`);
      await writeFile(htpasswdPath, `${lines.join('\n')}\n`);
    }
    await writeFile(configPath, JSON.stringify(registryConfig(opts, dataDir, port, htpasswdPath), null, 2));
    const p = await startProcess({
      name: `registry :${port}`,
      command: 'docker-registry',
      args: ['serve', configPath],
      logFile: join(dir, 'registry.log'),
      env: cleanEnv(),
      onLine,
    });
    proc = p;
    // Probe on a sync path so the probe is not counted in requests().
    await waitFor(async () => (await get(`${SYNC_PREFIX}startup`), true), { timeoutMs: 15_000, description: `registry :${port} to answer`, proc: p });
  };

  // Another process may grab the port between freePort() and bind: retry.
  for (let attempt = 1; ; attempt++) {
    port = await freePort();
    try {
      await launch();
      break;
    } catch (err) {
      const inUse = proc?.exited && proc.tail().includes('address already in use');
      await proc?.stop();
      if (!inUse || attempt >= 3) {
        await removeDir(dir);
        throw err;
      }
    }
  }

  const url = `${scheme}://127.0.0.1:${port}`;

  const requests = async (): Promise<RegistryRequest[]> => {
    if (proc && !proc.exited) {
      // A request is logged when its handler returns, a moment after the
      // client saw the response. Our own sentinel request goes through the
      // same logger, so once it shows up earlier requests are logged too;
      // then allow a short quiet period (bounded: a registry busy with
      // background downloads may never go quiet).
      const path = `${SYNC_PREFIX}${++syncCounter}`;
      await get(path);
      await waitFor(() => syncSeen.has(path), { timeoutMs: 5000, description: 'registry access log flush' });
      const quietDeadline = Date.now() + 500;
      while (Date.now() - lastLineAt < 50 && Date.now() < quietDeadline) await sleep(10);
    } else {
      await sleep(50);
    }
    return entries.map((e) => ({ ...e }));
  };

  const stopProcess = async (): Promise<void> => {
    await proc?.stop();
    proc = undefined;
  };

  return {
    url,
    hostPort: `127.0.0.1:${port}`,
    port,
    dataDir,
    blobPath: (digest) => {
      const hex = digestHex(digest);
      return join(dataDir, 'docker', 'registry', 'v2', 'blobs', 'sha256', hex.slice(0, 2), hex, 'data');
    },
    requests,
    waitForRequests: async (predicate, timeoutMs = 10_000) => {
      let last: RegistryRequest[] = [];
      await waitFor(
        async () => {
          last = await requests();
          return predicate(last);
        },
        { timeoutMs, description: 'expected registry requests', intervalMs: 100 },
      ).catch((err: unknown) => {
        const seen = last.map((r) => `${r.method} ${r.uri} ${r.status}`).join('\n');
        throw new Error(`${err instanceof Error ? err.message : String(err)}\nrequests seen:\n${seen}`);
      });
      return last;
    },
    clearRequests: () => {
      entries = [];
    },
    stop: async () => {
      // Only the process: a test may simulate an outage with stop() and
      // bring the registry back with restart(). The directory goes when the
      // test process exits (tmp.ts exit hook).
      await stopProcess();
    },
    restart: async () => {
      await stopProcess();
      await launch();
    },
    logTail: () => proc?.tail() ?? '(registry not running)',
  };
}
