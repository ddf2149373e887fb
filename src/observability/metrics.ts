import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/**
 * Every Prometheus metric archway exposes, on a registry owned by one app
 * instance (never prom-client's global one), so several apps in one process
 * (the tests) do not share counters.
 */
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'archway_' });
  const m = {
    registry,
    requests: new Counter({
      name: 'archway_http_requests_total',
      help: 'HTTP requests answered, by route and status',
      labelNames: ['route', 'method', 'status'] as const,
      registers: [registry],
    }),
    clientLogins: new Counter({
      name: 'archway_client_login_checks_total',
      help: 'Password checks of archway clients by outcome: ok, refused, limited (failed-login limit, no hash), busy (queue full, no hash)',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    cacheLookups: new Counter({
      name: 'archway_cache_lookups_total',
      help: 'Cache outcomes by kind (blob, manifest, tag) and outcome (hit, miss, coalesced, stale, revalidated)',
      labelNames: ['kind', 'outcome'] as const,
      registers: [registry],
    }),
    servedBytes: new Counter({
      name: 'archway_served_bytes_total',
      help: 'Blob bytes sent to clients, by source (cache or upstream fill)',
      labelNames: ['source'] as const,
      registers: [registry],
    }),
    accelRedirects: new Counter({
      name: 'archway_accel_redirects_total',
      help: 'Cached blob answers the nginx in front sent from the file itself (server.accelRedirect); their bytes are in archway_served_bytes_total{source="cache"}',
      registers: [registry],
    }),
    upstreamBytes: new Counter({
      name: 'archway_upstream_bytes_total',
      help: 'Blob bytes received from upstreams',
      labelNames: ['upstream'] as const,
      registers: [registry],
    }),
    upstreamLatency: new Histogram({
      name: 'archway_upstream_request_seconds',
      help: 'Time to the upstream response headers, by upstream, kind and status',
      labelNames: ['upstream', 'kind', 'status'] as const,
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
    upstreamConnectionsRefused: new Counter({
      name: 'archway_upstream_connections_refused_total',
      help: 'Connections to an upstream, a redirect target or a token realm refused by the network policy, by upstream and reason',
      labelNames: ['upstream', 'reason'] as const,
      registers: [registry],
    }),
    upstreamInFlight: new Gauge({
      name: 'archway_upstream_inflight_requests',
      help: 'Upstream requests under way',
      labelNames: ['upstream'] as const,
      registers: [registry],
    }),
    activeFills: new Gauge({
      name: 'archway_blob_fills_inflight',
      help: 'Blob fills (upstream downloads into the cache) under way',
      registers: [registry],
    }),
    digestMismatches: new Counter({
      name: 'archway_digest_mismatches_total',
      help: 'Upstream content whose digest or size did not match; never cached',
      labelNames: ['kind'] as const,
      registers: [registry],
    }),
    fillAborts: new Counter({
      name: 'archway_blob_fill_aborts_total',
      help: 'Blob fills stopped before their end, by reason (too-long, short, digest, size-mismatch, deadline, unread); nothing of them is cached',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    uncachedRelays: new Counter({
      name: 'archway_blob_uncached_relays_total',
      help: 'Blob fills relayed to their clients without caching, by reason (too-large, no-room, storage)',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    backgroundFills: new Gauge({
      name: 'archway_blob_fills_background',
      help: 'Blob fills going on with no client reading them (bounded by limits.backgroundFills)',
      registers: [registry],
    }),
    staleServed: new Counter({
      name: 'archway_stale_served_total',
      help: 'Tags answered from cache past their TTL because the upstream failed',
      labelNames: ['upstream'] as const,
      registers: [registry],
    }),
    platformRewrites: new Counter({
      name: 'archway_platform_rewrites_total',
      help: 'Tag answers made for one platform from a multi-platform index, by mode and platform',
      labelNames: ['mode', 'platform'] as const,
      registers: [registry],
    }),
    cacheBytes: new Gauge({
      name: 'archway_cache_bytes',
      help: 'Bytes of blobs held in the cache',
      registers: [registry],
    }),
    cacheBudget: new Gauge({
      name: 'archway_cache_budget_bytes',
      help: 'cache.maxSize: the bytes the cache may hold before it evicts (beside archway_cache_bytes, how full it is)',
      registers: [registry],
    }),
    cacheBlobs: new Gauge({
      name: 'archway_cache_blobs',
      help: 'Blobs held in the cache',
      registers: [registry],
    }),
    cacheWriteFailures: new Counter({
      name: 'archway_cache_write_failures_total',
      help: 'Writes to the cache that failed (disk full, read-only, I/O errors), by what was written',
      labelNames: ['what'] as const,
      registers: [registry],
    }),
    cacheStorageFailing: new Gauge({
      name: 'archway_cache_storage_failing',
      help: '1 while the cache disk refuses writes and archway serves without caching',
      registers: [registry],
    }),
    damagedBlobs: new Counter({
      name: 'archway_cache_damaged_blobs_total',
      help: 'Cached blobs whose stored bytes did not match their digest (or size), found by a read or a scrub; removed and fetched again on the next request',
      registers: [registry],
    }),
    scrubbedBytes: new Counter({
      name: 'archway_cache_scrubbed_bytes_total',
      help: 'Bytes of cached blobs re-read and hashed by the background scrub (cache.scrub)',
      registers: [registry],
    }),
    configReloads: new Counter({
      name: 'archway_config_reloads_total',
      help: 'Configuration reloads (SIGHUP, POST /_archway/reload) by outcome: applied, or refused (nothing changed)',
      labelNames: ['outcome'] as const,
      registers: [registry],
    }),
    configGeneration: new Gauge({
      name: 'archway_config_generation',
      help: 'The configuration generation in use: 1 at start, one more per applied reload (replicas that differ run different configurations)',
      registers: [registry],
    }),
    configGenerationsDraining: new Gauge({
      name: 'archway_config_generations_draining',
      help: 'Replaced configuration generations whose requests are still running (their upstream pools still open)',
      registers: [registry],
    }),
    clientsDropped: new Counter({
      name: 'archway_client_connections_dropped_total',
      help: 'Client connections closed by archway: stalled (took no bytes for timeouts.clientIdle) or over server.maxConnections',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    coordinationDegraded: new Gauge({
      name: 'archway_coordination_degraded',
      help: '1 while the configured Redis is unreachable and this replica coordinates within itself only; 0 when connected or when no Redis is configured',
      registers: [registry],
    }),
    evictions: new Counter({
      name: 'archway_cache_evictions_total',
      help: 'Blobs evicted to stay under cache.maxSize',
      registers: [registry],
    }),
  };
  // Series that exist from the start: a series first scraped after its first increment shows no
  // increase to rate(), so a hit ratio or byte split would stay blank until the second event.
  for (const kind of ['blob', 'manifest', 'tag']) {
    for (const outcome of ['hit', 'miss', 'coalesced']) m.cacheLookups.inc({ kind, outcome }, 0);
  }
  for (const source of ['cache', 'upstream']) m.servedBytes.inc({ source }, 0);
  return m;
}

export type Metrics = ReturnType<typeof createMetrics>;
