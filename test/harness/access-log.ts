// An nginx access log read as requests: the lines written since the last clear,
// parsed by the caller's format. nginx writes each line when the request ends, unbuffered.
import { readFile, stat } from 'node:fs/promises';

export interface AccessLog<T> {
  /** The requests logged since the last clear (or since the log was opened). */
  requests(): Promise<T[]>;
  /** Forget what is logged so far. */
  clear(): Promise<void>;
}

export async function openAccessLog<T>(path: string, parseLine: (line: string) => T | undefined): Promise<AccessLog<T>> {
  let offset = 0;
  const log: AccessLog<T> = {
    async requests() {
      const text = (await readFile(path).catch(() => Buffer.alloc(0))).subarray(offset).toString('utf8');
      return text
        .split('\n')
        .map(parseLine)
        .filter((r): r is T => r !== undefined);
    },
    async clear() {
      offset = (await stat(path).catch(() => undefined))?.size ?? 0;
    },
  };
  await log.clear();
  return log;
}
