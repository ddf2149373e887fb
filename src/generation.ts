import type { Logger } from 'pino';
import { AdminGuard } from './admin/admin-guard.ts';
import type { CacheInventory } from './admin/cache-inventory.ts';
import type { PrefetchJobs } from './admin/prefetch.ts';
import { ClientAuth } from './access/client-auth.ts';
import { readHtpasswd } from './access/htpasswd.ts';
import { FailedLoginLimiter } from './access/login-limiter.ts';
import { PasswordCheckPool } from './access/password-checks.ts';
import { RateLimiter } from './access/rate-limiter.ts';
import { ConfigError } from './config/load.ts';
import type { Config, UpstreamConfig } from './config/schema.ts';
import { readSecret } from './config/secrets.ts';
import type { PlatformInspector } from './inspect/platform-inspector.ts';
import type { Metrics } from './observability/metrics.ts';
import type { TrafficStats } from './observability/traffic.ts';
import { PlatformPolicy } from './platform/policy.ts';
import type { BlobService } from './registry/blob-service.ts';
import type { ManifestService } from './registry/manifest-service.ts';
import { Router, type RouterUpstream } from './routing/router.ts';
import type { Stores } from './stores.ts';
import { AccelRedirect } from './http/accel-redirect.ts';
import { UpstreamClient } from './upstream/client.ts';
import { resolveCredentials } from './upstream/credentials.ts';
import { createDispatcher, readCa, type UpstreamDispatcher } from './upstream/dispatcher.ts';
import type { Upstream } from './upstream/upstream.ts';
import { sha256 } from './util/hash.ts';
import { VirtualCatalog } from './virtual/virtual-catalog.ts';
import type { VirtualImageService } from './virtual/virtual-image-service.ts';
import { LocalCatalog } from './local/local-catalog.ts';
import type { LocalImageService } from './local/local-image-service.ts';

/**
 * What lives for the process, whatever the configuration file says later:
 * built once by `createServices` and shared by every generation, so a reload
 * keeps the caches warm (tags, manifests, narrowed indexes, member tag lists)
 * and a fill in flight stays joinable by the requests that come after it.
 */
export interface Core {
  logger: Logger;
  metrics: Metrics;
  stores: Stores;
  manifests: ManifestService;
  blobs: BlobService;
  /** Manifests and blobs of virtual images, assembled from their members. */
  virtualImages: VirtualImageService;
  /** Pushed manifests and tags of local repositories; changes reach other replicas through `shareChanges`. */
  localImages: LocalImageService;
  inspector: PlatformInspector;
  inventory: CacheInventory;
  jobs: PrefetchJobs;
  traffic: TrafficStats;
}

/**
 * What one configuration derives, over the core: a request reads the
 * generation once when it arrives and runs under it to its end, so a reload
 * takes effect for new requests while those in flight finish as they began.
 * A new configuration section plugs in here (`buildGeneration`).
 */
export interface Generation extends Core {
  /** 1 for the configuration archway started with, then one more per reload. */
  readonly id: number;
  config: Readonly<Config>;
  /** Every configured upstream, by key. */
  upstreams: ReadonlyMap<string, Upstream>;
  router: Router;
  platforms: PlatformPolicy;
  /** Which names are virtual images (config `virtual`). */
  virtualCatalog: VirtualCatalog;
  /** Which names are local repositories (config `local`), and who may push them. */
  localCatalog: LocalCatalog;
  /** Client authentication, when `auth` is configured. */
  auth: ClientAuth | undefined;
  /** Per-client limits, when any is configured. */
  limiter: RateLimiter | undefined;
  adminGuard: AdminGuard;
  /** server.accelRedirect, when configured. */
  accel: AccelRedirect | undefined;
}

/** An upstream's client and pool, with a fingerprint of everything they were built from. */
export interface UpstreamPart {
  fingerprint: string;
  client: UpstreamClient;
  pool: UpstreamDispatcher;
}

export interface AuthPart {
  fingerprint: string;
  auth: ClientAuth;
  /** The htpasswd entries this generation reads (put in use by `activate`, when carried over). */
  users: ReadonlyMap<string, string>;
}

export interface LimiterPart {
  fingerprint: string;
  limiter: RateLimiter;
}

