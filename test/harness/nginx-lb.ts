// nginx (Debian `nginx`) as a round-robin load balancer in front of several
// archway replicas, the way a scale-out deployment puts one in front of them:
// no buffering (blob bodies stream through), HTTP/1.1 keep-alive to the
// replicas. Its access log names the replica that answered each request, so
// tests can see how requests were spread.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openAccessLog } from './access-log.ts';
import { ensureCommands } from './packages.ts';
import { freePort } from './ports.ts';
import { startProcess, waitForHttp, type ManagedProcess } from './process.ts';
import { tempDir } from './tmp.ts';

export interface LbRequest {
  method: string;
  /** Path and query as the client sent it. */
  uri: string;
  /** Status nginx answered with. */
  status: number;
  /** The replica(s) nginx tried, e.g. "127.0.0.1:4000" or "127.0.0.1:4000, 127.0.0.1:4001" after a retry. */
  upstreamAddr: string;
  bodyBytes: number;
}

export interface NginxLbHandle {
  /** http://127.0.0.1:PORT */
  url: string;
  hostPort: string;
  port: number;
  dir: string;
  /** Requests logged since start (or the last clearRequests()). */
  requests(): Promise<LbRequest[]>;
  clearRequests(): Promise<void>;
  logTail(): string;
  stop(): Promise<void>;
}

function config(dir: string, port: number, backends: string[]): string {
  // Workers run as root where we are root: the temp dirs belong to us.
  const user = process.getuid?.() === 0 ? 'user root;' : '';
  return `${user}
# One worker: one round-robin sequence, so consecutive requests go to the replicas in turn.
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  log_format lb escape=none '$request_method\\t$request_uri\\t$status\\t$upstream_addr\\t$body_bytes_sent';
  access_log ${dir}/access.log lb;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy_temp;
  fastcgi_temp_path ${dir}/fastcgi_temp;
  uwsgi_temp_path ${dir}/uwsgi_temp;
  scgi_temp_path ${dir}/scgi_temp;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  upstream archway {
${backends.map((b) => `    server ${b};`).join('\n')}
    keepalive 32;
  }
  server {
    listen 127.0.0.1:${port};
    client_max_body_size 0;
    location / {
      proxy_pass http://archway;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $remote_addr;
      proxy_buffering off;
      proxy_request_buffering off;
      proxy_read_timeout 300s;
      proxy_send_timeout 300s;
      add_header X-Archway-Replica $upstream_addr always;
    }
  }
}
`;
}

function parseLine(line: string): LbRequest | undefined {
  const [method, uri, status, upstreamAddr, bytes] = line.split('\t');
  if (method === undefined || uri === undefined || status === undefined || upstreamAddr === undefined || bytes === undefined) return undefined;
  return { method, uri, status: Number(status), upstreamAddr, bodyBytes: Number(bytes) };
}

/** `backends`: the replicas as host:port. */
export async function startNginxLb(backends: string[]): Promise<NginxLbHandle> {
  await ensureCommands([{ command: 'nginx', debianPackage: 'nginx' }]);
  const dir = await tempDir('archway-nginx-lb-');
  await mkdir(join(dir, 'logs'), { recursive: true });
  const accessLog = join(dir, 'access.log');
  let proc: ManagedProcess | undefined;
  let port = 0;
  for (let attempt = 1; ; attempt++) {
    port = await freePort();
    const conf = join(dir, 'nginx.conf');
    await writeFile(conf, config(dir, port, backends));
    proc = await startProcess({
      name: `nginx lb :${port}`,
      command: 'nginx',
      args: ['-p', dir, '-c', conf, '-g', 'daemon off;'],
      logFile: join(dir, 'nginx.log'),
    });
    try {
      // Any answer will do (the replicas answer / with 404); the probe is cleared from the log below.
      await waitForHttp(`http://127.0.0.1:${port}/healthz`, 10_000, proc);
      break;
    } catch (err) {
      await proc.stop();
      if (attempt >= 3) throw err;
    }
  }
  const running = proc;
  // Opened after the probe: its request is not among the test's.
  const log = await openAccessLog(accessLog, parseLine);
  return {
    url: `http://127.0.0.1:${port}`,
    hostPort: `127.0.0.1:${port}`,
    port,
    dir,
    requests: () => log.requests(),
    clearRequests: () => log.clear(),
    logTail: () => running.tail(),
    stop: () => running.stop(),
  };
}
