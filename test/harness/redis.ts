// A real redis-server (Debian `redis-server`) on loopback, without persistence,
// that tests can stop and start again on the same port.
import { join } from 'node:path';
import { connect } from 'node:net';
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
