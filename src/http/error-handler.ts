import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { RegistryError, errorBody } from '../errors.ts';

/**
 * The one place errors become responses. A RegistryError is answered as the
 * spec's envelope; a 4xx from fastify itself (bad header, body too large)
 * keeps its status; anything else is a 500 whose message says nothing of the
 * cause: it is logged, never sent.
 */
export function installErrorHandler(app: FastifyInstance): void {
  app.setErrorHandler((err: FastifyError | Error, request: FastifyRequest, reply: FastifyReply) => {
    const registryError = toRegistryError(err);
    if (registryError.status < 500) {
      // The client's mistake (a RegistryError, or fastify's own 4xx): its answer says enough.
    } else if (!(err instanceof RegistryError)) {
      // Unexpected: the whole error, stack included, for whoever fixes it (never for the client).
      request.log.error({ err }, 'request failed');
    } else {
      // Expected operational failures (an upstream down, a full disk): one short line.
      request.log.warn({ code: registryError.code, status: registryError.status, reason: registryError.message }, 'request failed');
    }
    if (reply.sent || reply.raw.headersSent) {
      // Mid-body: the only honest signal left is to cut the connection.
      reply.raw.destroy();
      return;
    }
    sendError(request.method, reply, registryError);
  });

  app.setNotFoundHandler((request, reply) => {
    sendError(request.method, reply, new RegistryError('NAME_UNKNOWN', 'unknown endpoint', { status: 404, detail: { path: request.url.split('?')[0] } }));
  });
}

/** The spec's envelope with the error's status and headers (no body for HEAD). */
export function sendError(method: string, reply: FastifyReply, err: RegistryError): void {
  void reply
    .code(err.status)
    .headers(err.headers)
    .header('content-type', 'application/json; charset=utf-8')
    .send(method === 'HEAD' ? undefined : errorBody(err));
}

export function toRegistryError(err: unknown): RegistryError {
  if (err instanceof RegistryError) return err;
  const statusCode = (err as FastifyError | undefined)?.statusCode;
  if (typeof statusCode === 'number' && statusCode >= 400 && statusCode < 500) {
    const code = statusCode === 405 ? 'UNSUPPORTED' : statusCode === 401 ? 'UNAUTHORIZED' : 'UNSUPPORTED';
    return new RegistryError(code, (err as Error).message, { status: statusCode });
  }
  return new RegistryError('UNKNOWN', 'internal error');
}
