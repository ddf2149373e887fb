// A throttling front for the benchmark's upstream registry: passes every
// request through, and sends blob GET bodies at a fixed rate per response
// (a far-away registry on a ~50 MB/s path). Counts the blob body bytes it
// sends and when it sent the first of them, so the cold fan-in scenario can
// tell how many times a proxy fetched a blob and how long clients waited
// after the upstream's first byte.
import { createServer, request as httpRequest, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';

export interface ThrottleFront {
  url: string;
  /** Blob body bytes sent since the last reset(). */
  blobBytes(): number;
  /** Blob GETs answered 200 since the last reset(). */
  blobFetches(): number;
  /** performance.now() of the first blob body byte sent since the last reset(). */
  firstBlobByteAt(): number | undefined;
  reset(): void;
  stop(): Promise<void>;
}

const BLOB_GET = /^\/v2\/.+\/blobs\/sha256:[a-f0-9]{64}$/;

/** `bytesPerSecond` per blob response, sent in slices of `sliceMs`. */
export async function startThrottleFront(upstreamUrl: string, bytesPerSecond: number, sliceMs = 10): Promise<ThrottleFront> {
  let bytes = 0;
  let fetches = 0;
  let firstAt: number | undefined;
  const sockets = new Set<Socket>();

  const throttled = async (answer: IncomingMessage, res: ServerResponse): Promise<void> => {
    res.writeHead(answer.statusCode ?? 502, answer.headers);
    fetches++;
    const started = performance.now();
    let sent = 0;
    for await (const chunk of answer) {
      let buf = chunk as Buffer;
      while (buf.length > 0) {
        if (res.destroyed) {
          answer.destroy();
          return;
        }
        // Allowed so far by the rate, in slices: never ahead of the clock.
        const allowed = ((performance.now() - started) / 1000) * bytesPerSecond + (bytesPerSecond * sliceMs) / 1000;
        const room = Math.floor(allowed - sent);
        if (room <= 0) {
          await sleep(sliceMs);
          continue;
        }
        const piece = buf.subarray(0, Math.min(room, buf.length));
        buf = buf.subarray(piece.length);
        firstAt ??= performance.now();
        sent += piece.length;
        bytes += piece.length;
        if (!res.write(piece)) await new Promise((r) => res.once('drain', r));
      }
    }
    res.end();
  };

  const server = createServer((req, res) => {
    const isBlobGet = req.method === 'GET' && BLOB_GET.test((req.url ?? '').split('?')[0] ?? '');
    const upstream = httpRequest(`${upstreamUrl}${req.url}`, { method: req.method, headers: req.headers }, (answer) => {
      if (isBlobGet && answer.statusCode === 200) {
        throttled(answer, res).catch(() => res.destroy());
        return;
      }
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    upstream.on('error', () => res.destroy());
    res.on('close', () => upstream.destroy());
    req.pipe(upstream);
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    blobBytes: () => bytes,
    blobFetches: () => fetches,
    firstBlobByteAt: () => firstAt,
    reset() {
      bytes = 0;
      fetches = 0;
      firstAt = undefined;
    },
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
