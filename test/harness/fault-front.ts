// A fault-injecting front for a real registry: passes everything through
// until told to misbehave in the ways a real registry does not on demand
// (stall, answer 5xx/429, trickle a body, corrupt a chunked body, cut or
// stall a body, loop redirects, send bad manifests, refuse connections).
// Only for faults; everything else in the tests talks to the real registry.
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { RegistryHandle } from './registry.ts';

export type FaultMode =
  | { kind: 'pass' }
  /** Accept the request and never answer. */
  | { kind: 'stall' }
  /** Answer every request with this status (and headers), after `delayMs` (default 0). */
  | { kind: 'status'; status: number; headers?: Record<string, string>; delayMs?: number }
  /**
   * The next requests get these statuses, one each, in order (after `delayMs`
   * each); once they are used up the front passes everything through again.
   */
  | { kind: 'burst'; statuses: number[]; headers?: Record<string, string>; delayMs?: number }
  /** Blob GETs: send the body in small pieces with a pause between them. */
  | { kind: 'trickle'; chunkBytes: number; pauseMs: number }
  /** Blob GETs: flip the last byte and drop Content-Length (chunked answer). */
  | { kind: 'corrupt-chunked' }
  /** Every request: wait this long, then pass it through (a slow, far-away registry). */
  | { kind: 'delay'; ms: number }
  /**
   * Blob GETs: the real Content-Length and the first `afterBytes` bytes, then,
   * `holdMs` later (default 300: time for coalesced clients to join), the
   * connection is reset (TCP RST).
   */
  | { kind: 'reset-mid-body'; afterBytes: number; holdMs?: number }
  /** Blob GETs: as reset-mid-body, but the connection then ends cleanly (FIN): a body shorter than Content-Length. */
  | { kind: 'short-body'; afterBytes: number; holdMs?: number }
  /** Blob GETs: the whole body with one byte in the middle changed, Content-Length kept: only the digest can tell. */
  | { kind: 'corrupt-same-length'; holdMs?: number }
  /** Blob GETs: the real Content-Length and the first `afterBytes` bytes, then silence; the connection stays open. */
  | { kind: 'stall-body'; afterBytes: number }
  /**
   * Blob GETs and HEADs: a 307 to the same URL ('self'), to a second URL that
   * redirects back ('pair': A→B→A…), or to a new URL every time ('chain':
   * ?hop=1, ?hop=2, … without end).
   */
  | { kind: 'redirect-loop'; shape: 'self' | 'pair' | 'chain' }
  /**
   * GET and HEAD of a manifest by tag: this answer instead of the registry's,
   * after `delayMs` (default 0). `digest` is sent as Docker-Content-Digest;
   * `chunked` drops Content-Length. Everything else passes through.
   */
  | { kind: 'manifest'; body: Buffer; contentType: string; digest?: string; chunked?: boolean; delayMs?: number };

/** A request the front received, as it arrived (before any fault). */
export interface FrontRequest {
  method: string;
  /** Path with query. */
  url: string;
  /** The Authorization header, if the client sent one. */
  authorization: string | undefined;
}

export interface FaultFront {
  url: string;
  setMode(mode: FaultMode): void;
  /** When the last blob body finished sending (ms since epoch), for ordering checks. */
  lastBlobFinishedAt(): number | undefined;
  /** Every request received so far (e.g. to check which credentials reached this origin). */
  requests(): FrontRequest[];
  clearRequests(): void;
  /** Close the listening port and every connection: connections are refused until openPort(). */
  closePort(): Promise<void>;
  /** Listen again on the same port. */
  openPort(): Promise<void>;
  /**
   * Close every idle keep-alive connection (the client's pool then closes its
   * sockets); connections with a request in progress stay, so a client that
   * never finishes a response still shows as an open socket.
   */
  closeIdleConnections(): void;
  stop(): Promise<void>;
}

const BLOB_GET = /^\/v2\/.+\/blobs\/sha256:[a-f0-9]{64}$/;
/** A manifest by tag (not by digest). */
const MANIFEST_TAG = /^\/v2\/.+\/manifests\/[^/:]+$/;

