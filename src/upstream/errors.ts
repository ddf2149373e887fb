import { errors as undiciErrors } from 'undici';
import { RegistryError, type ErrorCode } from '../errors.ts';
import { firstHeader } from '../util/headers.ts';
import { AddressRefusedError } from './address-policy.ts';

/** What was being fetched, to choose the right "unknown" code for a 404. */
export type FetchKind = 'manifest' | 'blob' | 'tags' | 'referrers' | 'token';

const NOT_FOUND_CODE: Record<FetchKind, ErrorCode> = {
  manifest: 'MANIFEST_UNKNOWN',
  blob: 'BLOB_UNKNOWN',
  tags: 'NAME_UNKNOWN',
  referrers: 'MANIFEST_UNKNOWN',
  token: 'UNAUTHORIZED',
};

/** Codes an upstream may send in its error envelope that archway passes on as they are. */
const PASS_THROUGH: ReadonlySet<string> = new Set(['NAME_UNKNOWN', 'MANIFEST_UNKNOWN', 'BLOB_UNKNOWN', 'NAME_INVALID', 'TAG_INVALID']);

/**
 * Map an upstream's error status to the error archway answers. The message
 * names the upstream by its configured key only: URLs may carry credentials.
 */
export function upstreamStatusError(
  upstream: string,
  kind: FetchKind,
  status: number,
  headers: Record<string, string | string[] | undefined>,
  upstreamCode?: string,
): RegistryError {
  if (status === 404) {
    const code = upstreamCode && PASS_THROUGH.has(upstreamCode) ? (upstreamCode as ErrorCode) : NOT_FOUND_CODE[kind];
    return new RegistryError(code, undefined, { detail: { upstream } });
  }
  if (status === 401) return new RegistryError('UNAUTHORIZED', `upstream ${upstream} refused the credentials`, { detail: { upstream } });
  if (status === 403) return new RegistryError('DENIED', `upstream ${upstream} denied access`, { detail: { upstream } });
  if (status === 429) {
    const value = firstHeader(headers['retry-after']);
    return new RegistryError('TOOMANYREQUESTS', `upstream ${upstream} is rate limiting`, {
      detail: { upstream },
      headers: value ? { 'retry-after': value } : {},
    });
  }
  return new RegistryError('UNAVAILABLE', `upstream ${upstream} answered ${status}`, { status: 502, detail: { upstream, status } });
}

/** Map a transport failure (refused, reset, timeout) to 502/504. */
export function upstreamTransportError(upstream: string, err: unknown): RegistryError {
  if (err instanceof RegistryError) return err;
  if (err instanceof AddressRefusedError) {
    // Which host was refused is in the log line the connector wrote; the client learns the rule, not the address.
    return err.redirected
      ? badUpstream(upstream, 'a redirect or token realm leads to an address archway does not connect to', { refused: err.reason })
      : badUpstream(upstream, 'its address is in network.deny', { refused: err.reason });
  }
  // undici's redirect interceptor refuses to revisit a URL.
  if (err instanceof undiciErrors.InvalidArgumentError && /redirect loop/i.test(err.message)) return badUpstream(upstream, 'redirect loop');
  const timeout =
    err instanceof undiciErrors.ConnectTimeoutError ||
    err instanceof undiciErrors.HeadersTimeoutError ||
    err instanceof undiciErrors.BodyTimeoutError ||
    (err instanceof Error && err.name === 'TimeoutError');
  const reason = err instanceof Error ? ((err as NodeJS.ErrnoException).code ?? err.name) : 'error';
  return new RegistryError(
    'UNAVAILABLE',
    timeout ? `upstream ${upstream} timed out` : `upstream ${upstream} is unreachable (${reason})`,
    { status: timeout ? 504 : 502, detail: { upstream }, cause: err },
  );
}

/** The upstream answered, but with something archway cannot pass on (bad bytes, too large, a loop). */
export function badUpstream(upstream: string, message: string, detail: Record<string, unknown> = {}): RegistryError {
  return new RegistryError('UNAVAILABLE', `upstream ${upstream}: ${message}`, { status: 502, detail: { upstream, ...detail } });
}

/**
 * True when the failure says the upstream as a whole is in trouble (unreachable,
 * timing out, overloaded, rate limiting), not just this request (a 500 for one
 * odd name): only those make archway treat it as down for a while.
 */
export function isUpstreamWideFailure(err: RegistryError): boolean {
  const status = (err.detail as { status?: number } | undefined)?.status;
  if (err.code === 'TOOMANYREQUESTS') return true;
  if (err.status === 504) return true;
  if (err.status !== 502) return false;
  return status === undefined || status === 502 || status === 503 || status === 504;
}

/** True for failures during which a stale cached tag should be served instead. */
export function isUpstreamOutage(err: unknown): boolean {
  return err instanceof RegistryError && (err.status >= 500 || err.code === 'TOOMANYREQUESTS');
}
