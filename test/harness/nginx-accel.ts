// nginx (Debian `nginx`) in front of one archway in X-Accel-Redirect mode
// (server.accelRedirect): archway answers every request, and for a verified
// cached blob hands nginx the file to send from an internal location over the
// cache directory. The same configuration as deploy/compose-accel/nginx.conf,
// with loopback addresses and temp paths. Its access log says, per request,
// whether nginx sent a file itself (the internal location's URI) or relayed
// archway's body, and how many body bytes it sent.
import { mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ensureCommands } from './packages.ts';
import { freePort } from './ports.ts';
import { startProcess, waitForHttp, type ManagedProcess } from './process.ts';
import { tempDir } from './tmp.ts';

/** The internal location archway's config names (server.accelRedirect.location). */
export const ACCEL_LOCATION = '/_archway_blobs/';

export interface AccelRequest {
  method: string;
  /** The URI the client asked for. */
  requestUri: string;
  /** Where nginx answered from: the internal location's URI when it sent a file, else the client's. */
  uri: string;
  status: number;
  bodyBytes: number;
}

export interface NginxAccelHandle {
  url: string;
  pid: number;
  dir: string;
  /** Requests logged since start (or the last clearRequests()). */
  requests(): Promise<AccelRequest[]>;
  clearRequests(): Promise<void>;
  logTail(): string;
  stop(): Promise<void>;
}

/**
 * The nginx configuration of the accel mode: `archway` is host:port, `cacheDir`
 * archway's cache.dir as nginx sees it. `workers`: nginx worker processes.
 */
export function accelNginxConfig(opts: { dir: string; port: number; archway: string; cacheDir: string; workers?: number | 'auto'; accessLog?: boolean }): string {
  const user = process.getuid?.() === 0 ? 'user root;' : '';
  const { dir } = opts;
  return `${user}
worker_processes ${opts.workers ?? 1};
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  ${opts.accessLog === false ? 'access_log off;' : `log_format accel escape=none '$request_method\\t$request_uri\\t$uri\\t$status\\t$body_bytes_sent';
  access_log ${dir}/access.log accel;`}
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy_temp;
  fastcgi_temp_path ${dir}/fastcgi_temp;
  uwsgi_temp_path ${dir}/uwsgi_temp;
  scgi_temp_path ${dir}/scgi_temp;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  upstream archway {
    server ${opts.archway};
    keepalive 32;
  }
  server {
    listen 127.0.0.1:${opts.port};
    client_max_body_size 1m;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header Host $http_host;
    proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    # The marker: archway redirects only requests that carry it (and come from trustedProxies).
    # Replaces whatever a client sent; empty (not sent) in @archway_direct.
    proxy_set_header X-Archway-Accel $archway_accel;
    proxy_buffering off;
    proxy_request_buffering off;
    proxy_read_timeout 300s;
    location / {
      set $archway_accel ${ACCEL_LOCATION};
      proxy_pass http://archway;
    }
    location ${ACCEL_LOCATION} {
      internal;
      alias ${opts.cacheDir}/blobs/;
      types { }
      default_type application/octet-stream;
      etag off;
      # Only a few headers of archway's answer survive an X-Accel-Redirect (Content-Type does):
      # the rest of what the spec asks for is added here.
      add_header Docker-Content-Digest $upstream_http_docker_content_digest always;
      add_header Docker-Distribution-Api-Version registry/2.0 always;
      add_header X-Content-Type-Options nosniff always;
      # Evicted (or unreadable) between archway's answer and this open: ask archway again,
      # without the marker, and it serves (or fetches) the blob itself.
      error_page 403 404 = @archway_direct;
    }
    location @archway_direct {
      set $archway_accel "";
      # The client's URI, not the internal one this request was redirected to.
      proxy_pass http://archway$request_uri;
    }
  }
}
`;
}

function parseLine(line: string): AccelRequest | undefined {
  const [method, requestUri, uri, status, bytes] = line.split('\t');
  if (method === undefined || requestUri === undefined || uri === undefined || status === undefined || bytes === undefined) return undefined;
  return { method, requestUri, uri, status: Number(status), bodyBytes: Number(bytes) };
}

export async function startNginxAccel(opts: { archway: string; cacheDir: string; workers?: number | 'auto'; accessLog?: boolean }): Promise<NginxAccelHandle> {
  await ensureCommands([{ command: 'nginx', debianPackage: 'nginx' }]);
  const dir = await tempDir('archway-nginx-accel-');
  await mkdir(join(dir, 'logs'), { recursive: true });
  const port = await freePort();
  const conf = join(dir, 'nginx.conf');
  await writeFile(conf, accelNginxConfig({ ...opts, dir, port }));
  const proc: ManagedProcess = await startProcess({
    name: `nginx accel :${port}`,
    command: 'nginx',
    args: ['-p', dir, '-c', conf, '-g', 'daemon off;'],
    logFile: join(dir, 'nginx.log'),
  });
  const url = `http://127.0.0.1:${port}`;
  await waitForHttp(`${url}/healthz`, 10_000, proc);
  const accessLog = join(dir, 'access.log');
  let offset = 0;
  const size = async () => (await stat(accessLog).catch(() => undefined))?.size ?? 0;
  const handle: NginxAccelHandle = {
    url,
    pid: proc.pid,
    dir,
    async requests() {
      const text = (await readFile(accessLog).catch(() => Buffer.alloc(0))).subarray(offset).toString('utf8');
      return text
        .split('\n')
        .map(parseLine)
        .filter((r): r is AccelRequest => r !== undefined);
    },
    async clearRequests() {
      offset = await size();
    },
    logTail: () => proc.tail(),
    stop: () => proc.stop(),
  };
  await handle.clearRequests();
  return handle;
}
