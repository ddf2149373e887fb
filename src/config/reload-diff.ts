import type { Config } from './schema.ts';

/**
 * What a reload cannot change in a running archway, and why: the cache and
 * its storage are opened once (the disk budget, the LRU, the scrubber, the
 * connections to a bucket and Redis, and the in-memory caches over them);
 * the main listener's address and the proxies fastify believes are fixed
 * when the app is built; HTTP and HTTPS are different listeners. A reload
 * that changes one is refused as a whole (docs/operating.md).
 */
const RESTART_ONLY: ReadonlyArray<{ field: string; of: (c: Readonly<Config>) => unknown }> = [
  { field: 'server.host', of: (c) => c.server.host },
  { field: 'server.port', of: (c) => c.server.port },
  { field: 'server.trustedProxies', of: (c) => c.server.trustedProxies },
  // The certificate files may change (and are re-read on every reload); HTTPS on or off may not.
  { field: 'server.tls', of: (c) => c.server.tls !== undefined },
  { field: 'cache', of: (c) => c.cache },
  { field: 'storage', of: (c) => c.storage },
  { field: 'redis', of: (c) => c.redis },
  // The local store's bound is counted from the start; the namespaces and the manifest limit reload.
  { field: 'local.maxSize', of: (c) => c.local.maxSize },
];

/** The restart-only fields `next` changes against `running`: a reload naming any changes nothing. */
export function restartOnlyChanges(running: Readonly<Config>, next: Readonly<Config>): string[] {
  return RESTART_ONLY.filter(({ of }) => !same(of(running), of(next))).map(({ field }) => field);
}

/**
 * What a reload changes, in words for its log line and answer:
 * `upstreams: +ghcr.io ~docker.io`, `platform rules`, `listeners: +5001 -5002`.
 */
export function configChanges(old: Readonly<Config>, next: Readonly<Config>): string[] {
  const changes: string[] = [];
  const keyed = (label: string, a: Readonly<Record<string, unknown>>, b: Readonly<Record<string, unknown>>) => {
    const marks = [
      ...Object.keys(b).filter((k) => !(k in a)).map((k) => `+${k}`),
      ...Object.keys(a).filter((k) => !(k in b)).map((k) => `-${k}`),
      ...Object.keys(b).filter((k) => k in a && !same(a[k], b[k])).map((k) => `~${k}`),
    ];
    if (marks.length) changes.push(`${label}: ${marks.join(' ')}`);
  };
  const plain = (label: string, a: unknown, b: unknown) => {
    if (!same(a, b)) changes.push(label);
  };
  keyed('upstreams', old.upstreams, next.upstreams);
  plain(`defaultUpstream ${next.defaultUpstream}`, old.defaultUpstream, next.defaultUpstream);
  plain('platform default', old.platform.default, next.platform.default);
  plain('platform rules', old.platform.rules, next.platform.rules);
  keyed('virtual', old.virtual, next.virtual);
  plain('auth', old.auth, next.auth);
  plain('limits', old.limits, next.limits);
  plain('timeouts', old.timeouts, next.timeouts);
  plain('network', old.network, next.network);
  plain('admin', old.admin, next.admin);
  plain(`log.level ${next.log.level}`, old.log.level, next.log.level);
  const { ports: oldPorts, tls: _oldTls, ...oldServer } = old.server;
  const { ports: newPorts, tls: _newTls, ...newServer } = next.server;
  const listeners = [...newPorts.filter((p) => !oldPorts.includes(p)).map((p) => `+${p}`), ...oldPorts.filter((p) => !newPorts.includes(p)).map((p) => `-${p}`)];
  if (listeners.length) changes.push(`listeners: ${listeners.join(' ')}`);
  plain('server settings', oldServer, newServer);
  // Sections a reload knows nothing about (a newer schema's): still named when they change.
  const known = new Set(['upstreams', 'defaultUpstream', 'platform', 'virtual', 'auth', 'limits', 'timeouts', 'network', 'admin', 'log', 'server', 'cache', 'storage', 'redis']);
  for (const key of Object.keys({ ...old, ...next })) {
    if (!known.has(key)) plain(key, (old as Record<string, unknown>)[key], (next as Record<string, unknown>)[key]);
  }
  return changes;
}

/** Configs are plain data from YAML (objects, arrays, strings, numbers): equal when their JSON is. */
function same(a: unknown, b: unknown): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}
