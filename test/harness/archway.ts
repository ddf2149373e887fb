// archway itself, in-process on a loopback port, for end-to-end tests. Its
// log lines are kept in memory so tests can assert what operators would read.
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import pino from 'pino';
import { Agent } from 'undici';
import { buildArchway, type Archway } from '../../src/server.ts';
import { parseConfig } from '../../src/config/load.ts';
import type { ConfigInput } from '../../src/config/schema.ts';
import { scrapeMetric } from './metrics.ts';
import { tempDir } from './tmp.ts';

export interface ArchwayHandle {
  url: string;
  hostPort: string;
  port: number;
  cacheDir: string;
  archway: Archway;
  /** Parsed JSON log lines so far. */
  logs(): Array<Record<string, unknown>>;
  /** Value of a Prometheus sample, e.g. metric('archway_cache_lookups_total', { kind: 'blob', outcome: 'hit' }). */
  metric(name: string, labels?: Record<string, string>): Promise<number>;
  stop(): Promise<void>;
  /** Stop and start again on the same port and cache directory. */
  restart(): Promise<void>;
}

export interface StartArchwayOptions {
  /** upstreams map; the first key is the default upstream unless defaultUpstream is given. */
  upstreams: NonNullable<ConfigInput['upstreams']>;
  defaultUpstream?: string;
  cache?: Partial<NonNullable<ConfigInput['cache']>>;
  timeouts?: Partial<NonNullable<ConfigInput['timeouts']>>;
  cacheDir?: string;
  /** Extra listeners (server.ports) and platform policy, as in the config file. */
  ports?: number[];
  trustedProxies?: string[];
  platform?: ConfigInput['platform'];
  /** Client authentication (auth: htpasswd, users, tokens, protectMetrics), as in the config file. */
  auth?: ConfigInput['auth'];
  /** Per-client limits (limits.perClient), as in the config file. */
  limits?: ConfigInput['limits'];
  /** server.tls: HTTPS on every listener; url then starts with https://. */
  tls?: { cert: string; key: string };
  /** Virtual multi-platform images, as in the config file. */
  virtual?: ConfigInput['virtual'];
  /** Local repositories (local.namespaces, …), as in the config file. */
  local?: ConfigInput['local'];
  /** The admin API (admin.token), as in the config file. */
  admin?: ConfigInput['admin'];
  /** Shared storage and coordination (storage.type s3, redis.url), as in the config file. */
  storage?: ConfigInput['storage'];
  redis?: ConfigInput['redis'];
}

export async function startArchway(opts: StartArchwayOptions): Promise<ArchwayHandle> {
  const cacheDir = opts.cacheDir ?? (await tempDir('archway-cache-'));
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) lines.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  const config = parseConfig({
    server: {
      host: '127.0.0.1',
      port: 0,
      shutdownTimeout: '2s',
      ports: opts.ports ?? [],
      trustedProxies: opts.trustedProxies ?? [],
      ...(opts.tls ? { tls: opts.tls } : {}),
    },
    platform: opts.platform,
    ...(opts.auth ? { auth: opts.auth } : {}),
    ...(opts.limits ? { limits: opts.limits } : {}),
    ...(opts.virtual ? { virtual: opts.virtual } : {}),
    ...(opts.admin ? { admin: opts.admin } : {}),
    ...(opts.local ? { local: opts.local } : {}),
    ...(opts.storage ? { storage: opts.storage } : {}),
    ...(opts.redis ? { redis: opts.redis } : {}),
    cache: { dir: cacheDir, ...opts.cache },
    timeouts: { connect: '2s', headers: '10s', bodyIdle: '10s', ...opts.timeouts },
    upstreams: opts.upstreams,
    defaultUpstream: opts.defaultUpstream ?? Object.keys(opts.upstreams)[0],
    log: { level: 'debug' },
  });

  let port = 0;
  let archway: Archway;
  const start = async () => {
    archway = await buildArchway(config, { logger: pino({ level: 'debug' }, sink) });
    await archway.listen(port);
    port = (archway.app.server.address() as AddressInfo).port;
  };
  await start();
  const scheme = opts.tls ? 'https' : 'http';
  // metric() reads /metrics itself; it is no TLS test, so it does not verify the certificate.
  const metricsDispatcher = opts.tls ? new Agent({ connect: { rejectUnauthorized: false } }) : undefined;

  const handle: ArchwayHandle = {
    get url() {
      return `${scheme}://127.0.0.1:${port}`;
    },
    get hostPort() {
      return `127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    cacheDir,
    get archway() {
      return archway;
    },
    logs: () => lines,
    async metric(name, labels = {}) {
      // Through the HTTP endpoint, as Prometheus reads it (gauges refresh there).
      const base = `${metricsDispatcher ? 'https' : 'http'}://127.0.0.1:${port}`;
      return scrapeMetric(base, name, labels, metricsDispatcher);
    },
    async stop() {
      await archway.close();
      await metricsDispatcher?.close();
    },
    async restart() {
      await archway.close();
      await start();
    },
  };
  return handle;
}
