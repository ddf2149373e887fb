import { readdir, stat } from 'node:fs/promises';
import { join, relative, sep } from 'node:path';
import type { DiskBudget } from './disk-budget.ts';

/**
 * Charge the files under `cacheDir/folder` (manifests, tags) to the disk
 * budget at start-up, oldest first, so they count and can be evicted like
 * blobs. Files that vanish or cannot be read meanwhile are left out.
 */
export async function scanRecords(cacheDir: string, folder: string, budget: DiskBudget): Promise<void> {
  const found: Array<{ key: string; size: number; mtime: number }> = [];
  const entries = await readdir(join(cacheDir, folder), { recursive: true, withFileTypes: true }).catch(() => []);
  await Promise.all(
    entries
      .filter((e) => e.isFile())
      .map(async (e) => {
        const path = join(e.parentPath, e.name);
        const s = await stat(path).catch(() => undefined);
        // Budget keys use '/' whatever the platform's separator.
        if (s) found.push({ key: relative(cacheDir, path).split(sep).join('/'), size: s.size, mtime: s.mtimeMs });
      }),
  );
  found.sort((a, b) => a.mtime - b.mtime);
  for (const f of found) budget.adopt(f.key, f.size);
}
