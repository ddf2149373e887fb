import { z } from 'zod';
import { parseCidr } from '../platform/cidr.ts';
import { formatPlatform, parsePlatform } from '../platform/platform.ts';
import { parseDuration, parseSize } from './units.ts';

/** A size or duration in human units, parsed by `parse`; its error message becomes the field's. */
function withUnits(parse: (v: string | number) => number) {
  return z.union([z.string(), z.number()]).transform((v, ctx) => {
    try {
      return parse(v);
    } catch (e) {
      ctx.addIssue({ code: 'custom', message: (e as Error).message });
      return z.NEVER;
    }
  });
}

const size = withUnits(parseSize);
const duration = withUnits(parseDuration);

/**
 * os/arch[/variant], normalised (`linux/aarch64` is stored as `linux/arm64`).
 * A Windows build goes in parentheses after the os, `windows(10.0.17763)/amd64`:
 * containerd's and `ctr --platform`'s own spelling, so one string means the
 * same to archway and to the machines it serves, and it fits every place a
 * platform string already goes (rules, virtual members, prefetch, default).
 */
function normalisedPlatform(v: string, ctx: z.RefinementCtx): string {
  try {
    return formatPlatform(parsePlatform(v));
  } catch (e) {
    ctx.addIssue({ code: 'custom', message: (e as Error).message });
    return z.NEVER;
  }
}

const platformString = z.string().transform(normalisedPlatform);

const cidr = z.string().refine(
  (v) => {
    try {
      parseCidr(v);
      return true;
    } catch {
      return false;
    }
  },
  { message: 'must be an IP address or CIDR, e.g. 10.0.0.0/8' },
);

/** A host name as it appears in a URL (lower case, no port), e.g. cdn.example.com. */
const hostname = z.string().regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/, 'must be a host name, e.g. cdn.example.com');

const regex = z.string().refine(
  (v) => {
    try {
      new RegExp(v);
      return true;
    } catch {
      return false;
    }
  },
  { message: 'must be a valid regular expression' },
);

const platformRule = z
  .object({
    match: z
      .object({
        port: z.number().int().min(1).max(65535).optional(),
        host: z.string().optional(),
        clientCidr: z.union([cidr, z.array(cidr)]).optional(),
        userAgent: regex.optional(),
        repository: z.string().optional(),
      })
      .strict()
      .default({}),
    /** `detected` (from the client's User-Agent) or a forced os[(os.version)]/arch[/variant]. */
    platform: z.string().transform((v, ctx) => (v === 'detected' ? v : normalisedPlatform(v, ctx))),
    mode: z.enum(['passthrough', 'resolve', 'filter']),
  })
  .strict();

const httpUrl = z.url({ protocol: /^https?$/, error: 'must be an http:// or https:// URL' });

const upstream = z
  .object({
    url: httpUrl,
    username: z.string().optional(),
    password: z.string().optional(),
    /** Read the password from a file (a mounted secret), so it stays out of this file. */
    passwordFile: z.string().optional(),
    /** Read the password from this environment variable. */
    passwordEnv: z.string().optional(),
    /** PEM file of extra CA certificates to trust for this upstream. */
    ca: z.string().optional(),
    /** Skip TLS certificate verification (self-signed test registries only). */
    insecure: z.boolean().default(false),
    /**
     * Serve content cached through one repository to another only after the upstream
     * confirms it there. Default: on when credentials are configured (private content).
     */
    repositoryIsolation: z.boolean().optional(),
    /**
     * The url is a mirror of this registry that serves several (another archway, a central tier):
     * send `?ns=<this key>` with every request so it routes them, as containerd does with mirrors.
     */
    sendNamespace: z.boolean().default(false),
    /**
     * Hosts (cdn.example.com) or CIDRs this upstream may send archway to by a redirect or a token realm,
     * beyond the default: never link-local/metadata addresses, never further inside than the upstream
     * itself (a public upstream to a private or loopback address). network.deny still wins.
     */
    allowRedirectsTo: z.array(z.union([cidr, hostname], { error: 'must be a host name or a CIDR' })).default([]),
    /**
     * Token realm hosts besides the registry's own that may receive the username and password
     * (Docker Hub's auth.docker.io is known): credentials never go to a host the upstream merely names.
     */
    tokenRealms: z.array(z.string().regex(/^[a-z0-9.-]+(?::\d+)?$/, 'token realms are hosts, e.g. auth.example.com')).default([]),
    /** Other names clients use for this registry (docker.io: index.docker.io, registry-1.docker.io). */
    aliases: z.array(z.string().regex(/^[a-z0-9.-]+(?::\d+)?$/, 'aliases are registry hosts')).default([]),
  })
  .strict()
  .refine((u) => [u.password, u.passwordFile, u.passwordEnv].filter((p) => p !== undefined).length <= 1, {
    message: 'give at most one of password, passwordFile, passwordEnv',
  });