/** A generation with the resources it owns, so the next one can carry them over and the rest can be closed. */
export interface BuiltGeneration {
  generation: Generation;
  /**
   * Put in use what a carried-over part must learn (a re-read htpasswd file);
   * called once, when the generation becomes current. Says what it reloaded.
   */
  activate(): string[];
  /**
   * Close what this generation owns that none of `keep` uses (the generations
   * still current or finishing requests, which may have carried parts over).
   */
  closeExcept(keep: readonly BuiltGeneration[]): Promise<void>;
  /** What the next build may carry over. */
  readonly owned: { upstreams: ReadonlyMap<string, UpstreamPart>; auth: AuthPart | undefined; limiter: LimiterPart | undefined };
}

/**
 * The generation a configuration derives: upstream clients and their pools,
 * the router, platform rules, virtual images, client authentication, limits
 * and the admin guard. Reads every file the configuration names (passwords,
 * CAs, htpasswd, tokens): a file that cannot be read throws a ConfigError and
 * nothing is built. An upstream or authentication whose inputs did not change
 * is carried over from `previous`, with its token cache, health and
 * remembered logins.
 */
export function buildGeneration(config: Readonly<Config>, core: Core, id: number, previous?: BuiltGeneration): BuiltGeneration {
  const before = previous?.owned;
  // Before any pool is opened: nothing to close when it throws.
  const adminGuard = new AdminGuard(adminToken(config));
  const upstreamParts = new Map<string, UpstreamPart>();
  const fresh: UpstreamPart[] = [];
  try {
    for (const [name, upstream] of Object.entries(config.upstreams)) {
      const fingerprint = upstreamFingerprint(name, upstream, config);
      const carried = before?.upstreams.get(name);
      if (carried?.fingerprint === fingerprint) {
        upstreamParts.set(name, carried);
        continue;
      }
      const part = buildUpstream(name, upstream, config, core, fingerprint);
      fresh.push(part);
      upstreamParts.set(name, part);
    }
  } catch (err) {
    void Promise.all(fresh.map((p) => p.pool.close()));
    throw err;
  }
  const routed = new Map<string, RouterUpstream>([...upstreamParts].map(([name, p]) => [name, { client: p.client, aliases: config.upstreams[name]?.aliases ?? [] }]));
  const router = new Router(routed, config.defaultUpstream);
  let authPart: AuthPart | undefined;
  try {
    authPart = config.auth ? authFor(config, core.metrics, before?.auth) : undefined;
  } catch (err) {
    void Promise.all(fresh.map((p) => p.pool.close()));
    throw err;
  }
  const limiterPart = limiterFor(config, before?.limiter);
  const generation: Generation = {
    ...core,
    id,
    config,
    upstreams: new Map([...upstreamParts].map(([name, p]) => [name, p.client])),
    router,
    platforms: new PlatformPolicy(config.platform),
    virtualCatalog: new VirtualCatalog(config.virtual, config.defaultUpstream, router),
    localCatalog: new LocalCatalog(config.local, config.defaultUpstream),
    auth: authPart?.auth,
    limiter: limiterPart?.limiter,
    adminGuard,
    accel: config.server.accelRedirect ? new AccelRedirect(config.server.accelRedirect.location, config.server.trustedProxies) : undefined,
  };
  return {
    generation,
    activate: () => {
      if (!authPart || !config.auth?.htpasswd) return [];
      if (authPart.auth === before?.auth?.auth && !sameEntries(authPart.users, before.auth.users)) authPart.auth.replaceUsers(authPart.users);
      return [`htpasswd (${authPart.users.size} users)`];
    },
    closeExcept: async (keep) => {
      const inUse = new Set<unknown>(keep.flatMap((k) => [...k.owned.upstreams.values(), k.owned.auth?.auth]));
      const closing = [...upstreamParts.values()].filter((p) => !inUse.has(p));
      await Promise.all(closing.map((p) => p.pool.close().catch((err: unknown) => core.logger.warn({ upstream: p.client.name, err: (err as Error).message }, 'closing an upstream pool failed'))));
      if (authPart && !inUse.has(authPart.auth)) await authPart.auth.close();
    },
    owned: { upstreams: upstreamParts, auth: authPart, limiter: limiterPart },
  };
}

