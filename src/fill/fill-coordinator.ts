import type { Digest } from '../oci/digest.ts';

export type WaitOutcome = 'released' | 'timeout' | 'unavailable';

/** The right to download one blob for every replica, held while the fill runs. */
export interface FillLease {
  /** The fill is over (committed, relayed or failed): others may look in the store or try themselves. */
  release(): void;
}

/**
 * Who downloads a blob when several replicas want it at once. In one process
 * the FillTable does it all; across replicas a lease (Redis) makes one
 * replica fetch and the others wait for the stored blob.
 */
export interface FillCoordinator {
  /** Other processes fill into the same store: after a claim, the blob may already be there. */
  readonly shared: boolean;
  /** The lease, or undefined when another replica holds it. */
  claim(upstream: string, digest: Digest): Promise<FillLease | undefined>;
  /**
   * Resolves `released` when the holder's lease is gone (released, or expired
   * with a dead holder), `timeout` when the wait (redis.fillWait) is over, or
   * `unavailable` when the coordination itself is away.
   */
  waitForRelease(upstream: string, digest: Digest): Promise<WaitOutcome>;
}

/** A single replica: every claim succeeds (FillTable coalesces within the process). */
export class LocalFillCoordinator implements FillCoordinator {
  readonly shared = false;

  async claim(): Promise<FillLease> {
    return { release: () => {} };
  }

  async waitForRelease(): Promise<WaitOutcome> {
    return 'released';
  }
}
