import { request, type Dispatcher } from 'undici';
import { RegistryError } from '../errors.ts';
import { digestAlgorithm, digestOf, parseDigest, type Digest } from '../oci/digest.ts';
import { manifestMediaType } from '../oci/manifest.ts';
import { UPSTREAM_MANIFEST_ACCEPT } from '../oci/media-types.ts';
import type { Metrics } from '../observability/metrics.ts';
import { firstHeader } from '../util/headers.ts';
import { UpstreamAuth, type Credentials } from './auth.ts';
import { BodyTooLargeError, discardBody, readLimited, readLimitedBuffer } from './body.ts';
import { badUpstream, isUpstreamOutage, isUpstreamWideFailure, upstreamStatusError, upstreamTransportError, type FetchKind } from './errors.ts';
import { UpstreamHealth } from './health.ts';
import type { BlobResponse, FetchedManifest, ManifestHead, PassThroughResponse, Upstream } from './upstream.ts';

/** The spec lets registries refuse manifests over 4 MiB; archway refuses to cache larger ones. */
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const MAX_ERROR_BODY = 64 * 1024;
const MAX_LIST_BODY = 16 * 1024 * 1024;

export interface UpstreamOptions {
  /** The configured key, e.g. docker.io: the only name of the upstream that appears in errors and logs. */
  name: string;
  url: string;
  credentials: Credentials | undefined;
  /** Token realm hosts besides the registry's own that may receive the credentials (`upstreams.<key>.tokenRealms`). */
  tokenRealms: readonly string[];
  dispatcher: Dispatcher;
  /**
   * `body`: the deadline of a whole non-blob answer (a blob's is the fill's, scaled by its size);
   * `backoff`: the first pause of `health` after a failure (timeouts.upstreamBackoff).
   */
  timeouts: { headers: number; bodyIdle: number; body: number; backoff?: number };
  metrics: Metrics;
  /** See RepositoryAccess. */
  isolated: boolean;
  /**
   * Append `?ns=<this>` to every request, as containerd does to a mirror: for an
   * upstream that is itself a mirror serving several registries (another archway,
   * a central tier), so it routes each request to the right one.
   */
  namespace?: string | undefined;
}

interface SendOptions {
  method: 'GET' | 'HEAD';
  path: string;
  repository: string;
  kind: FetchKind;
  accept?: string;
  signal?: AbortSignal | undefined;
}

/**
 * The registry API of one upstream, as archway needs it. Knows auth, timeouts
 * and error mapping; knows nothing of caching. Redirects (blob GETs to a CDN)
 * are followed by the dispatcher's redirect interceptor, which drops
 * Authorization when the origin changes; where they (and token realms) may
 * lead is the dispatcher's address policy (see Dispatchers).
 */
export class UpstreamClient implements Upstream {
  readonly name: string;
  readonly isolated: boolean;
  readonly health: UpstreamHealth;
  private readonly base: URL;
  private readonly auth: UpstreamAuth;

  constructor(private readonly opts: UpstreamOptions) {
    this.name = opts.name;
    this.isolated = opts.isolated;
    this.health = new UpstreamHealth(Date.now, opts.timeouts.backoff);
    this.base = new URL(opts.url);
    // Userinfo in the URL would be sent on every request: keep it out, use username/password.
    this.base.username = '';
    this.base.password = '';
    this.auth = new UpstreamAuth(opts.name, this.base, opts.credentials, opts.tokenRealms, opts.dispatcher, opts.timeouts.headers);
  }

  async getManifest(repository: string, reference: string, signal?: AbortSignal): Promise<FetchedManifest> {
    const res = await this.send({
      method: 'GET',
      path: `/v2/${repository}/manifests/${reference}`,
      repository,
      kind: 'manifest',
      accept: UPSTREAM_MANIFEST_ACCEPT,
      signal,
    });
    const declared = Number(header(res.headers, 'content-length') ?? NaN);
    if (declared > MAX_MANIFEST_BYTES) {
      discardBody(res.body);
      throw this.badUpstream(`manifest larger than ${MAX_MANIFEST_BYTES} bytes`);
    }
    let bytes: Buffer;
    try {
      bytes = await readLimitedBuffer(res.body, MAX_MANIFEST_BYTES);
    } catch (err) {
      if (err instanceof BodyTooLargeError) throw this.badUpstream(`manifest larger than ${MAX_MANIFEST_BYTES} bytes`);
      throw upstreamTransportError(this.name, err);
    }
    let mediaType: string | undefined;
    try {
      mediaType = manifestMediaType(bytes, header(res.headers, 'content-type'));
    } catch {
      throw this.badUpstream('manifest is not JSON');
    }
    // What the upstream claimed is not repeated: it is the upstream's text, not archway's.
    if (mediaType === undefined) throw this.badUpstream('manifest has no manifest media type (neither its mediaType field nor its Content-Type names one)');
    // The digest a client will verify is over exactly these bytes.
    const claimed = header(res.headers, 'docker-content-digest');
    let expected: Digest | undefined;
    if (reference.includes(':')) expected = reference as Digest;
    else if (claimed) expected = safeDigest(claimed);
    const digest = digestOf(bytes, expected ? digestAlgorithm(expected) : 'sha256');
    if (expected && digest !== expected) {
      this.opts.metrics.digestMismatches.inc({ kind: 'manifest' });
      throw this.badUpstream(`manifest digest mismatch: expected ${expected}, got ${digest}`);
    }
    return { bytes, mediaType, digest };
  }

