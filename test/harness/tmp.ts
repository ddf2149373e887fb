// Temporary directories for harness components. Everything lives under
// os.tmpdir() so a crashed run never litters the repository, and directories
// still registered when the process exits (a crash, a timeout, Ctrl-C) are
// removed by an exit hook. Set ARCHWAY_TEST_KEEP_TMP=1 to keep them (logs).
import { rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const pending = new Set<string>();
let hookInstalled = false;

function removeAllSync(): void {
  if (process.env.ARCHWAY_TEST_KEEP_TMP === '1') return;
  for (const dir of pending) {
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      /* best effort: we are exiting */
    }
  }
  pending.clear();
}

export async function tempDir(prefix: string): Promise<string> {
  if (!hookInstalled) {
    hookInstalled = true;
    // process.ts prepends its child-killing exit hook, so children are dead
    // before this runs and cannot recreate files.
    process.on('exit', removeAllSync);
  }
  const dir = await mkdtemp(join(tmpdir(), prefix.endsWith('-') ? prefix : `${prefix}-`));
  pending.add(dir);
  return dir;
}

export async function removeDir(p: string): Promise<void> {
  // maxRetries: registries and daemons may still be closing files for a
  // moment after their process exited (ENOTEMPTY/EBUSY races).
  await rm(p, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
  pending.delete(p);
}
