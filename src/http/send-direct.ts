import type { FastifyReply } from 'fastify';
import type { DirectBody } from '../store/blob-store.ts';

/**
 * Answers with a body that writes itself (a cached blob file through recycled
 * buffers, measured in BENCHMARKS.md) instead of letting fastify pipe a
 * stream. The reply is hijacked, so the status and headers set on it are
 * written here; the request log line still comes from the raw response's
 * 'close' (request-context.ts), cut answers included.
 */
export async function sendDirect(reply: FastifyReply, body: DirectBody): Promise<void> {
  reply.hijack();
  const res = reply.raw;
  for (const [name, value] of Object.entries(reply.getHeaders())) {
    if (value !== undefined) res.setHeader(name, value);
  }
  res.writeHead(reply.statusCode);
  try {
    await body.writeTo(res);
  } catch (err) {
    // Headers are out: cutting the connection is the only way to say the body is not whole.
    reply.log.error({ err }, 'cached blob could not be read to the end; answer cut');
    res.destroy();
  }
}
