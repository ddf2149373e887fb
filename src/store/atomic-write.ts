import { randomUUID } from 'node:crypto';
import { rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Write a small file so that readers see all of it or nothing: to a temp file
 * in `tmpDir` (same filesystem), then rename. A failed write (a full disk)
 * leaves no temp file behind.
 */
export async function atomicWrite(path: string, bytes: Buffer | string, tmpDir: string): Promise<void> {
  const temp = join(tmpDir, randomUUID());
  try {
    await writeFile(temp, bytes);
    await rename(temp, path);
  } catch (err) {
    await rm(temp, { force: true });
    throw err;
  }
}
