import { createHash } from 'node:crypto';
import { access, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Digest } from '../oci/digest.ts';
import type { DiskBudget } from './disk-budget.ts';
import { scanRecords } from './scan-records.ts';
import { UseTimes } from './use-times.ts';
import { growingLru } from '../util/growing-lru.ts';

/** Which repositories of an upstream are known to hold a digest (see RepositoryAccess). */
export interface ConfirmationStore {
  init(): Promise<void>;
  /** Rejects when the store cannot tell (a shared store that is away). */
  has(upstream: string, repository: string, digest: Digest): Promise<boolean>;
  add(upstream: string, repository: string, digest: Digest): Promise<void>;
}

/**
 * One empty file per confirmation, named by a hash of (upstream, repository,
 * digest), so confirmations survive restarts: a private image cached through
 * its own repository still pulls when the upstream is down. Each counts a
 * block toward cache.maxSize and is evicted by the same LRU as the blobs:
 * safely, since a confirmation that is gone only means the upstream is asked
 * again (RepositoryAccess never reads an absence as a yes).
 */
export class FsConfirmationStore implements ConfirmationStore {
  private readonly dir: string;
  private readonly known = growingLru<string, true>(100_000);
  private readonly useTimes: UseTimes;

  constructor(
    private readonly cacheDir: string,
    private readonly budget?: DiskBudget,
  ) {
    this.dir = join(cacheDir, 'access');
    this.useTimes = UseTimes.under(cacheDir);
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    if (this.budget) this.budget.scanning(scanRecords(this.cacheDir, 'access', this.budget));
  }

  async has(upstream: string, repository: string, digest: Digest): Promise<boolean> {
    const key = this.key(upstream, repository, digest);
    if (this.known.has(key)) {
      this.used(key);
      return true;
    }
    try {
      await access(join(this.dir, key));
      this.known.set(key, true);
      this.used(key);
      return true;
    } catch {
      return false;
    }
  }

  async add(upstream: string, repository: string, digest: Digest): Promise<void> {
    const key = this.key(upstream, repository, digest);
    if (this.known.has(key)) return;
    // Known in memory first: if the disk refuses the file, isolation holds for this process's life.
    this.known.set(key, true);
    await writeFile(join(this.dir, key), '');
    await this.budget?.charge(`access/${key}`, 0);
  }

  private used(key: string): void {
    if (!this.budget) return;
    this.budget.touch(`access/${key}`);
    this.useTimes.used(`access/${key}`);
  }

  private key(upstream: string, repository: string, digest: Digest): string {
    return confirmationKey(upstream, repository, digest);
  }
}

/** The name of a confirmation in every confirmation store: a hash, so repository names of any length fit. */
export function confirmationKey(upstream: string, repository: string, digest: Digest): string {
  return createHash('sha256').update(`${upstream}\n${repository}\n${digest}`).digest('hex');
}