/** Write and wait until the bytes are handed to the kernel. */
function writeFlushed(res: ServerResponse, data: Buffer): Promise<void> {
  return new Promise((resolve) => {
    if (data.length === 0 || res.destroyed) return resolve();
    res.write(data, () => resolve());
  });
}

/** Until the response can take more (or is gone). */
export function drained(res: ServerResponse): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      res.off('drain', done);
      res.off('close', done);
      resolve();
    };
    res.on('drain', done);
    res.on('close', done);
  });
}

/** Sleep, but stop early if the client went away. */
async function hold(res: ServerResponse, ms: number): Promise<void> {
  if (ms <= 0 || res.destroyed) return;
  await new Promise<void>((resolve) => {
    const early = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      res.off('close', early);
      resolve();
    }, ms);
    res.once('close', early);
  });
}

export async function startFaultFront(registry: RegistryHandle): Promise<FaultFront> {
  let mode: FaultMode = { kind: 'pass' };
  let blobFinishedAt: number | undefined;
  let received: FrontRequest[] = [];
  const sockets = new Set<Socket>();

  let burst: number[] = [];
  let port = 0;

  const forward = (req: IncomingMessage, res: ServerResponse, onBody?: (upstream: IncomingMessage) => void) => {
    const upstream = httpRequest(`${registry.url}${req.url}`, { method: req.method, headers: req.headers }, (answer) => {
      if (onBody && answer.statusCode === 200) return onBody(answer);
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  };

  /** The registry's whole blob body (200 only; other answers pass through as they are). */
  const withBlob = (req: IncomingMessage, res: ServerResponse, act: (body: Buffer) => Promise<void>) =>
    forward(req, res, async (answer) => {
      const chunks: Buffer[] = [];
      for await (const c of answer) chunks.push(c as Buffer);
      await act(Buffer.concat(chunks));
    });

  const answerStatus = async (res: ServerResponse, status: number, headers: Record<string, string> | undefined, delayMs: number | undefined) => {
    await hold(res, delayMs ?? 0);
    if (res.destroyed) return;
    const body = JSON.stringify({ errors: [{ code: 'UNAVAILABLE', message: `injected ${status}` }] });
    res.writeHead(status, { 'content-type': 'application/json', ...headers });
    res.end(body);
  };

  /** Content-Length, the first bytes, a pause; the caller then breaks the connection. */
  const partial = async (res: ServerResponse, body: Buffer, afterBytes: number, holdMs: number) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
    await writeFlushed(res, body.subarray(0, Math.min(afterBytes, body.length - 1)));
    await hold(res, holdMs);
  };

  const server: Server = createServer((req, res) => {
    received.push({ method: req.method ?? 'GET', url: req.url ?? '/', authorization: req.headers.authorization });
    const path = (req.url ?? '').split('?')[0] ?? '';
    const isBlobGet = req.method === 'GET' && BLOB_GET.test(path);
    switch (mode.kind) {
      case 'stall':
        return; // never answered; closed on stop()
      case 'status':
        void answerStatus(res, mode.status, mode.headers, mode.delayMs);
        return;
      case 'burst': {
        const status = burst.shift();
        if (status === undefined) return forward(req, res);
        void answerStatus(res, status, mode.headers, mode.delayMs);
        return;
      }
      case 'reset-mid-body': {
        if (!isBlobGet) return forward(req, res);
        const { afterBytes, holdMs = 300 } = mode;
        return withBlob(req, res, async (body) => {
          await partial(res, body, afterBytes, holdMs);
          res.socket?.resetAndDestroy();
        });
      }
      case 'short-body': {
        if (!isBlobGet) return forward(req, res);
        const { afterBytes, holdMs = 300 } = mode;
        return withBlob(req, res, async (body) => {
          await partial(res, body, afterBytes, holdMs);
          // A clean end of the connection (FIN), not a reset: the body just stops short.
          res.socket?.end();
        });
      }
      case 'corrupt-same-length': {
        if (!isBlobGet) return forward(req, res);
        const { holdMs = 300 } = mode;
        return withBlob(req, res, async (body) => {
          const bad = Buffer.from(body);
          const middle = bad.length >> 1;
          bad[middle] = (bad[middle] as number) ^ 0xff;
          await partial(res, bad, middle, holdMs);
          if (res.destroyed) return;
          res.end(bad.subarray(middle));
          blobFinishedAt = Date.now();
        });
      }
      case 'stall-body': {
        if (!isBlobGet) return forward(req, res);
        const { afterBytes } = mode;
        // Never finished: the client's idle timeout, or stop(), ends it.
        return withBlob(req, res, (body) => partial(res, body, afterBytes, 0));
      }
      case 'redirect-loop': {
        if ((req.method !== 'GET' && req.method !== 'HEAD') || !BLOB_GET.test(path)) return forward(req, res);
        const hop = new URLSearchParams((req.url ?? '').split('?')[1] ?? '').get('hop');
        const location =
          mode.shape === 'self' ? (req.url ?? path) : mode.shape === 'pair' ? (hop === 'b' ? path : `${path}?hop=b`) : `${path}?hop=${Number(hop ?? 0) + 1}`;
        res.writeHead(307, { location, 'content-length': 0 });
        res.end();
        return;
      }
      case 'manifest': {
        if ((req.method !== 'GET' && req.method !== 'HEAD') || !MANIFEST_TAG.test(path)) return forward(req, res);
        const m = mode;
        void (async () => {
          await hold(res, m.delayMs ?? 0);
          if (res.destroyed) return;
          const headers: Record<string, string | number> = { 'content-type': m.contentType };
          if (m.digest) headers['docker-content-digest'] = m.digest;
          if (!m.chunked) headers['content-length'] = m.body.length;
          res.writeHead(200, headers);
          if (req.method === 'HEAD') return void res.end();
          // In pieces, so a chunked answer really is several chunks.
          for (let i = 0; i < m.body.length && !res.destroyed; i += 256 * 1024) {
            if (!res.write(m.body.subarray(i, i + 256 * 1024))) await drained(res);
          }
          res.end();
        })();
        return;
      }
      case 'trickle': {
        if (!isBlobGet) return forward(req, res);
        const { chunkBytes, pauseMs } = mode;
        return forward(req, res, async (answer) => {
          const chunks: Buffer[] = [];
          for await (const c of answer) chunks.push(c as Buffer);
          const body = Buffer.concat(chunks);
          res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': body.length });
          for (let i = 0; i < body.length; i += chunkBytes) {
            if (res.destroyed) return;
            if (i > 0) await sleep(pauseMs);
            res.write(body.subarray(i, i + chunkBytes));
          }
          blobFinishedAt = Date.now();
          res.end();
        });
      }
      case 'corrupt-chunked': {
        if (!isBlobGet) return forward(req, res);
        return forward(req, res, async (answer) => {
          const chunks: Buffer[] = [];
          for await (const c of answer) chunks.push(c as Buffer);
          const body = Buffer.concat(chunks);
          body[body.length - 1] = (body[body.length - 1] as number) ^ 0xff;
          res.writeHead(200, { 'content-type': 'application/octet-stream' }); // no length: chunked
          res.end(body);
        });
      }
      case 'delay': {
        const { ms } = mode;
        // The request body (none for pulls) waits in the socket meanwhile.
        setTimeout(() => {
          if (!res.destroyed) forward(req, res);
        }, ms);
        return;
      }
      case 'pass':
        return forward(req, res);
    }
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  // A client that goes away mid-answer is part of the faults, not an error of the front.
  server.on('clientError', (_err, socket) => socket.destroy());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
  const dropConnections = () => {
    for (const s of sockets) s.destroy();
  };
  return {
    url: `http://127.0.0.1:${port}`,
    setMode: (m) => {
      mode = m;
      if (m.kind === 'burst') burst = [...m.statuses];
      // Stalled requests from before stay stalled; new modes apply to new requests.
    },
    lastBlobFinishedAt: () => blobFinishedAt,
    requests: () => received.map((r) => ({ ...r })),
    clearRequests: () => {
      received = [];
    },
    async closePort() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      dropConnections();
      await closed;
    },
    async openPort() {
      if (server.listening) return;
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(port, '127.0.0.1', () => {
          server.off('error', reject);
          resolve();
        });
      });
    },
    closeIdleConnections: () => server.closeIdleConnections(),
    async stop() {
      dropConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