/** Docker Hub's per-architecture organisations (docker-library's official images), for `members: dockerhub`. */
export const DOCKERHUB_ARCHITECTURES: Readonly<Record<string, string>> = {
  'linux/amd64': 'amd64/{name}',
  'linux/arm64': 'arm64v8/{name}',
  'linux/arm/v7': 'arm32v7/{name}',
  'linux/arm/v6': 'arm32v6/{name}',
  'linux/arm/v5': 'arm32v5/{name}',
  'linux/386': 'i386/{name}',
  'linux/ppc64le': 'ppc64le/{name}',
  'linux/s390x': 's390x/{name}',
  'linux/riscv64': 'riscv64/{name}',
  'linux/mips64le': 'mips64le/{name}',
};

const NAME_COMPONENT = '[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*';

const virtualImage = z
  .object({
    /** The registry the virtual name lives in, and where members without a registry host are fetched. Default: defaultUpstream. */
    upstream: z.string().optional(),
    /**
     * os/arch[/variant] → member repository (`arm64v8/node`, or `ghcr.io/org/app-arm64` on another upstream).
     * `{name}` stands for what the `*` of a template name matched (or the whole name). `dockerhub`: Docker Hub's
     * per-architecture organisations, `amd64/{name}`, `arm64v8/{name}`, …
     */
    members: z.union([z.literal('dockerhub'), z.record(z.string(), z.string().min(1))]).transform((members, ctx) => {
      const out: Record<string, string> = {};
      for (const [platform, repository] of Object.entries(members === 'dockerhub' ? DOCKERHUB_ARCHITECTURES : members)) {
        const key = normalisedPlatform(platform, ctx);
        if (key in out) ctx.addIssue({ code: 'custom', path: [platform], message: `${key} is listed twice` });
        out[key] = repository;
      }
      if (Object.keys(out).length === 0) ctx.addIssue({ code: 'custom', message: 'a virtual image needs at least one member' });
      return out;
    }),
  })
  .strict();

const clientToken = z
  .object({
    /** Shown in logs instead of the token. */
    name: z.string(),
    token: z.string().min(16, 'tokens must be at least 16 characters').optional(),
    tokenFile: z.string().optional(),
    tokenEnv: z.string().optional(),
    repositories: z.array(z.string()).default(['**']),
  })
  .strict()
  .refine((t) => [t.token, t.tokenFile, t.tokenEnv].filter((x) => x !== undefined).length === 1, {
    message: 'give exactly one of token, tokenFile, tokenEnv',
  });

/**
 * Repositories that are archway's own (config `local`): multi-platform tags composed by a push
 * (`docker manifest push`) from images archway can already read. Only manifests and tags are stored;
 * blobs are mounted from where they came from.
 */
const localNamespace = z
  .object({
    /** Repository patterns (`team/**`); without a registry host they are in defaultUpstream, like auth grants. */
    repositories: z.array(z.string().min(1)).min(1),
    /** htpasswd users and token names (auth) that may push to and delete from these repositories. */
    push: z.array(z.string().min(1)).default([]),
  })
  .strict();

