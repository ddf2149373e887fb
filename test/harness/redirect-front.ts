// A Docker Hub-like front for a registry: blob downloads are answered with a
// 307 to a different origin (like Docker Hub's CDN), which refuses any request
// carrying an Authorization header. Lets tests prove a proxy follows blob
// redirects without leaking registry credentials to a third party.
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer, request as httpRequest } from 'node:http';
import type { IncomingMessage, OutgoingHttpHeaders, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { RegistryHandle } from './registry.ts';

export interface BlobOriginRequest {
  method: string;
  /** Path without query, e.g. /blobs/sha256:... */
  path: string;
  hadAuthorization: boolean;
  range: string | null;
  status: number;
}

export interface RedirectFront {
  /** http://127.0.0.1:PORT: use instead of the registry's URL. */
  url: string;
  hostPort: string;
  /** Base URL of the blob origin (the redirect target). */
  originUrl: string;
  blobOriginRequests(): BlobOriginRequest[];
  /** Blob GETs the front answered with a redirect. */
  redirects(): Array<{ path: string; location: string }>;
  clear(): void;
  stop(): Promise<void>;
}

const BLOB_GET = /^\/v2\/.+\/blobs\/(sha256:[a-f0-9]{64})$/;
// Hop-by-hop headers belong to one connection and must not be forwarded.
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer']);

function endToEndHeaders(headers: IncomingMessage['headers']): OutgoingHttpHeaders {
  const out: OutgoingHttpHeaders = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined && !HOP_BY_HOP.has(name)) out[name] = value;
  }
  return out;
}

async function listen(server: Server): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  return (server.address() as AddressInfo).port;
}

async function close(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

function parseRange(header: string | undefined, size: number): { start: number; end: number } | undefined {
  const m = header ? /^bytes=(\d*)-(\d*)$/.exec(header) : null;
  if (!m) return undefined;
  const [, from = '', to = ''] = m;
  if (from === '') {
    const suffix = Number(to);
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  return { start: Number(from), end: to === '' ? size - 1 : Math.min(Number(to), size - 1) };
}

export async function startRedirectFront(registry: RegistryHandle): Promise<RedirectFront> {
  let originRequests: BlobOriginRequest[] = [];
  let redirects: Array<{ path: string; location: string }> = [];

  // The "CDN": serves blob files straight from the registry's storage.
  const origin = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://origin');
    const record: BlobOriginRequest = {
      method: req.method ?? 'GET',
      path: url.pathname,
      hadAuthorization: req.headers.authorization !== undefined,
      range: req.headers.range ?? null,
      status: 0,
    };
    originRequests.push(record);
    const answer = (status: number, body: string): void => {
      record.status = status;
      res.writeHead(status, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    };
    if (record.hadAuthorization) return answer(403, 'authorization header sent to blob origin');
    const m = /^\/blobs\/(sha256:[a-f0-9]{64})$/.exec(url.pathname);
    if (!m?.[1] || (req.method !== 'GET' && req.method !== 'HEAD')) return answer(404, 'not found');
    const file = registry.blobPath(m[1]);
    stat(file).then(
      (st) => {
        const range = parseRange(req.headers.range, st.size);
        if (range && (range.start > range.end || range.start >= st.size)) {
          return answer(416, 'range not satisfiable');
        }
        const start = range?.start ?? 0;
        const end = range?.end ?? st.size - 1;
        record.status = range ? 206 : 200;
        res.writeHead(record.status, {
          'content-type': 'application/octet-stream',
          'content-length': end - start + 1,
          'accept-ranges': 'bytes',
          ...(range ? { 'content-range': `bytes ${start}-${end}/${st.size}` } : {}),
        });
        if (req.method === 'HEAD' || st.size === 0) return res.end();
        createReadStream(file, { start, end }).pipe(res);
      },
      () => answer(404, 'blob not in registry storage'),
    );
  });
  const originPort = await listen(origin);
  const originUrl = `http://127.0.0.1:${originPort}`;

  // The front: a transparent reverse proxy except for successful blob GETs.
  const upstream = new URL(registry.url);
  const front = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = req.url ?? '/';
    const upstreamReq = httpRequest(
      {
        host: upstream.hostname,
        port: upstream.port,
        method: req.method,
        path,
        // Host stays the front's, so registry Location headers point back here.
        headers: endToEndHeaders(req.headers),
      },
      (upstreamRes) => {
        const blob = BLOB_GET.exec(path.split('?')[0] ?? '');
        if (req.method === 'GET' && upstreamRes.statusCode === 200 && blob?.[1]) {
          // The registry accepted the client's credentials: redirect instead
          // of streaming, and drop the registry's body.
          upstreamRes.destroy();
          const location = `${originUrl}/blobs/${blob[1]}?sig=x`;
          redirects.push({ path, location });
          res.writeHead(307, { location, 'content-length': 0 });
          res.end();
          return;
        }
        res.writeHead(upstreamRes.statusCode ?? 502, upstreamRes.statusMessage, endToEndHeaders(upstreamRes.headers));
        upstreamRes.pipe(res);
      },
    );
    upstreamReq.on('error', (err) => {
      if (!res.headersSent) {
        res.writeHead(502, { 'content-type': 'text/plain' });
        res.end(`redirect front: upstream error: ${err.message}`);
      } else {
        res.destroy();
      }
    });
    req.pipe(upstreamReq);
  });
  const frontPort = await listen(front);

  return {
    url: `http://127.0.0.1:${frontPort}`,
    hostPort: `127.0.0.1:${frontPort}`,
    originUrl,
    blobOriginRequests: () => originRequests.map((r) => ({ ...r })),
    redirects: () => redirects.map((r) => ({ ...r })),
    clear: () => {
      originRequests = [];
      redirects = [];
    },
    stop: async () => {
      await Promise.all([close(front), close(origin)]);
    },
  };
}
