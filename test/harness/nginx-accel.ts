// nginx (Debian `nginx`) in front of one archway in X-Accel-Redirect mode
// (server.accelRedirect): archway answers every request, and for a verified
// cached blob hands nginx the file to send from an internal location over the
// cache directory: deploy/compose-accel/nginx.conf itself, with loopback
// addresses and temp paths, so the tests prove the shipped example. Its access log says, per request,
// whether nginx sent a file itself (the internal location's URI) or relayed
// archway's body, and how many body bytes it sent.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { openAccessLog } from './access-log.ts';
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

/** The shipped example, which this harness runs with loopback addresses and temp paths. */
const SHIPPED = fileURLToPath(new URL('../../deploy/compose-accel/nginx.conf', import.meta.url));

/** `text` with `from` replaced by `to`, which must occur exactly once (the example changed otherwise). */
function replaceOnce(text: string, from: string, to: string): string {
  const parts = text.split(from);
  if (parts.length !== 2) throw new Error(`deploy/compose-accel/nginx.conf: expected "${from}" once, found it ${parts.length - 1} times`);
  return parts.join(to);
}

/**
 * deploy/compose-accel/nginx.conf as it ships, with what only a test changes: the
 * addresses (`archway` is host:port), the cache directory as nginx sees it, this
 * process's paths for pid, logs and temp files, and the worker count.
 */
export async function accelNginxConfig(opts: { dir: string; port: number; archway: string; cacheDir: string; workers?: number | 'auto'; accessLog?: boolean }): Promise<string> {
  const { dir } = opts;
  // Workers run as root where we are root: the temp dirs belong to us.
  const user = process.getuid?.() === 0 ? 'user root;' : '';
  const log =
    opts.accessLog === false
      ? 'access_log off;'
      : `log_format accel escape=none '$request_method\\t$request_uri\\t$uri\\t$status\\t$body_bytes_sent';\n  access_log ${dir}/access.log accel;`;
  const temp = ['client_body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((k) => `${k}_temp_path ${dir}/${k}_temp;`).join('\n  ');
  let conf = await readFile(SHIPPED, 'utf8');
  conf = replaceOnce(conf, 'events {}', `${user}\nworker_processes ${opts.workers ?? 1};\npid ${dir}/nginx.pid;\nerror_log ${dir}/error.log warn;\nevents { worker_connections 4096; }`);
  conf = replaceOnce(conf, 'http {', `http {\n  ${log}\n  ${temp}\n  keepalive_requests 1000000;`);
  conf = replaceOnce(conf, 'server archway:5000;', `server ${opts.archway};`);
  conf = replaceOnce(conf, 'listen 5000;', `listen 127.0.0.1:${opts.port};`);
  conf = replaceOnce(conf, 'alias /data/blobs/;', `alias ${opts.cacheDir}/blobs/;`);
  return conf;
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
  await writeFile(conf, await accelNginxConfig({ ...opts, dir, port }));
  const proc: ManagedProcess = await startProcess({
    name: `nginx accel :${port}`,
    command: 'nginx',
    args: ['-p', dir, '-c', conf, '-g', 'daemon off;'],
    logFile: join(dir, 'nginx.log'),
  });
  const url = `http://127.0.0.1:${port}`;
  await waitForHttp(`${url}/healthz`, 10_000, proc);
  const accessLog = await openAccessLog(join(dir, 'access.log'), parseLine);
  return {
    url,
    pid: proc.pid,
    dir,
    requests: () => accessLog.requests(),
    clearRequests: () => accessLog.clear(),
    logTail: () => proc.tail(),
    stop: () => proc.stop(),
  };
}
