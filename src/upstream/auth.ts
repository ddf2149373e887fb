import type { LRUCache } from 'lru-cache';
import { request, type Dispatcher } from 'undici';
import { RegistryError } from '../errors.ts';
import { parseChallenges, type Challenge } from './challenge.ts';
import { SingleFlight } from '../util/single-flight.ts';
import { readLimited } from './body.ts';
import { badUpstream, upstreamTransportError } from './errors.ts';
import { growingLru } from '../util/growing-lru.ts';

export interface Credentials {
  username: string;
  password: string;
}

interface BearerRealm {
  realm: string;
  service: string | undefined;
}

/** Tokens without `expires_in` live 60 s, the spec's default. */
const DEFAULT_TOKEN_TTL_S = 60;
/** Refresh a little early so a token never expires between fetch and use. */
const EXPIRY_MARGIN_S = 10;
const MAX_TOKEN_RESPONSE = 64 * 1024;

/**
 * Token services that live on another host than their registry and belong
 * to it, so configured credentials keep working without a tokenRealms entry.
 */
const KNOWN_TOKEN_REALMS: Readonly<Record<string, readonly string[]>> = {
  'registry-1.docker.io': ['auth.docker.io'],
  'index.docker.io': ['auth.docker.io'],
};

/**
 * Authorization for one upstream, as Docker Hub and distribution's token auth
 * define it: the first 401 tells the scheme (and for Bearer the realm and
 * service); archway then fetches a token per scope, anonymously or with the
 * configured credentials, caches it until it expires and sends it
 * pre-emptively, so later requests need no 401 round trip.
 */
export class UpstreamAuth {
  private scheme: 'none' | 'basic' | 'bearer' = 'none';
  private bearer: BearerRealm | undefined;
  private readonly tokens: LRUCache<string, string>;
  /** Concurrent requests in one scope share one token fetch. */
  private readonly fetches = new SingleFlight<string>();
  private readonly credentialRealms: ReadonlySet<string>;

  constructor(
    private readonly upstream: string,
    private readonly upstreamUrl: URL,
    private readonly credentials: Credentials | undefined,
    tokenRealms: readonly string[],
    private readonly dispatcher: Dispatcher,
    private readonly timeoutMs: number,
  ) {
    this.tokens = growingLru<string, string>(1000, { ttlAutopurge: false });
    this.credentialRealms = new Set([upstreamUrl.hostname, ...(KNOWN_TOKEN_REALMS[upstreamUrl.hostname] ?? []), ...tokenRealms]);
  }

  /** The Authorization header for a request in `scope`, if the upstream has asked for one. */
  async header(scope: string): Promise<string | undefined> {
    if (this.scheme === 'basic') return this.basicHeader();
    if (this.scheme === 'bearer') return `Bearer ${await this.token(scope)}`;
    return undefined;
  }

  /**
   * Learn from a 401. Returns true when a retry can succeed: a new scheme was
   * learned, or the token for this scope was refreshed.
   */
  async onUnauthorized(wwwAuthenticate: string | string[] | undefined, scope: string, sentAuthorization: boolean): Promise<boolean> {
    const challenges = parseChallenges(wwwAuthenticate);
    const bearer = challenges.find((c) => c.scheme === 'bearer' && c.params.realm);
    if (bearer) {
      this.learnBearer(bearer);
      // A token that was refused is not used again.
      if (sentAuthorization) this.tokens.delete(this.tokenKey(bearer.params.scope ?? scope));
      await this.token(bearer.params.scope ?? scope);
      return true;
    }
    if (challenges.some((c) => c.scheme === 'basic') && this.credentials) {
      if (this.scheme === 'basic' && sentAuthorization) return false; // the password itself was refused
      this.scheme = 'basic';
      return true;
    }
    return false;
  }

  private learnBearer(c: Challenge): void {
    this.scheme = 'bearer';
    this.bearer = { realm: c.params.realm as string, service: c.params.service };
  }

  private basicHeader(): string | undefined {
    if (!this.credentials) return undefined;
    return `Basic ${Buffer.from(`${this.credentials.username}:${this.credentials.password}`).toString('base64')}`;
  }

  private tokenKey(scope: string): string {
    return `${this.bearer?.realm}\n${this.bearer?.service ?? ''}\n${scope}`;
  }

  private async token(scope: string): Promise<string> {
    const key = this.tokenKey(scope);
    const cached = this.tokens.get(key);
    if (cached) return cached;
    return (await this.fetches.run(key, () => this.fetchToken(scope))).value;
  }

  private async fetchToken(scope: string): Promise<string> {
    const bearer = this.bearer;
    if (!bearer) throw new Error('no bearer realm learned');
    const url = new URL(bearer.realm);
    if (bearer.service) url.searchParams.set('service', bearer.service);
    if (scope) url.searchParams.set('scope', scope);
    const headers: Record<string, string> = { 'user-agent': 'archway' };
    const basic = this.basicHeader();
    // The realm is whatever the upstream's challenge names: a compromised upstream, or anyone
    // in the middle of an http:// one, could name its own. Credentials go only to the registry's
    // host (any port: the same machine and operator) or a realm the operator listed, and never
    // in clear text when the upstream itself is reached over TLS.
    if (basic && !this.credentialRealms.has(url.hostname) && !this.credentialRealms.has(url.host)) {
      throw badUpstream(this.upstream, `token realm ${url.host} is not the registry's host; credentials not sent (list it in upstreams.${this.upstream}.tokenRealms)`, {
        realm: url.host,
      });
    }
    if (basic && url.protocol === 'http:' && this.upstreamUrl.protocol === 'https:') {
      throw badUpstream(this.upstream, `token realm ${url.origin} is not HTTPS; credentials not sent`);
    }
    if (basic) headers.authorization = basic;
    let res: Dispatcher.ResponseData;
    try {
      res = await request(url, {
        dispatcher: this.dispatcher,
        headers,
        signal: AbortSignal.timeout(this.timeoutMs),
      });
    } catch (err) {
      throw upstreamTransportError(this.upstream, err);
    }
    const text = await readLimited(res.body, MAX_TOKEN_RESPONSE);
    if (res.statusCode === 401 || res.statusCode === 403) {
      throw new RegistryError('UNAUTHORIZED', `upstream ${this.upstream} token service refused the credentials`, {
        detail: { upstream: this.upstream },
      });
    }
    if (res.statusCode !== 200) {
      throw badUpstream(this.upstream, `token service answered ${res.statusCode}`);
    }
    let body: { token?: unknown; access_token?: unknown; expires_in?: unknown };
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      throw badUpstream(this.upstream, 'token service sent no JSON');
    }
    const token = typeof body.token === 'string' ? body.token : typeof body.access_token === 'string' ? body.access_token : '';
    if (!token) throw badUpstream(this.upstream, 'token service sent no token');
    const expiresIn = typeof body.expires_in === 'number' && body.expires_in > 0 ? body.expires_in : DEFAULT_TOKEN_TTL_S;
    const ttl = Math.max(1, expiresIn - Math.min(EXPIRY_MARGIN_S, expiresIn / 2)) * 1000;
    this.tokens.set(this.tokenKey(scope), token, { ttl });
    return token;
  }
}
