import type { Digest } from '../oci/digest.ts';
import type { VerifyOutcome } from './blob-store.ts';
import { HashingCheck, TrustedCheck, type DamagedBlobError, type ReadCheck, type StoredCopy } from './read-check.ts';
import { growingLru } from '../util/growing-lru.ts';

/**
 * Digests remembered as verified. A digest that falls out is hashed again on
 * its next read: the bound costs work, never safety. 64 Ki entries are a few
 * MiB of strings; a cache of more blobs than that is re-verified in part.
 */
const MAX_TRUSTED = 64 * 1024;

interface OpenCopy extends StoredCopy {
  readers: number;
}

/**
 * Which stored blobs this process has verified (ARCHITECTURE.md: read back
 * from archway's own storage is verified before it is trusted, at least once
 * per process per blob), and the stored copies being read, so that a copy
 * found damaged cuts every read of it, trusted ones included.
 */
export class BlobTrust {
  private readonly verified = growingLru<Digest, true>(MAX_TRUSTED);
  private readonly open = new Map<Digest, OpenCopy>();
  private readonly verifying = new Map<Digest, Promise<VerifyOutcome>>();

  constructor(private readonly onDamaged: (err: DamagedBlobError) => void) {}

  isTrusted(digest: Digest): boolean {
    return this.verified.has(digest);
  }

  /** The check for one read: `hash` for a whole read that verifies. Call `done` when the read closes. */
  begin(digest: Digest, hash: boolean): { check: ReadCheck; done: () => void } {
    let copy = this.open.get(digest);
    if (!copy) {
      copy = { condemned: false, readers: 0 };
      this.open.set(digest, copy);
    }
    copy.readers++;
    const current = copy;
    const check =
      hash
        ? new HashingCheck(digest, current, () => this.verified.set(digest, true), this.onDamaged)
        : new TrustedCheck(digest, current, this.onDamaged);
    let finished = false;
    const done = () => {
      if (finished) return;
      finished = true;
      if (--current.readers === 0 && this.open.get(digest) === current) this.open.delete(digest);
    };
    return { check, done };
  }

  /** One whole verification at a time per digest: parallel range requests of a new blob wait for the same one. */
  verifyOnce(digest: Digest, verify: () => Promise<VerifyOutcome>): Promise<VerifyOutcome> {
    let running = this.verifying.get(digest);
    if (!running) {
      running = verify().finally(() => this.verifying.delete(digest));
      this.verifying.set(digest, running);
    }
    return running;
  }

  /** The stored copy is bad: every read of it is cut before its last byte, and it is trusted no more. */
  condemn(digest: Digest): void {
    this.verified.delete(digest);
    const copy = this.open.get(digest);
    if (copy) copy.condemned = true;
    // Reads of a copy stored later start afresh.
    this.open.delete(digest);
  }

  /** Another copy (or none) is stored under this digest now: it must be verified again. */
  forget(digest: Digest): void {
    this.verified.delete(digest);
    this.open.delete(digest);
  }
}
