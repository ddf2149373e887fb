import { readdir, stat } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import type { DiskBudget } from './disk-budget.ts';

/**
 * Charge the files under `cacheDir/folder` (manifests, tags, confirmations)
 * to the disk budget at start-up, with their files' times, so they count and
 * are evicted in one order with blobs. Files that vanish or cannot be read meanwhile are left out.
 */
export async function scanRecords(cacheDir: string, folder: string, budget: DiskBudget): Promise<void> {
  const found: Array<{ key: string; size: number; usedAt: number }> = [];
  const entries = await readdir(join(cacheDir, folder), { recursive: true, withFileTypes: true }).catch(() => []);
  await Promise.all(
    entries
      .filter((e) => e.isFile())
      .map(async (e) => {
        const path = join(e.parentPath, e.name);
        const s = await stat(path).catch(() => undefined);
        // Budget keys use '/' whatever the platform's separator.
        if (s) found.push({ key: relative(cacheDir, path).split(sep).join('/'), size: s.size, usedAt: s.mtimeMs });
      }),
  );
  budget.offer(found);
}
