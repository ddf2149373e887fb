import type { FastifyReply, FastifyRequest } from 'fastify';
import type { ByteRange } from '../store/blob-store.ts';
import { CidrSet } from '../platform/cidr.ts';

/**
 * The request header by which the nginx in front says it can send a cached file
 * itself: `proxy_set_header X-Archway-Accel <location>;`. nginx sets it on every
 * request it passes, replacing whatever a client sent.
 */
const MARKER = 'x-archway-accel';

/**
 * server.accelRedirect: which blob answers go to the nginx in front as an
 * `X-Accel-Redirect` to its internal location over `cache.dir/blobs/`, so that
 * nginx sends the file with sendfile instead of Node copying every byte through
 * userspace (BENCHMARKS.md). archway still decides everything else: access,
 * verification (only copies this process verified), headers, accounting.
 */
export class AccelRedirect {
  private readonly proxies: CidrSet;

  constructor(
    private readonly location: string,
    trustedProxies: readonly string[],
  ) {
    this.proxies = new CidrSet(trustedProxies);
  }

  /**
   * The request came through that nginx: it carries the marker naming this location, over a
   * connection from a trusted proxy (the socket's address, never X-Forwarded-For). A client
   * talking to archway directly gets the bytes, never an empty body.
   */
  applies(request: FastifyRequest): boolean {
    const marker = request.headers[MARKER];
    return marker === this.location && this.proxies.has(request.raw.socket.remoteAddress ?? '');
  }

  /**
   * The answer nginx turns into the file: no body, the blob's headers (nginx keeps
   * Content-Type; the internal location adds Docker-Content-Digest from this answer).
   * nginx answers the Range itself; `range` is what is counted as served.
   */
  send(reply: FastifyReply, digest: string, file: { path: string; size: number; range: ByteRange | undefined }): FastifyReply {
    const ctx = reply.request.archway;
    ctx.accel = true;
    ctx.bodyBytes = file.range ? file.range.end - file.range.start + 1 : file.size;
    return reply
      .header('x-accel-redirect', `${this.location}${file.path}`)
      .header('docker-content-digest', digest)
      .header('content-type', 'application/octet-stream')
      .send();
  }
}
