/** The bounds every blob fill runs within (from cache.* and timeouts.*). */
export interface FillLimits {
  /** cache.maxBlobSize: the longest body accepted when nothing says how long the blob is. */
  maxBlobSize: number;
  /** cache.maxSize: a blob known to be larger is relayed to its readers, never written. */
  cacheLimit: number;
  /** timeouts.body: the least time a whole body may take. */
  bodyFloorMs: number;
  /** timeouts.bodyMinRate: bytes per second a body must average, past the floor. */
  bodyMinRate: number;
  /** limits.backgroundFills: fills that may go on after their last reader left. */
  backgroundFills: number;
}

/** How long a body of `size` bytes may take in all: the floor, or longer at the slowest allowed rate. */
export function bodyDeadlineMs(limits: FillLimits, size: number): number {
  return Math.max(limits.bodyFloorMs, (size / limits.bodyMinRate) * 1000);
}
