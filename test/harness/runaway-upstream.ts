// A registry that misbehaves with blob bodies in ways no real registry does on
// demand: endless chunked bodies, a Content-Length of terabytes, bodies longer
// than their manifest says, trickles. It also serves the manifests that name
// those blobs (so archway learns their sizes), and counts what it sent and
// which connections are still open, so tests can see archway stop reading.
import { randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { drained } from './fault-front.ts';

export type BlobBehaviour =
  /** Chunked, random bytes for as long as the client reads. */
  | { kind: 'endless' }
  /** This Content-Length, then random bytes for as long as the client reads. */
  | { kind: 'claimed-length'; length: number }
  /** These bytes, with Content-Length unless `chunked`. */
  | { kind: 'bytes'; body: Buffer; chunked?: boolean; contentLength?: number }
  /** These bytes with their Content-Length, `chunkBytes` every `everyMs`. */
  | { kind: 'trickle'; body: Buffer; chunkBytes: number; everyMs: number };

export interface BlobStats {
  requests: number;
  bytesSent: number;
  /** Responses still being written (the client has not gone away, nor has the body ended). */
  open: number;
}

export interface RunawayUpstream {
  url: string;
  setBlob(digest: string, behaviour: BlobBehaviour): void;
  /** A manifest by tag and by digest, answered with this media type. */
  setManifest(repository: string, tag: string, bytes: Buffer, mediaType: string, digest: string): void;
  stats(digest: string): BlobStats;
  /** Sockets currently connected to the upstream. */
  connections(): number;
  stop(): Promise<void>;
}

const BLOB = /^\/v2\/(.+)\/blobs\/(sha256:[a-f0-9]{64})$/;
const MANIFEST = /^\/v2\/(.+)\/manifests\/([^/]+)$/;
const PIECE = 64 * 1024;

export async function startRunawayUpstream(): Promise<RunawayUpstream> {
  const blobs = new Map<string, BlobBehaviour>();
  const stats = new Map<string, BlobStats>();
  const manifests = new Map<string, { bytes: Buffer; mediaType: string; digest: string }>();
  const sockets = new Set<Socket>();
  const statsOf = (digest: string): BlobStats => {
    let s = stats.get(digest);
    if (!s) stats.set(digest, (s = { requests: 0, bytesSent: 0, open: 0 }));
    return s;
  };

  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '').split('?')[0] ?? '';
    if (path === '/v2/' || path === '/v2') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      return;
    }
    const m = MANIFEST.exec(path);
    if (m) {
      const found = manifests.get(`${m[1]}\n${m[2]}`);
      if (!found) return notFound(res, 'MANIFEST_UNKNOWN');
      res.writeHead(200, { 'content-type': found.mediaType, 'content-length': found.bytes.length, 'docker-content-digest': found.digest });
      res.end(req.method === 'HEAD' ? undefined : found.bytes);
      return;
    }
    const b = BLOB.exec(path);
    const behaviour = b ? blobs.get(b[2] as string) : undefined;
    if (!b || !behaviour) return notFound(res, 'BLOB_UNKNOWN');
    const s = statsOf(b[2] as string);
    s.requests++;
    if (req.method === 'HEAD') {
      const length = behaviour.kind === 'claimed-length' ? behaviour.length : 'body' in behaviour ? behaviour.body.length : undefined;
      res.writeHead(200, length === undefined ? {} : { 'content-length': length }).end();
      return;
    }
    s.open++;
    let closed = false;
    res.once('close', () => {
      closed = true;
      s.open--;
    });
    const send = async (chunk: Buffer): Promise<boolean> => {
      if (closed) return false;
      s.bytesSent += chunk.length;
      if (!res.write(chunk)) await drained(res);
      return !closed;
    };
    void (async () => {
      switch (behaviour.kind) {
        case 'endless':
        case 'claimed-length': {
          res.writeHead(200, behaviour.kind === 'endless' ? {} : { 'content-length': behaviour.length });
          const piece = randomBytes(PIECE);
          while (await send(piece));
          return;
        }
        case 'bytes': {
          const length = behaviour.contentLength ?? behaviour.body.length;
          res.writeHead(200, behaviour.chunked ? {} : { 'content-length': length });
          for (let i = 0; i < behaviour.body.length; i += PIECE) if (!(await send(behaviour.body.subarray(i, i + PIECE)))) return;
          res.end();
          return;
        }
        case 'trickle': {
          res.writeHead(200, { 'content-length': behaviour.body.length });
          for (let i = 0; i < behaviour.body.length; i += behaviour.chunkBytes) {
            if (!(await send(behaviour.body.subarray(i, i + behaviour.chunkBytes)))) return;
            await new Promise((resolve) => setTimeout(resolve, behaviour.everyMs));
          }
          res.end();
          return;
        }
      }
    })();
  });
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    setBlob: (digest, behaviour) => blobs.set(digest, behaviour),
    setManifest(repository, tag, bytes, mediaType, digest) {
      manifests.set(`${repository}\n${tag}`, { bytes, mediaType, digest });
      manifests.set(`${repository}\n${digest}`, { bytes, mediaType, digest });
    },
    stats: (digest) => ({ ...statsOf(digest) }),
    connections: () => sockets.size,
    async stop() {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

function notFound(res: ServerResponse, code: string): void {
  res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ errors: [{ code, message: 'unknown' }] }));
}
