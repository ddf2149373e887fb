/** First pause after an upstream failure, before it is asked again for cached tags (timeouts.upstreamBackoff). */
const FIRST_BACKOFF_MS = 5_000;
/** The longest pause, as a multiple of the first: a minute for the default 5 s. */
const MAX_BACKOFF_FACTOR = 12;

/**
 * Whether an upstream is failing. While it is, cached tags are served stale at
 * once instead of each request waiting out a timeout against a dead upstream
 * (an upstream that blackholes traffic costs `timeouts.headers` per attempt).
 * Requests for uncached content still go to the upstream, so recovery is
 * noticed; the pause doubles with each consecutive failure.
 */
export class UpstreamHealth {
  private failures = 0;
  private downUntil = 0;
  lastError: string | undefined;
  /** When the last failure happened (ms since epoch), for the status page. */
  lastErrorAt: number | undefined;
  /** Failures since start, for the status page. */
  failuresTotal = 0;

  constructor(
    private readonly now: () => number = Date.now,
    private readonly firstBackoffMs: number = FIRST_BACKOFF_MS,
  ) {}

  succeeded(): void {
    this.failures = 0;
    this.downUntil = 0;
  }

  failed(reason: string): void {
    this.failures++;
    this.failuresTotal++;
    this.lastError = reason;
    this.lastErrorAt = this.now();
    const first = this.firstBackoffMs;
    this.downUntil = this.now() + Math.min(first * MAX_BACKOFF_FACTOR, first * 2 ** (this.failures - 1));
  }

  get down(): boolean {
    return this.now() < this.downUntil;
  }
}
