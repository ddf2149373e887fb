import { createServer as createHttpServer, type RequestListener, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import { readTls, type TlsFiles } from './tls.ts';

/** On every answer archway writes, whichever path writes it: a body is what its Content-Type says, never sniffed into a page. */
export const NOSNIFF = ['x-content-type-options', 'nosniff'] as const;

export interface ListenerSettings {
  tls: TlsFiles | undefined;
  /** Until a request's headers have arrived. */
  headersTimeout: number;
  /** After the headers, until the body has arrived. */
  bodyTimeout: number;
  keepAliveTimeout: number;
  maxConnections: number;
  /** A connection over maxConnections was closed. */
  onDropped: () => void;
}

/**
 * Node checks the header and request deadlines on this period (its default, 30 s,
 * would let a half-sent request linger up to 30 s past clientHeaders); walking
 * the open connections once a second costs nothing next to serving them.
 */
const DEADLINE_CHECK_MS = 1000;

/**
 * A listener (HTTPS with the configured certificate, else plain HTTP) with
 * archway's client limits set on it explicitly: fastify's own timeout options
 * do not reach a server made by serverFactory, so without this Node's defaults
 * would apply.
 */
export function createListener(handler: RequestListener, settings: ListenerSettings): Server {
  const options = {
    headersTimeout: settings.headersTimeout,
    // Node's requestTimeout runs from the first byte to the end of the body, and must not be shorter than headersTimeout.
    requestTimeout: settings.headersTimeout + settings.bodyTimeout,
    keepAliveTimeout: settings.keepAliveTimeout,
    connectionsCheckingInterval: Math.min(DEADLINE_CHECK_MS, settings.headersTimeout),
  };
  const withNosniff: RequestListener = (req, res) => {
    res.setHeader(...NOSNIFF);
    handler(req, res);
  };
  const server = settings.tls ? createHttpsServer({ ...readTls(settings.tls), ...options }, withNosniff) : createHttpServer(options, withNosniff);
  server.maxConnections = settings.maxConnections;
  server.on('drop', () => settings.onDropped());
  return server;
}

/**
 * A reloaded configuration's client limits on a listener already open: Node
 * reads these properties for every connection check, so connections open now
 * get them too. The deadline-check period stays what it was.
 */
export function applyListenerSettings(server: Server, settings: ListenerSettings): void {
  server.headersTimeout = settings.headersTimeout;
  server.requestTimeout = settings.headersTimeout + settings.bodyTimeout;
  server.keepAliveTimeout = settings.keepAliveTimeout;
  server.maxConnections = settings.maxConnections;
}

/**
 * Stop accepting on these listeners and let their responses in flight
 * finish: a connection is closed once it is idle, and whatever still runs
 * after `timeoutMs` is cut. Resolves when every listener has closed.
 */
export async function closeGracefully(servers: readonly Server[], timeoutMs: number, closeOne: (server: Server) => Promise<unknown> = closeListener): Promise<void> {
  // Connections busy at close become idle when their response ends: close them then.
  const idle = setInterval(() => servers.forEach((s) => s.closeIdleConnections()), 100);
  const timer = setTimeout(() => servers.forEach((s) => s.closeAllConnections()), timeoutMs);
  try {
    await Promise.all(servers.map(closeOne));
  } finally {
    clearInterval(idle);
    clearTimeout(timer);
  }
}

function closeListener(server: Server): Promise<void> {
  return new Promise((resolve) => (server.listening ? server.close(() => resolve()) : resolve()));
}

/**
 * What a listener answers when Node's parser refuses the bytes or a request
 * deadline passes (fastify's default answer, with nosniff); no route ran. Used
 * on every listener, fastify's own and server.ports, so they answer alike.
 */
export function answerClientError(err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || socket.destroyed) return;
  // Bytes after a request that said `Connection: close`: that request is answered (or being
  // answered) and the connection closes after it; the rest is never read as a request, and a
  // second answer here would follow the first one on the wire (or cut it).
  if (err.code === 'HPE_CLOSED_CONNECTION') return;
  const [status, text, message] =
    err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
      ? [408, 'Request Timeout', 'Client Timeout']
      : err.code === 'HPE_HEADER_OVERFLOW'
        ? [431, 'Request Header Fields Too Large', 'Exceeded maximum allowed HTTP header size']
        : [400, 'Bad Request', 'Client Error'];
  const body = JSON.stringify({ error: text, message, statusCode: status });
  if (socket.writable) {
    socket.write(
      `HTTP/1.1 ${status} ${text}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nContent-Type: application/json\r\n${NOSNIFF[0]}: ${NOSNIFF[1]}\r\nConnection: close\r\n\r\n${body}`,
    );
  }
  socket.destroy(err);
}
