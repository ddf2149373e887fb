import { createHash, type Hash } from 'node:crypto';
import { digestAlgorithm, digestHex, type Digest } from '../oci/digest.ts';

/** A stored copy of a blob whose bytes are not the blob's: a mismatch, a short or long file. */
export class DamagedBlobError extends Error {
  override readonly name = 'DamagedBlobError';
  constructor(
    readonly digest: Digest,
    readonly reason: string,
  ) {
    super(`cached blob ${digest} is damaged: ${reason}`);
  }
}

/**
 * What a read of a stored blob asks before it hands on its last chunk. The
 * reader calls `update` with every chunk in order, `verdict` with the last one
 * still held back (a reason keeps it back and cuts the read), and `damaged`
 * once when the copy proved bad (the verdict's reason, or a file that ended
 * early): that reports it and returns the error to cut the read with.
 */
export interface ReadCheck {
  update(chunk: Buffer): void;
  /** Undefined when the read may end; otherwise why the copy is bad. */
  verdict(): string | undefined;
  damaged(reason: string): DamagedBlobError;
}

/** Readers of one stored copy of a blob: all of them are cut once any check finds the copy bad. */
export interface StoredCopy {
  condemned: boolean;
}

/**
 * A read of a copy not verified in this process: the whole blob, hashed as it
 * goes; the last chunk waits for the digest to match.
 */
export class HashingCheck implements ReadCheck {
  private readonly hash: Hash;

  constructor(
    private readonly digest: Digest,
    private readonly copy: StoredCopy,
    private readonly onVerified: () => void,
    private readonly onDamaged: (err: DamagedBlobError) => void,
  ) {
    this.hash = createHash(digestAlgorithm(digest));
  }

  update(chunk: Buffer): void {
    this.hash.update(chunk);
  }

  verdict(): string | undefined {
    const hex = this.hash.digest('hex');
    if (hex !== digestHex(this.digest)) return `its bytes hash to ${digestAlgorithm(this.digest)}:${hex}`;
    // Another read found this copy bad meanwhile (a file changed under a running read): its fate is decided once.
    if (this.copy.condemned) return 'another read of this copy found it damaged';
    this.onVerified();
    return undefined;
  }

  damaged(reason: string): DamagedBlobError {
    return report(this.digest, this.copy, reason, this.onDamaged);
  }
}

/**
 * A read of a copy already verified in this process (or a range of one): no
 * hashing, only the copy's fate is asked before the last chunk, so a copy that
 * a scrub or another read found damaged meanwhile is cut here too.
 */
export class TrustedCheck implements ReadCheck {
  constructor(
    private readonly digest: Digest,
    private readonly copy: StoredCopy,
    private readonly onDamaged: (err: DamagedBlobError) => void,
  ) {}

  update(): void {}

  verdict(): string | undefined {
    return this.copy.condemned ? 'found damaged while it was being read' : undefined;
  }

  damaged(reason: string): DamagedBlobError {
    return report(this.digest, this.copy, reason, this.onDamaged);
  }
}

/** The first read to find a copy bad reports it (removal, metric, log); the others only cut. */
function report(digest: Digest, copy: StoredCopy, reason: string, onDamaged: (err: DamagedBlobError) => void): DamagedBlobError {
  const err = new DamagedBlobError(digest, reason);
  if (!copy.condemned) onDamaged(err);
  return err;
}

/** Read a checked stream to its end (at `pace`): 'damaged' when its check cut it. Always destroys it. */
export async function readThrough(stream: AsyncIterable<unknown> & { destroy(): void }, pace?: (bytes: number) => Promise<void>): Promise<'intact' | 'damaged'> {
  try {
    for await (const chunk of stream) await pace?.((chunk as Buffer).length);
    return 'intact';
  } catch (err) {
    if (err instanceof DamagedBlobError) return 'damaged';
    throw err;
  } finally {
    stream.destroy();
  }
}