  async headManifest(repository: string, reference: string, signal?: AbortSignal): Promise<ManifestHead> {
    const res = await this.send({
      method: 'HEAD',
      path: `/v2/${repository}/manifests/${reference}`,
      repository,
      kind: 'manifest',
      accept: UPSTREAM_MANIFEST_ACCEPT,
      signal,
    });
    discardBody(res.body);
    const claimed = header(res.headers, 'docker-content-digest');
    const length = header(res.headers, 'content-length');
    return {
      digest: claimed ? safeDigest(claimed) : undefined,
      mediaType: header(res.headers, 'content-type') ?? '',
      size: length === undefined ? undefined : Number(length),
    };
  }

  /** GET a blob; the caller owns the body stream and must consume or destroy it. */
  async getBlob(repository: string, digest: Digest, signal?: AbortSignal): Promise<BlobResponse> {
    const res = await this.send({
      method: 'GET',
      path: `/v2/${repository}/blobs/${digest}`,
      repository,
      kind: 'blob',
      signal,
    });
    const length = header(res.headers, 'content-length');
    return { size: length === undefined ? undefined : Number(length), body: res.body };
  }

  async headBlob(repository: string, digest: Digest, signal?: AbortSignal): Promise<{ size: number | undefined }> {
    const res = await this.send({
      method: 'HEAD',
      path: `/v2/${repository}/blobs/${digest}`,
      repository,
      kind: 'blob',
      signal,
    });
    discardBody(res.body);
    const length = header(res.headers, 'content-length');
    return { size: length === undefined ? undefined : Number(length) };
  }

  /** GET /v2/<name>/tags/list, passed through with its query (n, last). */
  async listTags(repository: string, query: string): Promise<PassThroughResponse> {
    return this.passThrough(repository, `/v2/${repository}/tags/list${query}`, 'tags');
  }

  /** GET /v2/<name>/referrers/<digest>; a 404 is returned, not thrown: the caller decides. */
  async referrers(repository: string, digest: Digest, query: string): Promise<PassThroughResponse | undefined> {
    try {
      return await this.passThrough(repository, `/v2/${repository}/referrers/${digest}${query}`, 'referrers', 'application/vnd.oci.image.index.v1+json');
    } catch (err) {
      if (err instanceof RegistryError && err.status === 404) return undefined;
      throw err;
    }
  }

  private async passThrough(repository: string, path: string, kind: FetchKind, accept?: string): Promise<PassThroughResponse> {
    const res = await this.send({ method: 'GET', path, repository, kind, ...(accept ? { accept } : {}) });
    let body: Buffer;
    try {
      body = await readLimitedBuffer(res.body, MAX_LIST_BODY);
    } catch (err) {
      if (err instanceof BodyTooLargeError) throw this.badUpstream('response too large');
      throw upstreamTransportError(this.name, err);
    }
    // Served as JSON whatever the upstream said it was: it has to be JSON, then.
    if (!isJsonObject(body)) throw this.badUpstream(`${kind} answer is not a JSON object`);
    return { status: res.statusCode, body, headers: res.headers };
  }

