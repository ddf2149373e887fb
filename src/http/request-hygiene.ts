import type { Server } from 'node:http';
import type { FastifyInstance } from 'fastify';
import { RegistryError, errorBody } from '../errors.ts';
import { NOSNIFF } from './listener.ts';

/** Headers that must not be repeated: a repeat makes the request mean two things (RFC 9110 §5.3, §7.2). */
const SINGLE = new Set(['host', 'authorization', 'content-length']);

/**
 * Refuse requests whose meaning is ambiguous before anything acts on them:
 * repeated Host or Authorization headers (Node keeps one and drops the
 * other, so a proxy in front and archway could read different requests), and
 * a repeated `ns` (which registry?).
 */
export function installRequestHygiene(app: FastifyInstance): void {
  app.addHook('onRequest', (request, _reply, done) => done(ambiguity(request.raw.rawHeaders, request.url)));
}

/** Why the request is ambiguous, or nothing. */
function ambiguity(raw: readonly string[], url: string): RegistryError | undefined {
  const seen = new Set<string>();
  for (let i = 0; i < raw.length; i += 2) {
    const name = (raw[i] as string).toLowerCase();
    if (!SINGLE.has(name)) continue;
    if (seen.has(name)) return new RegistryError('UNSUPPORTED', `ambiguous request: repeated ${name} header`, { status: 400 });
    seen.add(name);
  }
  const query = url.indexOf('?');
  if (query >= 0 && new URLSearchParams(url.slice(query + 1)).getAll('ns').length > 1) {
    return new RegistryError('NAME_INVALID', 'ambiguous request: repeated ns', { status: 400 });
  }
  return undefined;
}

/** A URL fastify cannot decode (malformed percent-encoding) gets the spec's envelope like every other error. */
export function badUrlError(): RegistryError {
  return new RegistryError('NAME_INVALID', 'malformed URL (bad percent-encoding)', { status: 400 });
}

/** archway is no forward proxy: CONNECT is answered, not dropped. */
export function refuseConnect(server: Server): void {
  server.on('connect', (_request, socket) => {
    const body = JSON.stringify(errorBody(new RegistryError('UNSUPPORTED', 'CONNECT is not supported: archway is a registry, not a proxy')));
    socket.on('error', () => undefined);
    socket.end(
      `HTTP/1.1 405 Method Not Allowed\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: ${Buffer.byteLength(body)}\r\n${NOSNIFF[0]}: ${NOSNIFF[1]}\r\nconnection: close\r\n\r\n${body}`,
    );
  });
}
