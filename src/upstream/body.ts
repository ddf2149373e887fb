import type { Readable } from 'node:stream';

// Upstream response bodies: read small ones whole within a limit, or throw them away safely.

/**
 * Throw away an upstream response body. undici's body emits an AbortError
 * when destroyed; with no listener that is an uncaught exception that would
 * take the whole process down, so a listener is attached first.
 */
export function discardBody(body: Readable): void {
  body.on('error', () => undefined);
  body.destroy();
}

/** Read a small body as text, refusing more than `limit` bytes. */
export async function readLimited(body: Readable, limit: number): Promise<string> {
  return (await readLimitedBuffer(body, limit)).toString('utf8');
}

export async function readLimitedBuffer(body: Readable, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > limit) {
      discardBody(body);
      throw new BodyTooLargeError(limit);
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}

export class BodyTooLargeError extends Error {
  constructor(readonly limit: number) {
    super(`body larger than ${limit} bytes`);
    this.name = 'BodyTooLargeError';
  }
}