  /**
   * One request with auth: send with the token known for the scope, and on a
   * 401 learn the challenge and retry once. Error statuses become RegistryErrors.
   */
  private async send(opts: SendOptions): Promise<Dispatcher.ResponseData> {
    const scope = `repository:${opts.repository}:pull`;
    const end = this.opts.metrics.upstreamLatency.startTimer({ upstream: this.name, kind: opts.kind });
    let status = 'error';
    this.opts.metrics.upstreamInFlight.inc({ upstream: this.name });
    try {
      let res = await this.attempt(opts, scope);
      const origin = answeredBy(res);
      if (res.statusCode === 401 && origin !== undefined && origin !== this.base.origin) {
        // A redirect target (a CDN) is not the registry: its challenge is never learned,
        // or the credentials would go wherever it points.
        discardBody(res.body);
        throw this.badUpstream('a redirect target refused the request (401)');
      }
      if (res.statusCode === 401) {
        const sentAuthorization = res.sentAuthorization;
        discardBody(res.body);
        if (await this.auth.onUnauthorized(res.headers['www-authenticate'], scope, sentAuthorization)) {
          res = await this.attempt(opts, scope);
        }
      }
      status = String(res.statusCode);
      if (res.statusCode === 200) {
        this.health.succeeded();
        return res;
      }
      throw await this.statusError(res, opts.kind);
    } catch (err) {
      const mapped = upstreamTransportError(this.name, err);
      if (isUpstreamWideFailure(mapped)) this.health.failed(mapped.message);
      else if (!isUpstreamOutage(mapped)) this.health.succeeded(); // it answered: a 404 or 401 is an answer
      throw mapped;
    } finally {
      end({ status });
      this.opts.metrics.upstreamInFlight.dec({ upstream: this.name });
    }
  }

  private async attempt(opts: SendOptions, scope: string): Promise<Dispatcher.ResponseData & { sentAuthorization: boolean }> {
    const headers: Record<string, string> = { 'user-agent': 'archway' };
    if (opts.accept) headers.accept = opts.accept;
    const authorization = await this.auth.header(scope);
    if (authorization) headers.authorization = authorization;
    const url = new URL(this.base.pathname.replace(/\/$/, '') + opts.path, this.base);
    if (this.opts.namespace !== undefined) url.searchParams.set('ns', this.opts.namespace);
    // Manifests, tag lists and referrers are small: a trickle that makes them take longer than
    // timeouts.body is cut (bodyIdle alone never trips on a byte every few seconds).
    const signal = opts.kind === 'blob' ? opts.signal : withDeadline(opts.signal, this.opts.timeouts.body);
    const res = await request(url, {
      method: opts.method,
      headers,
      dispatcher: this.opts.dispatcher,
      headersTimeout: this.opts.timeouts.headers,
      bodyTimeout: this.opts.timeouts.bodyIdle,
      signal,
    });
    return Object.assign(res, { sentAuthorization: authorization !== undefined });
  }

  private async statusError(res: Dispatcher.ResponseData, kind: FetchKind): Promise<RegistryError> {
    let code: string | undefined;
    try {
      const text = await readLimited(res.body, MAX_ERROR_BODY);
      const parsed = JSON.parse(text) as { errors?: Array<{ code?: unknown }> };
      const first = parsed.errors?.[0]?.code;
      if (typeof first === 'string') code = first;
    } catch {
      discardBody(res.body);
    }
    // A 3xx here means the redirect interceptor gave up after too many hops (loops it refuses outright).
    if (res.statusCode >= 300 && res.statusCode < 400) return this.badUpstream(`too many redirects (${res.statusCode})`);
    return upstreamStatusError(this.name, kind, res.statusCode, res.headers, code);
  }

  private badUpstream(message: string): RegistryError {
    return badUpstream(this.name, message);
  }
}

/**
 * The origin that sent this answer: the last URL in undici's redirect history
 * (the first request, then every hop), or undefined if there is none.
 */
function answeredBy(res: Dispatcher.ResponseData): string | undefined {
  const history = (res.context as { history?: unknown } | undefined)?.history;
  const last = Array.isArray(history) ? (history.at(-1) as unknown) : undefined;
  return last instanceof URL ? last.origin : undefined;
}

function withDeadline(signal: AbortSignal | undefined, ms: number): AbortSignal {
  const deadline = AbortSignal.timeout(ms);
  return signal ? AbortSignal.any([signal, deadline]) : deadline;
}

function isJsonObject(body: Buffer): boolean {
  try {
    const doc: unknown = JSON.parse(body.toString('utf8'));
    return typeof doc === 'object' && doc !== null && !Array.isArray(doc);
  } catch {
    return false;
  }
}

function header(headers: Record<string, string | string[] | undefined>, name: string): string | undefined {
  return firstHeader(headers[name]);
}

function safeDigest(s: string): Digest | undefined {
  try {
    return parseDigest(s.trim());
  } catch {
    return undefined;
  }
}
