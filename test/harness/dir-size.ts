// How much a directory holds (the sum of its files' sizes), and the most it held while something ran.
import { readdir, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export async function dirBytes(dir: string): Promise<number> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true }).catch(() => []);
  const sizes = await Promise.all(entries.filter((e) => e.isFile()).map((e) => stat(join(e.parentPath, e.name)).then((s) => s.size, () => 0)));
  return sizes.reduce((a, b) => a + b, 0);
}

/** Samples a directory's size every few milliseconds until stopped; `max` is the largest seen. */
export class DirSampler {
  max = 0;
  private running = true;
  private readonly done: Promise<void>;

  constructor(private readonly dir: string) {
    this.done = (async () => {
      while (this.running) {
        this.max = Math.max(this.max, await dirBytes(this.dir));
        await sleep(5);
      }
    })();
  }

  async stop(): Promise<number> {
    this.running = false;
    await this.done;
    this.max = Math.max(this.max, await dirBytes(this.dir));
    return this.max;
  }
}
