// nginx for the benchmark, on loopback in its own prefix directory:
// - 'cache': a caching proxy of the upstream registry, as the popular
//   nginx-based registry proxies set it up (proxy_cache keyed on the URI,
//   200s of blobs cached, proxy_cache_lock so concurrent misses wait for one
//   fill; manifests cached for the tag TTL, keyed on URI and Accept);
// - 'sendfile': the same blob files served straight from disk with sendfile,
//   the practical ceiling for serving a cached blob on this machine.
import { writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { ensureCommands } from '../test/harness/packages.ts';
import { freePort } from '../test/harness/ports.ts';
import { run, startProcess, waitForHttp, type ManagedProcess } from '../test/harness/process.ts';
import { tempDir } from '../test/harness/tmp.ts';

export interface NginxHandle {
  url: string;
  pid: number;
  dir: string;
  stop(): Promise<void>;
}

export type NginxMode =
  | { kind: 'cache'; upstreamHostPort: string; manifestTtl: string }
  | { kind: 'sendfile'; root: string }
  /** A round-robin load balancer in front of archway replicas (host:port each), streaming. */
  | { kind: 'balance'; backends: string[] };

export async function nginxVersion(): Promise<string> {
  const r = await run('nginx', ['-v'], { allowFail: true });
  return (r.stderr + r.stdout).trim().replace(/^nginx version:\s*/, '');
}

function config(dir: string, port: number, mode: NginxMode): string {
  const root = process.getuid?.() === 0 ? 'user root;' : '';
  const server =
    mode.kind === 'balance'
      ? `
    location / {
      proxy_pass http://replicas;
      proxy_buffering off;
      proxy_request_buffering off;
    }`
      : mode.kind === 'sendfile'
      ? `
    location / {
      root ${mode.root};
      default_type application/octet-stream;
    }`
      : `
    location ~ "^/v2/.+/blobs/sha256:[a-f0-9]{64}$" {
      proxy_pass http://registry;
      proxy_cache blobs;
      proxy_cache_key $uri;
      proxy_cache_valid 200 365d;
      proxy_cache_lock on;
      proxy_cache_lock_timeout 880s;
      proxy_cache_lock_age 880s;
      proxy_ignore_headers Cache-Control Expires Set-Cookie;
      add_header X-Cache-Status $upstream_cache_status always;
    }
    location ~ ^/v2/.+/manifests/ {
      proxy_pass http://registry;
      proxy_cache blobs;
      proxy_cache_key $uri$http_accept;
      proxy_cache_valid 200 ${mode.manifestTtl};
      proxy_cache_lock on;
      proxy_ignore_headers Cache-Control Expires Set-Cookie;
      add_header X-Cache-Status $upstream_cache_status always;
    }
    location / {
      proxy_pass http://registry;
    }`;
  return `${root}
worker_processes auto;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on;
  tcp_nopush on;
  keepalive_requests 1000000;
  keepalive_timeout 60s;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy_temp;
  fastcgi_temp_path ${dir}/fastcgi_temp;
  uwsgi_temp_path ${dir}/uwsgi_temp;
  scgi_temp_path ${dir}/scgi_temp;
  ${
    mode.kind === 'balance'
      ? `upstream replicas { ${mode.backends.map((b) => `server ${b};`).join(' ')} keepalive 64; }
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host $http_host;
  proxy_read_timeout 900s;`
      : mode.kind === 'cache'
      ? `proxy_cache_path ${dir}/cache levels=1:2 keys_zone=blobs:10m max_size=50g inactive=365d use_temp_path=off;
  upstream registry { server ${mode.upstreamHostPort}; keepalive 32; }
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host $http_host;
  proxy_read_timeout 900s;`
      : ''
  }
  server {
    listen 127.0.0.1:${port};${server}
  }
}
`;
}

export async function startNginx(mode: NginxMode): Promise<NginxHandle> {
  await ensureCommands([{ command: 'nginx', debianPackage: 'nginx' }]);
  const dir = await tempDir(`archway-bench-nginx-${mode.kind}-`);
  await mkdir(join(dir, 'cache'), { recursive: true });
  const port = await freePort();
  const conf = join(dir, 'nginx.conf');
  await writeFile(conf, config(dir, port, mode));
  const proc: ManagedProcess = await startProcess({
    name: `nginx ${mode.kind} :${port}`,
    command: 'nginx',
    args: ['-p', dir, '-c', conf, '-g', 'daemon off;'],
    logFile: join(dir, 'nginx.log'),
  });
  const url = `http://127.0.0.1:${port}`;
  await waitForHttp(`${url}/`, 10_000, proc);
  return { url, pid: proc.pid, dir, stop: () => proc.stop() };
}