function buildUpstream(name: string, upstream: UpstreamConfig, config: Readonly<Config>, core: Core, fingerprint: string): UpstreamPart {
  const credentials = resolveCredentials(name, upstream);
  const pool = createDispatcher(name, upstream, config, { logger: core.logger, metrics: core.metrics });
  const t = config.timeouts;
  const client = new UpstreamClient({
    name,
    url: upstream.url,
    credentials,
    tokenRealms: upstream.tokenRealms,
    isolated: upstream.repositoryIsolation ?? credentials !== undefined,
    namespace: upstream.sendNamespace ? name : undefined,
    dispatcher: pool.dispatcher,
    timeouts: { headers: t.headers, bodyIdle: t.bodyIdle, body: t.body, backoff: t.upstreamBackoff },
    metrics: core.metrics,
  });
  return { fingerprint, client, pool };
}

/**
 * Everything an upstream's client and pool are built from: its section, the
 * secret and CA file contents (a rotated password or CA makes a new client),
 * the timeouts and the network policy. Hashed: it holds a password.
 */
function upstreamFingerprint(name: string, upstream: UpstreamConfig, config: Readonly<Config>): string {
  const t = config.timeouts;
  return sha256(
    JSON.stringify({
      upstream,
      credentials: resolveCredentials(name, upstream) ?? null,
      ca: upstream.ca ? readCa(name, upstream.ca) : null,
      timeouts: [t.connect, t.headers, t.bodyIdle, t.body, t.upstreamBackoff],
      deny: config.network.deny,
    }),
  ).toString('hex');
}

/**
 * Client authentication for this configuration: the previous one carried over
 * (its password workers, failed-login counts and remembered verdicts) when
 * its settings and tokens are the same, whatever the htpasswd file now holds.
 */
function authFor(config: Readonly<Config>, metrics: Metrics, previous: AuthPart | undefined): AuthPart {
  const auth = config.auth as NonNullable<Config['auth']>;
  const users = auth.htpasswd ? readHtpasswd(auth.htpasswd) : new Map<string, string>();
  const tokens = auth.tokens.map((t, i) => ({
    name: t.name,
    token: readSecret(`auth.tokens.${i}.token`, { value: t.token, file: t.tokenFile, env: t.tokenEnv }) ?? '',
    repositories: t.repositories,
  }));
  const fingerprint = sha256(JSON.stringify({ auth, tokens, defaultUpstream: config.defaultUpstream })).toString('hex');
  if (previous?.fingerprint === fingerprint) return { fingerprint, auth: previous.auth, users };
  const client = new ClientAuth({
    defaultUpstream: config.defaultUpstream,
    passwords: new PasswordCheckPool({ workers: auth.passwordWorkers, queue: auth.passwordQueue }),
    failedLogins: new FailedLoginLimiter(auth.failedLogins),
    onCheck: (outcome) => metrics.clientLogins.inc({ outcome }),
    users,
    grants: auth.users,
    tokens,
  });
  return { fingerprint, auth: client, users };
}

/**
 * Per-client limits, carried over when they did not change: a client's requests
 * in flight and its token bucket count on across the reload.
 */
function limiterFor(config: Readonly<Config>, previous: LimiterPart | undefined): LimiterPart | undefined {
  const perClient = config.limits.perClient;
  if (!perClient.concurrentRequests && !perClient.requestsPerSecond) return undefined;
  const fingerprint = JSON.stringify(perClient);
  return previous?.fingerprint === fingerprint ? previous : { fingerprint, limiter: new RateLimiter(perClient) };
}

function sameEntries(a: ReadonlyMap<string, string>, b: ReadonlyMap<string, string>): boolean {
  return a.size === b.size && [...a].every(([k, v]) => b.get(k) === v);
}

/** admin.token, or ARCHWAY_ADMIN_TOKEN, which wins: a token from a Kubernetes Secret need not be written into the config. */
function adminToken(config: Readonly<Config>): string | undefined {
  const fromEnv = process.env.ARCHWAY_ADMIN_TOKEN;
  if (fromEnv !== undefined && fromEnv !== '') {
    if (fromEnv.length < 16) throw new ConfigError('ARCHWAY_ADMIN_TOKEN must be at least 16 characters');
    return fromEnv;
  }
  return config.admin.token;
}
