// HTTP/1.1 over a bare TCP socket, for requests an HTTP client would refuse
// or normalise: `..` segments, raw NUL and non-ASCII bytes, duplicated or
// folded headers, Content-Length with Transfer-Encoding, odd methods. The
// answer is read as bytes and parsed here, so every response the server
// writes on the connection is seen (a second one would mean a smuggled
// request was executed).
import { connect } from 'node:net';

export interface RawResponse {
  status: number;
  reason: string;
  /** Lower-cased names; every occurrence kept. */
  headers: Array<[string, string]>;
  body: Buffer;
}

export interface RawAnswer {
  /** Every complete response on the connection, in order (1xx interim answers excluded). */
  responses: RawResponse[];
  /** Everything the server wrote. */
  raw: Buffer;
  /** The server closed the connection (rather than our idle timeout ending it). */
  closedByServer: boolean;
  /** Bytes that did not parse as a response (a truncated or malformed answer). */
  unparsed: number;
}

export function header(r: RawResponse, name: string): string | undefined {
  return r.headers.find(([k]) => k === name)?.[1];
}

/**
 * Send `bytes` to 127.0.0.1:port and collect the answer: until the server
 * closes, or `quietMs` after a complete response, or `timeoutMs` in all.
 * `headMethod` tells the parser that responses carry no body.
 */
export async function rawExchange(
  port: number,
  bytes: Buffer | string,
  opts: { headMethod?: boolean; quietMs?: number; timeoutMs?: number } = {},
): Promise<RawAnswer> {
  const quietMs = opts.quietMs ?? 150;
  const timeoutMs = opts.timeoutMs ?? 10_000;
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    const chunks: Buffer[] = [];
    let quiet: NodeJS.Timeout | undefined;
    let done = false;
    const finish = (closedByServer: boolean) => {
      if (done) return;
      done = true;
      clearTimeout(overall);
      clearTimeout(quiet);
      socket.destroy();
      const raw = Buffer.concat(chunks);
      const { responses, rest } = parseResponses(raw, opts.headMethod ?? false);
      resolve({ responses, raw, closedByServer, unparsed: rest });
    };
    const overall = setTimeout(() => finish(false), timeoutMs);
    socket.on('data', (d: Buffer) => {
      chunks.push(d);
      clearTimeout(quiet);
      // A complete answer and silence: the server keeps the connection open for more.
      if (parseResponses(Buffer.concat(chunks), opts.headMethod ?? false).responses.length > 0) {
        quiet = setTimeout(() => finish(false), quietMs);
      }
    });
    socket.on('end', () => finish(true));
    socket.on('close', () => finish(true));
    socket.on('error', (err: NodeJS.ErrnoException) => {
      // A reset after the server answered is still an answer.
      if (err.code === 'ECONNRESET' || err.code === 'EPIPE') finish(true);
      else if (!done) {
        done = true;
        clearTimeout(overall);
        reject(err);
      }
    });
    socket.write(bytes);
  });
}

/** Parse as many complete HTTP/1.x responses as `buf` holds. */
export function parseResponses(buf: Buffer, headMethod: boolean): { responses: RawResponse[]; rest: number } {
  const responses: RawResponse[] = [];
  let pos = 0;
  for (;;) {
    const end = buf.indexOf('\r\n\r\n', pos);
    if (end < 0) break;
    const head = buf.subarray(pos, end).toString('latin1').split('\r\n');
    const m = /^HTTP\/1\.[01] (\d{3})(?: (.*))?$/.exec(head[0] ?? '');
    if (!m) break;
    const status = Number(m[1]);
    const headers: Array<[string, string]> = [];
    for (const line of head.slice(1)) {
      const colon = line.indexOf(':');
      if (colon > 0) headers.push([line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim()]);
    }
    let bodyStart = end + 4;
    let body: Buffer;
    const get = (name: string) => headers.find(([k]) => k === name)?.[1];
    if (status < 200 || status === 204 || status === 304 || headMethod) {
      body = Buffer.alloc(0);
    } else if (get('transfer-encoding')?.toLowerCase().includes('chunked')) {
      const parts: Buffer[] = [];
      let p = bodyStart;
      let complete = false;
      for (;;) {
        const lineEnd = buf.indexOf('\r\n', p);
        if (lineEnd < 0) break;
        const size = parseInt(buf.subarray(p, lineEnd).toString('latin1'), 16);
        if (!Number.isFinite(size)) break;
        if (size === 0) {
          const trailerEnd = buf.indexOf('\r\n\r\n', lineEnd);
          if (trailerEnd < 0 && buf.length < lineEnd + 4) break;
          p = trailerEnd < 0 ? lineEnd + 4 : trailerEnd + 4;
          complete = true;
          break;
        }
        if (buf.length < lineEnd + 2 + size + 2) break;
        parts.push(buf.subarray(lineEnd + 2, lineEnd + 2 + size));
        p = lineEnd + 2 + size + 2;
      }
      if (!complete) break;
      body = Buffer.concat(parts);
      bodyStart = p;
    } else if (get('content-length') !== undefined) {
      const length = Number(get('content-length'));
      if (buf.length < bodyStart + length) break;
      body = buf.subarray(bodyStart, bodyStart + length);
      bodyStart += length;
    } else {
      // Delimited by the close.
      body = buf.subarray(bodyStart);
      bodyStart = buf.length;
    }
    pos = bodyStart;
    if (status >= 100 && status < 200) continue;
    responses.push({ status, reason: m[2] ?? '', headers, body });
  }
  return { responses, rest: buf.length - pos };
}

/** A request as bytes; headers are written exactly as given, in order, duplicates included. */
export function rawRequest(method: string, target: string, headers: Array<[string, string]>, body?: Buffer | string, version = 'HTTP/1.1'): Buffer {
  const lines = [`${method} ${target} ${version}`, ...headers.map(([k, v]) => `${k}: ${v}`)];
  return Buffer.concat([Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), typeof body === 'string' || body === undefined ? Buffer.from(body ?? '', 'latin1') : body]);
}
