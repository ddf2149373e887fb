// A fault-injecting front for a real registry: passes everything through
// until told to misbehave in the ways a real registry does not on demand
// (stall, answer 5xx/429, trickle a body, corrupt a chunked body). Only for
// faults; everything else in the tests talks to the real registry.
import { createServer, request as httpRequest, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import type { RegistryHandle } from './registry.ts';

export type FaultMode =
  | { kind: 'pass' }
  /** Accept the request and never answer. */
  | { kind: 'stall' }
  /** Answer every request with this status (and headers). */
  | { kind: 'status'; status: number; headers?: Record<string, string> }
  /** Blob GETs: send the body in small pieces with a pause between them. */
  | { kind: 'trickle'; chunkBytes: number; pauseMs: number }
  /** Blob GETs: flip the last byte and drop Content-Length (chunked answer). */
  | { kind: 'corrupt-chunked' }
  /** Every request: wait this long, then pass it through (a slow, far-away registry). */
  | { kind: 'delay'; ms: number };

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
  stop(): Promise<void>;
}

const BLOB_GET = /^\/v2\/.+\/blobs\/sha256:[a-f0-9]{64}$/;

export async function startFaultFront(registry: RegistryHandle): Promise<FaultFront> {
  let mode: FaultMode = { kind: 'pass' };
  let blobFinishedAt: number | undefined;
  let received: FrontRequest[] = [];
  const sockets = new Set<Socket>();

  const forward = (req: IncomingMessage, res: ServerResponse, onBody?: (upstream: IncomingMessage) => void) => {
    const upstream = httpRequest(`${registry.url}${req.url}`, { method: req.method, headers: req.headers }, (answer) => {
      if (onBody && answer.statusCode === 200) return onBody(answer);
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    req.pipe(upstream);
  };

  const server: Server = createServer((req, res) => {
    received.push({ method: req.method ?? 'GET', url: req.url ?? '/', authorization: req.headers.authorization });
    const isBlobGet = req.method === 'GET' && BLOB_GET.test((req.url ?? '').split('?')[0] ?? '');
    switch (mode.kind) {
      case 'stall':
        return; // never answered; closed on stop()
      case 'status': {
        const body = JSON.stringify({ errors: [{ code: 'UNAVAILABLE', message: `injected ${mode.status}` }] });
        res.writeHead(mode.status, { 'content-type': 'application/json', ...mode.headers });
        res.end(body);
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
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    setMode: (m) => {
      mode = m;
      // Stalled requests from before stay stalled; new modes apply to new requests.
    },
    lastBlobFinishedAt: () => blobFinishedAt,
    requests: () => received.map((r) => ({ ...r })),
    clearRequests: () => {
      received = [];
    },
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
