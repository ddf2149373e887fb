import type { Readable } from 'node:stream';

/**
 * Throw away an upstream response body. undici's body emits an AbortError
 * when destroyed; with no listener that is an uncaught exception that would
 * take the whole process down, so a listener is attached first.
 */
export function discardBody(body: Readable): void {
  body.on('error', () => undefined);
  body.destroy();
}
