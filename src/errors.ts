/**
 * The registry error codes of the OCI distribution spec (and the few Docker
 * adds), each with its HTTP status, in one table. Every error a client sees
 * is a RegistryError written by the one error handler in http/error-handler.ts.
 */
export const ERROR_CODES = {
  BLOB_UNKNOWN: { status: 404, message: 'blob unknown to registry' },
  BLOB_UPLOAD_INVALID: { status: 400, message: 'blob upload invalid' },
  BLOB_UPLOAD_UNKNOWN: { status: 404, message: 'blob upload unknown to registry' },
  DIGEST_INVALID: { status: 400, message: 'provided digest did not match uploaded content' },
  MANIFEST_BLOB_UNKNOWN: { status: 404, message: 'manifest references a manifest or blob unknown to registry' },
  MANIFEST_INVALID: { status: 400, message: 'manifest invalid' },
  MANIFEST_UNKNOWN: { status: 404, message: 'manifest unknown to registry' },
  NAME_INVALID: { status: 400, message: 'invalid repository name' },
  NAME_UNKNOWN: { status: 404, message: 'repository name not known to registry' },
  SIZE_INVALID: { status: 400, message: 'provided length did not match content length' },
  TAG_INVALID: { status: 400, message: 'invalid tag' },
  UNAUTHORIZED: { status: 401, message: 'authentication required' },
  DENIED: { status: 403, message: 'requested access to the resource is denied' },
  UNSUPPORTED: { status: 405, message: 'the operation is unsupported' },
  TOOMANYREQUESTS: { status: 429, message: 'too many requests' },
  // Not in the spec's table, which has no code for 416; clients read only the status.
  RANGE_INVALID: { status: 416, message: 'requested range not satisfiable' },
  // distribution's codes for failures that are not the client's: an upstream
  // that fails answers UNAVAILABLE with status 502 (or 504 on a timeout).
  UNAVAILABLE: { status: 503, message: 'service unavailable' },
  // archway's admin API (/_archway/): a request it cannot read, a job it does not know.
  INVALID_REQUEST: { status: 400, message: 'invalid request' },
  JOB_UNKNOWN: { status: 404, message: 'job unknown' },
  // A reload whose configuration file does not validate, or changes a field only a restart may.
  CONFIG_INVALID: { status: 422, message: 'configuration invalid; nothing was changed' },
  UNKNOWN: { status: 500, message: 'unknown error' },
} as const satisfies Record<string, { status: number; message: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export class RegistryError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly detail: unknown;
  /** Extra response headers, e.g. Retry-After on TOOMANYREQUESTS. */
  readonly headers: Readonly<Record<string, string>>;

  constructor(
    code: ErrorCode,
    message?: string,
    opts: { detail?: unknown; status?: number; headers?: Record<string, string>; cause?: unknown } = {},
  ) {
    super(message ?? ERROR_CODES[code].message, opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'RegistryError';
    this.code = code;
    this.status = opts.status ?? ERROR_CODES[code].status;
    this.detail = opts.detail;
    this.headers = opts.headers ?? {};
  }
}

export function shuttingDown(): RegistryError {
  return new RegistryError('UNAVAILABLE', 'archway is shutting down');
}

/** The spec's error envelope. */
export function errorBody(err: RegistryError): { errors: Array<{ code: string; message: string; detail: unknown }> } {
  return { errors: [{ code: err.code, message: err.message, detail: err.detail ?? null }] };
}