export const configSchema = z
  .object({
    server: z
      .object({
        host: z.string().default('0.0.0.0'),
        port: z.number().int().min(0).max(65535).default(5000),
        /** More listeners, e.g. one per platform rule (`platform.rules[].match.port`). */
        ports: z.array(z.number().int().min(1).max(65535)).default([]),
        /** Proxies whose X-Forwarded-For is believed (addresses or CIDRs); nobody else's is. */
        trustedProxies: z.array(cidr).default([]),
        /** How long shutdown waits for in-flight responses before closing them. */
        shutdownTimeout: duration.default(10_000),
        /**
         * Open connections per listener (Node's server.maxConnections); beyond it a new
         * connection is closed at once. Each holds a socket and its buffers: a bound, like
         * nginx's worker_connections, far above what a fleet of pulling clients opens.
         */
        maxConnections: z.number().int().positive().default(10_000),
        /** HTTPS on every listener; both files are re-read on SIGHUP. */
        tls: z.object({ cert: z.string(), key: z.string() }).strict().optional(),
        /**
         * An nginx in front sends verified cached blob files itself (X-Accel-Redirect to its
         * `internal` location over cache.dir/blobs, sendfile instead of Node copying every byte).
         * Only for requests from server.trustedProxies that carry `X-Archway-Accel: <location>`;
         * everyone else gets the bytes from archway. Off when absent (docs/operating.md).
         */
        accelRedirect: z
          .object({
            location: z
              .string()
              .regex(/^\/[A-Za-z0-9._~-]+(?:\/[A-Za-z0-9._~-]+)*\/$/, 'a URI path that starts and ends with /, e.g. /_archway_blobs/'),
          })
          .strict()
          .optional(),
      })
      .strict()
      .refine((s) => s.accelRedirect === undefined || s.trustedProxies.length > 0, {
        path: ['accelRedirect'],
        message: 'needs server.trustedProxies: only a request from the nginx in front may be redirected',
      })
      .prefault({}),
    cache: z
      .object({
        dir: z.string().default('./data'),
        maxSize: size.default(20 * 1024 ** 3),
        /**
         * The longest blob body accepted when neither a manifest archway served nor the
         * upstream's Content-Length says how long it is (an endless chunked body stops here).
         * Default: cache.maxSize.
         */
        maxBlobSize: size.optional(),
        tagTtl: duration.default(5 * 60_000),
        /**
         * Re-verify every cached blob once per this period, in the background (off when absent):
         * reads verify a blob once per process, a scrub finds rot in blobs nobody asks for, or
         * asked for long ago. At least 1 s; a full pass may take longer than the period (scrubRate).
         */
        scrub: duration.pipe(z.number().min(1000, 'must be at least 1s')).optional(),
        /** Bytes per second a scrub reads at most: it must not take the disk from clients. */
        scrubRate: size.pipe(z.number().min(64 * 1024, 'must be at least 64KiB (per second)')).default(32 * 1024 ** 2),
      })
      .strict()
      .prefault({}),
    timeouts: z
      .object({
        connect: duration.default(10_000),
        /** Until the upstream's response headers arrive. */
        headers: duration.default(30_000),
        /** Longest silence while a body streams. */
        bodyIdle: duration.default(30_000),
        /** How long a cached tag past its TTL waits for the upstream's confirmation before it is served stale. */
        revalidate: duration.default(5_000),
        /**
         * After an upstream fails, cached tags are served stale without asking it for this long (a dead
         * upstream would cost every request `revalidate`); the pause doubles with each failure in a row,
         * up to 12 times this (a minute by default). Short in tests, which would otherwise sleep it out.
         */
        upstreamBackoff: duration.default(5_000),
        /**
         * The least time a whole upstream body may take (a trickle of a byte every few seconds never
         * trips bodyIdle): a blob gets max(this, size / bodyMinRate), every other body this.
         */
        body: duration.default(5 * 60_000),
        /** The slowest average rate a blob body may arrive at, past `body`, in bytes per second. */
        bodyMinRate: size.pipe(z.number().min(1, 'must be at least 1 byte per second')).default(256 * 1024),
        /**
         * A client connection with bytes waiting to go out that takes none of them for
         * this long is closed, releasing the blob it pinned, its file and its buffers
         * (nginx's send_timeout). Time archway spends waiting for an upstream does not count.
         */
        clientIdle: duration.default(60_000),
        /** Until a client's request headers have all arrived (nginx's client_header_timeout); a half-sent request is then closed. */
        clientHeaders: duration.default(60_000),
        /** After the headers, until the request body has arrived (nginx's client_body_timeout); archway reads no bodies but refuses them politely. */
        clientBody: duration.default(60_000),
        /** How long an idle keep-alive connection stays open between requests (nginx's keepalive_timeout). */
        clientKeepAlive: duration.default(75_000),
      })
      .strict()
      .prefault({}),
    network: z
      .object({
        /**
         * CIDRs archway never connects to, whoever sends it there (an upstream's own host included):
         * the operator's last word over defaults and allowRedirectsTo, e.g. the cluster's service range.
         */
        deny: z.array(cidr).default([]),
      })
      .strict()
      .prefault({}),
    upstreams: z.record(z.string().regex(/^[a-z0-9.-]+(?::\d+)?$/, 'upstream keys are registry hosts, e.g. docker.io'), upstream),
    defaultUpstream: z.string(),
    /** Authentication of archway's own clients; absent: anyone may pull. */
    auth: z
      .object({
        /** bcrypt htpasswd file (htpasswd -B) for Basic auth. */
        htpasswd: z.string().optional(),
        /** Repository patterns per htpasswd user; a user without an entry may pull everything. */
        users: z.record(z.string(), z.array(z.string())).default({}),
        /** Static bearer tokens. */
        tokens: z.array(clientToken).default([]),
        /** Put /metrics behind the same authentication (health endpoints stay open). */
        protectMetrics: z.boolean().default(false),
        /**
         * Failed Basic logins per client address (IPv6: per /64), counted before any
         * bcrypt: `burst` at once, then `perMinute`. Beyond: 429 with Retry-After.
         * Remembered good credentials are never limited, so users behind a guesser's NAT keep pulling.
         */
        failedLogins: z
          .object({ burst: z.number().int().positive().default(20), perMinute: z.number().positive().default(10) })
          .strict()
          .prefault({}),
        /** Worker threads running bcrypt: guessing can take this many cores and never the event loop. */
        passwordWorkers: z.number().int().min(1).max(16).default(1),
        /** Password checks that may wait for a worker; beyond, 429 at once (a legitimate login never waits behind an unbounded queue). */
        passwordQueue: z.number().int().min(0).default(16),
      })
      .strict()
      .refine((a) => a.htpasswd !== undefined || a.tokens.length > 0, { message: 'configure htpasswd or tokens (or remove auth)' })
      .optional(),
    limits: z
      .object({
        perClient: z
          .object({
            concurrentRequests: z.number().int().positive().optional(),
            requestsPerSecond: z.number().positive().optional(),
          })
          .strict()
          .prefault({}),
        /**
         * Fills that go on after their last client left (so the blob is cached for the next one).
         * Beyond this many, a fill whose last reader leaves is cancelled: a client that starts many
         * large downloads and hangs up cannot make archway fetch them all.
         */
        backgroundFills: z.number().int().min(0).default(8),
        /**
         * Pages of one member's tag list a virtual image's tags/list follows (the upstream's
         * `Link: rel="next"`), and tags it keeps of it: an upstream that links on forever must not
         * make one tags/list request endless. Beyond either, the list is cut short (and logged).
         */
        memberTagPages: z.number().int().positive().default(100),
        memberTags: z.number().int().positive().default(10_000),
      })
      .strict()
      .prefault({}),
    platform: z
      .object({
        /** What a client that cannot read indexes gets when neither a rule nor its User-Agent names a platform. */
        default: platformString.default('linux/amd64'),
        /** First match wins; no match: passthrough. */
        rules: z.array(platformRule).default([]),
      })
      .strict()
      .prefault({}),
    /** Where blobs and manifests live: the filesystem under cache.dir (default), or an S3-compatible bucket shared by replicas. */
    storage: z
      .object({
        type: z.enum(['filesystem', 's3']).default('filesystem'),
        s3: z
          .object({
            bucket: z.string().min(3),
            /** Key prefix inside the bucket, e.g. `archway/`. */
            prefix: z.string().default(''),
            region: z.string().default('us-east-1'),
            /** For MinIO, Ceph and other S3-compatible services. */
            endpoint: httpUrl.optional(),
            forcePathStyle: z.boolean().default(false),
            /** Without these, the standard AWS chain (environment, shared files, instance role). */
            accessKeyId: z.string().optional(),
            secretAccessKey: z.string().optional(),
            /** Answer blob GETs with a 307 to a presigned URL, so blob bytes bypass the replicas. */
            redirect: z.boolean().default(false),
          })
          .strict()
          .optional(),
      })
      .strict()
      .prefault({})
      .refine((st) => st.type !== 's3' || st.s3 !== undefined, { message: 'storage.type s3 needs storage.s3 (bucket, …)' }),
    /** Coordination of replicas (shared tags, fill leases, blob index); without it everything stays in-process. */
    redis: z
      .object({
        /** One Redis server; or `sentinels` + `name` for a primary that Sentinel fails over (exactly one of the two). */
        url: z.string().regex(/^rediss?:\/\//, 'a redis:// or rediss:// URL').optional(),
        /** Sentinels to ask where the primary of `name` is (host:port each); archway follows a promoted replica without a restart. */
        sentinels: z.array(z.string().regex(/^[A-Za-z0-9.-]+:\d{1,5}$/, 'a sentinel is host:port, e.g. sentinel-1:26379')).min(1).optional(),
        /** The master group name the sentinels monitor (`sentinel monitor <name> …`). */
        name: z.string().min(1).optional(),
        /** The Redis servers' password (AUTH) when reached through sentinels; with `url`, put it in the URL. */
        password: z.string().optional(),
        /** The sentinels' own password, if they require one (`requirepass` in sentinel.conf). */
        sentinelPassword: z.string().optional(),
        /** How long a replica waits for another replica's download of a blob before fetching it itself: under clients' progress timeouts (containerd: 5 min). */
        fillWait: duration.default(2 * 60_000),
      })
      .strict()
      .superRefine((r, ctx) => {
        if ((r.url === undefined) === (r.sentinels === undefined)) {
          ctx.addIssue({ code: 'custom', path: ['url'], message: 'give exactly one of redis.url and redis.sentinels' });
        }
        if (r.sentinels !== undefined && r.name === undefined) {
          ctx.addIssue({ code: 'custom', path: ['name'], message: 'redis.sentinels needs redis.name (the master group the sentinels monitor)' });
        }
        for (const key of ['name', 'password', 'sentinelPassword'] as const) {
          if (r.url !== undefined && r[key] !== undefined) ctx.addIssue({ code: 'custom', path: [key], message: `redis.${key} goes with redis.sentinels; with redis.url, the URL says it` });
        }
      })
      .optional(),
    /** The admin API and status page under /_archway/; off unless a token is set here or in ARCHWAY_ADMIN_TOKEN. */
    admin: z
      .object({ token: z.string().min(16, 'the admin token must be at least 16 characters').optional() })
      .strict()
      .prefault({}),
    /** Multi-platform images assembled on the fly from per-architecture repositories, by name; `prefix/*` is a template. */
    virtual: z
      .record(
        z.string().regex(new RegExp(`^${NAME_COMPONENT}(?:/${NAME_COMPONENT})*(?:/\\*)?$`), 'a repository name, or a template ending in /*'),
        virtualImage,
      )
      .default({}),
    /** Local namespaces: pushed multi-platform tags, stored under `<cache.dir>/local/` (or the bucket's `local/`) and never evicted. */
    local: z
      .object({
        namespaces: z.array(localNamespace).default([]),
        /** The longest manifest a push may send (distribution's limit is 4 MiB). */
        maxManifestSize: size.pipe(z.number().int().min(1024, 'must be at least 1KiB')).default(4 * 1024 ** 2),
        /** Bytes the local folder may hold (manifests, tags, blob records); beyond it a push is refused. Not part of cache.maxSize. */
        maxSize: size.default(1024 ** 3),
      })
      .strict()
      .prefault({}),
    log: z
      .object({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info') })
      .strict()
      .prefault({}),
  })
  .strict()
  .superRefine((c, ctx) => {
    if (Object.keys(c.upstreams).length === 0) {
      ctx.addIssue({ code: 'custom', path: ['upstreams'], message: 'configure at least one upstream' });
    }
    const ports = [c.server.port, ...c.server.ports];
    if (new Set(ports).size !== ports.length) {
      ctx.addIssue({ code: 'custom', path: ['server', 'ports'], message: 'each port may be listed once (server.port included)' });
    }
    for (const [i, rule] of c.platform.rules.entries()) {
      const port = rule.match.port;
      if (port !== undefined && port !== c.server.port && !c.server.ports.includes(port)) {
        ctx.addIssue({ code: 'custom', path: ['platform', 'rules', i, 'match', 'port'], message: `archway does not listen on ${port} (add it to server.ports)` });
      }
    }
    if (!(c.defaultUpstream in c.upstreams)) {
      ctx.addIssue({ code: 'custom', path: ['defaultUpstream'], message: `"${c.defaultUpstream}" is not a key of upstreams` });
    }
    if (c.local.namespaces.length > 0 && !c.auth) {
      ctx.addIssue({ code: 'custom', path: ['local'], message: 'local namespaces take pushes, which need authenticated clients: configure auth (htpasswd or tokens)' });
    }
    const registries = new Set(Object.entries(c.upstreams).flatMap(([key, u]) => [key, ...u.aliases]));
    for (const [name, v] of Object.entries(c.virtual)) {
      if (v.upstream !== undefined && !(v.upstream in c.upstreams)) {
        ctx.addIssue({ code: 'custom', path: ['virtual', name, 'upstream'], message: `"${v.upstream}" is not a key of upstreams` });
      }
      for (const [platform, repository] of Object.entries(v.members)) {
        const first = repository.split('/')[0] ?? '';
        if (repository.includes('/') && /[.:]|^localhost$/.test(first) && !registries.has(first)) {
          ctx.addIssue({ code: 'custom', path: ['virtual', name, 'members', platform], message: `registry ${first} is not configured in upstreams` });
        }
      }
    }
  });

export type ConfigInput = z.input<typeof configSchema>;
export type Config = z.output<typeof configSchema>;
export type UpstreamConfig = Config['upstreams'][string];
