import { RegistryError } from '../errors.ts';
import { growingLru } from '../util/growing-lru.ts';

export interface ClientLimits {
  /** Requests one client may have in progress at once. */
  concurrentRequests?: number | undefined;
  /** Sustained requests per second per client (a token bucket of one second's worth). */
  requestsPerSecond?: number | undefined;
}

interface ClientState {
  inFlight: number;
  tokens: number;
  refilledAt: number;
}

/**
 * Per-client limits. Beyond them a request is refused with 429
 * TOOMANYREQUESTS and a Retry-After saying when to come back; it is never
 * queued (a queue would hold the client's connection and memory).
 */
export class RateLimiter {
  // Idle clients are forgotten after ten minutes; every request refreshes the entry.
  private readonly clients = growingLru<string, ClientState>(50_000, { ttl: 10 * 60_000, updateAgeOnGet: true });

  constructor(
    private readonly limits: ClientLimits,
    private readonly now: () => number = Date.now,
  ) {}

  /** Admit a request from `client`; call the returned release when its response is over. */
  admit(client: string): () => void {
    const { concurrentRequests, requestsPerSecond } = this.limits;
    const now = this.now();
    let state = this.clients.get(client);
    if (!state) {
      state = { inFlight: 0, tokens: requestsPerSecond ?? 0, refilledAt: now };
      this.clients.set(client, state);
    }
    if (requestsPerSecond !== undefined) {
      state.tokens = Math.min(requestsPerSecond, state.tokens + ((now - state.refilledAt) / 1000) * requestsPerSecond);
      state.refilledAt = now;
      if (state.tokens < 1) {
        const waitS = Math.max(1, Math.ceil((1 - state.tokens) / requestsPerSecond));
        throw tooMany(waitS, 'request rate');
      }
    }
    if (concurrentRequests !== undefined && state.inFlight >= concurrentRequests) throw tooMany(1, 'concurrent requests');
    if (requestsPerSecond !== undefined) state.tokens -= 1;
    state.inFlight++;
    const s = state;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      s.inFlight--;
    };
  }
}

function tooMany(retryAfterS: number, what: string): RegistryError {
  return new RegistryError('TOOMANYREQUESTS', `too many requests: ${what} limit reached`, { headers: { 'retry-after': String(retryAfterS) } });
}
