// A real redis-server (Debian `redis-server`) on loopback, without persistence,
// that tests can stop and start again on the same port; and a Sentinel
// topology (primary, replica, three sentinels) whose primary a test can kill.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect } from 'node:net';
import { Redis } from 'ioredis';
import { ensureCommands } from './packages.ts';
import { freePort } from './ports.ts';
import { startProcess, waitFor, type ManagedProcess } from './process.ts';
import { tempDir } from './tmp.ts';

export interface RedisHandle {
  url: string;
  port: number;
  stop(): Promise<void>;
  /** Start again on the same port (empty: no persistence). */
  start(): Promise<void>;
}

export async function startRedis(): Promise<RedisHandle> {
  await ensureCommands([{ command: 'redis-server', debianPackage: 'redis-server' }]);
  const dir = await tempDir('archway-redis-');
  const port = await freePort();
  let proc: ManagedProcess | undefined;
  const start = async () => {
    proc = await startProcess({
      name: 'redis-server',
      command: 'redis-server',
      args: ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
      logFile: join(dir, 'redis.log'),
    });
    const p = proc;
    await waitFor(() => canConnect(port), { timeoutMs: 10_000, description: 'redis-server listening', proc: p });
  };
  await start();
  return {
    url: `redis://127.0.0.1:${port}/0`,
    port,
    stop: async () => {
      await proc?.stop();
      proc = undefined;
    },
    start,
  };
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

export interface SentinelTopology {
  /** The master group name the sentinels monitor (archway's redis.name). */
  name: string;
  /** host:port of each sentinel (archway's redis.sentinels). */
  sentinels: string[];
  /** The port of the server the sentinels name primary now. */
  primaryPort(): Promise<number>;
  /**
   * SIGKILL the current primary (no shutdown, as a crashed machine) and wait
   * until the sentinels name the replica; how long that took, from the kill.
   */
  killPrimary(): Promise<{ killedAt: number; promotedAt: number; from: number; to: number }>;
  stop(): Promise<void>;
}

/** Sentinel's timings, low so a failover takes about a second or two, as the tests need. */
const DOWN_AFTER_MS = 500;
const FAILOVER_TIMEOUT_MS = 2000;

/**
 * A primary, one replica and three sentinels (quorum 2) on loopback, real
 * Debian redis-server and redis-sentinel processes: what a highly available
 * Redis is in production, small. Returns once the replica is in sync and
 * every sentinel knows the replica and the other two sentinels (without
 * that, no failover could happen).
 */
export async function startSentinelTopology(opts: { name?: string; password?: string } = {}): Promise<SentinelTopology> {
  const name = opts.name ?? 'archway';
  const password = opts.password;
  await ensureCommands([
    { command: 'redis-server', debianPackage: 'redis-server' },
    { command: 'redis-sentinel', debianPackage: 'redis-sentinel' },
  ]);
  const dir = await tempDir('archway-sentinel-');
  const [p1, p2] = [await freePort(), await freePort()];
  const servers = new Map<number, ManagedProcess>();
  const startServer = async (port: number, replicaOf?: number) => {
    const proc = await startProcess({
      name: `redis-server:${port}`,
      command: 'redis-server',
      args: [
        ...['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir],
        ...(replicaOf ? ['--replicaof', '127.0.0.1', String(replicaOf)] : []),
        // The same password on both, and for replication: either may be primary after a failover.
        ...(password ? ['--requirepass', password, '--masterauth', password] : []),
      ],
      logFile: join(dir, `redis-${port}.log`),
    });
    servers.set(port, proc);
    await waitFor(() => canConnect(port), { timeoutMs: 10_000, description: `redis-server on ${port}`, proc });
  };
  await startServer(p1);
  await startServer(p2, p1);

  const sentinelPorts = [await freePort(), await freePort(), await freePort()];
  const sentinels: ManagedProcess[] = [];
  for (const port of sentinelPorts) {
    // Sentinel rewrites its config file as it learns: one writable file each.
    const conf = join(dir, `sentinel-${port}.conf`);
    await writeFile(
      conf,
      [
        `port ${port}`,
        'bind 127.0.0.1',
        `dir ${dir}`,
        `sentinel monitor ${name} 127.0.0.1 ${p1} 2`,
        `sentinel down-after-milliseconds ${name} ${DOWN_AFTER_MS}`,
        `sentinel failover-timeout ${name} ${FAILOVER_TIMEOUT_MS}`,
        `sentinel parallel-syncs ${name} 1`,
        ...(password ? [`sentinel auth-pass ${name} ${password}`] : []),
        '',
      ].join('\n'),
    );
    const proc = await startProcess({ name: `redis-sentinel:${port}`, command: 'redis-sentinel', args: [conf], logFile: join(dir, `sentinel-${port}.log`) });
    sentinels.push(proc);
    await waitFor(() => canConnect(port), { timeoutMs: 10_000, description: `redis-sentinel on ${port}`, proc });
  }

  /** One command to a sentinel, or (`auth`) to a server. */
  const ask = async (port: number, ...args: string[]): Promise<unknown> => {
    const auth = servers.has(port) && password ? { password } : {};
    const client = new Redis({ port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, ...auth });
    try {
      await client.connect();
      return await client.call(args[0] as string, ...args.slice(1));
    } finally {
      client.disconnect();
    }
  };
  const primaryPort = async (): Promise<number> => {
    const addr = (await ask(sentinelPorts[0] as number, 'SENTINEL', 'get-master-addr-by-name', name)) as [string, string];
    return Number(addr[1]);
  };
  // Sentinels find the replica and each other through the primary (hello messages every 2 s).
  await waitFor(
    async () => {
      for (const port of sentinelPorts) {
        const replicas = (await ask(port, 'SENTINEL', 'replicas', name)) as unknown[];
        const peers = (await ask(port, 'SENTINEL', 'sentinels', name)) as unknown[];
        if (replicas.length !== 1 || peers.length !== 2) return false;
      }
      const info = String(await ask(p2, 'INFO', 'replication'));
      return /master_link_status:up/.test(info);
    },
    { timeoutMs: 20_000, intervalMs: 200, description: 'sentinels knowing the replica and each other, the replica in sync' },
  );

  return {
    name,
    sentinels: sentinelPorts.map((p) => `127.0.0.1:${p}`),
    primaryPort,
    async killPrimary() {
      const from = await primaryPort();
      const proc = servers.get(from);
      if (!proc) throw new Error(`no server on ${from}`);
      const killedAt = Date.now();
      process.kill(proc.pid, 'SIGKILL');
      await proc.stop();
      servers.delete(from);
      let to = from;
      await waitFor(
        async () => {
          to = await primaryPort();
          return to !== from;
        },
        { timeoutMs: 15_000, intervalMs: 20, description: 'the sentinels promoting the replica' },
      );
      return { killedAt, promotedAt: Date.now(), from, to };
    },
    async stop() {
      await Promise.all([...sentinels, ...servers.values()].map((p) => p.stop()));
    },
  };
}
