import type { RegistryError } from '../errors.ts';

type Body = NodeJS.ReadableStream & { readableEnded?: boolean };

/** How long a refused write may take to send the body archway throws away. */
export const WRITE_DRAIN_MS = 2000;

/**
 * Let a body that is being thrown away arrive, for at most `timeoutMs`. A
 * server that closes with a request body unread makes the kernel reset the
 * connection, and the client never sees the answer.
 */
export function bodyDrained(body: Body, timeoutMs: number): Promise<void> {
  if (body.readableEnded) return Promise.resolve();
  // A request without a body runs no content parser: flowing, it ends at once.
  body.resume();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, timeoutMs);
    const done = () => {
      clearTimeout(timer);
      resolve();
    };
    body.once('end', done);
    body.once('error', done);
    body.once('close', done);
  });
}

/**
 * The whole body, if it is at most `limit` bytes; otherwise `tooLarge()` is
 * thrown, once the rest has been let through (not kept), so the client reads
 * the answer. Memory stays within the limit whatever the client sends.
 */
export async function readBounded(body: Body, limit: number, contentLength: string | undefined, tooLarge: () => RegistryError): Promise<Buffer> {
  if (contentLength !== undefined && Number(contentLength) > limit) {
    await bodyDrained(body, WRITE_DRAIN_MS);
    throw tooLarge();
  }
  const chunks: Buffer[] = [];
  let length = 0;
  const complete = await new Promise<boolean>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      length += chunk.length;
      if (length <= limit) return chunks.push(chunk);
      body.off('data', onData);
      chunks.length = 0;
      resolve(false);
    };
    body.on('data', onData);
    body.once('end', () => resolve(true));
    body.once('error', reject);
    body.once('close', () => resolve(length <= limit && body.readableEnded === true));
  });
  if (!complete) {
    await bodyDrained(body, WRITE_DRAIN_MS);
    throw tooLarge();
  }
  return Buffer.concat(chunks);
}
