import { timingSafeEqual } from 'node:crypto';
import { sha256 } from '../util/hash.ts';
import bcrypt from 'bcryptjs';
import { RegistryError } from '../errors.ts';
import { globToRegExp } from '../platform/glob.ts';
import { SingleFlight } from '../util/single-flight.ts';
import type { FailedLoginLimiter, LoginAttempt } from './login-limiter.ts';
import type { PasswordChecker } from './password-checks.ts';
import { growingLru } from '../util/growing-lru.ts';

/** Who a request comes from, and which repositories it may pull. */
export interface Principal {
  name: string;
  /** `repository` is upstream-qualified: `docker.io/library/alpine`, `ghcr.io/org/app`. */
  allows(repository: string): boolean;
}

export interface ClientAuthConfig {
  /** user → bcrypt hash (replaced by `replaceUsers` when the htpasswd file is re-read) */
  users: ReadonlyMap<string, string>;
  /** user → repository patterns; a user without an entry may pull everything. */
  grants: Readonly<Record<string, readonly string[]>>;
  tokens: ReadonlyArray<{ name: string; token: string; repositories: readonly string[] }>;
  /** Patterns without a registry host are about this upstream. */
  defaultUpstream: string;
  /** Where bcrypt runs (worker threads, bounded). */
  passwords: PasswordChecker;
  /** Failed logins per client address, counted before any hashing. */
  failedLogins: FailedLoginLimiter;
  /** Told the outcome of every password check it makes: ok, refused, limited, busy. */
  onCheck?: (outcome: LoginOutcome) => void;
}

export type LoginOutcome = 'ok' | 'refused' | 'limited' | 'busy';

/** A bcrypt check costs tens of milliseconds and docker sends credentials on every request. */
const VERIFIED_TTL_MS = 5 * 60_000;
/** Wrong credentials are remembered briefly, so repeating them costs no bcrypt. */
const REFUSED_TTL_MS = 60_000;
/**
 * Credentials that verified recently are not subject to the failed-login
 * limit when they are checked again (after VERIFIED_TTL_MS): a pulling client
 * behind the same address as a guesser keeps working all day.
 */
const KNOWN_GOOD_TTL_MS = 24 * 60 * 60_000;

/**
 * Authentication of archway's own clients: Basic against an htpasswd file
 * (docker, containerd and skopeo all answer a Basic challenge with the
 * credentials they were given) and static bearer tokens (containerd's
 * hosts.toml can send an Authorization header). Each user or token may pull
 * the repositories its patterns match.
 */
export class ClientAuth {
  private readonly verified = growingLru<string, Principal>(10_000, { ttl: VERIFIED_TTL_MS });
  private readonly refused = growingLru<string, true>(100_000, { ttl: REFUSED_TTL_MS });
  private readonly knownGood = growingLru<string, true>(10_000, { ttl: KNOWN_GOOD_TTL_MS });
  /** A client's parallel first requests (docker fetches layers at once) share one check. */
  private readonly checking = new SingleFlight<Principal | undefined>();
  /** Compared against when the user does not exist, at the cost the real entries use, so unknown users take as long. */
  private readonly dummyHash: string;
  private readonly tokens: Array<{ digest: Buffer; principal: Principal }>;

  private users: ReadonlyMap<string, string>;

  constructor(private readonly config: ClientAuthConfig) {
    this.users = config.users;
    const cost = Number(/^\$2[aby]\$(\d\d)\$/.exec(config.users.values().next().value ?? '')?.[1] ?? 10);
    this.dummyHash = bcrypt.hashSync('archway-no-such-user', cost);
    this.tokens = config.tokens.map((t) => ({ digest: sha256(t.token), principal: this.principal(t.name, t.repositories) }));
  }

  /**
   * A re-read htpasswd file (SIGHUP): removed users and changed passwords stop
   * working at once, so the remembered verdicts go too.
   */
  replaceUsers(users: ReadonlyMap<string, string>): void {
    this.users = users;
    this.verified.clear();
    this.refused.clear();
    this.knownGood.clear();
  }

  close(): Promise<void> {
    return this.config.passwords.close();
  }

  /**
   * The principal of a request, or UNAUTHORIZED (with the challenge to send),
   * or TOOMANYREQUESTS when `client` (its address) failed too often or the
   * password checks are all busy.
   */
  async authenticate(authorization: string | undefined, client: string): Promise<Principal> {
    const [scheme = '', value = ''] = (authorization ?? '').split(/\s+/, 2);
    if (scheme.toLowerCase() === 'basic') {
      const decoded = Buffer.from(value, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon > 0) {
        const key = sha256(decoded).toString('hex');
        const known = this.verified.get(key);
        if (known) return known;
        if (this.refused.has(key)) throw unauthorized();
        const { value: principal } = await this.checking.run(key, () => this.checkPassword(key, decoded.slice(0, colon), decoded.slice(colon + 1), client));
        if (principal) return principal;
      }
    } else if (scheme.toLowerCase() === 'bearer' && value) {
      // Compare digests in constant time: the token's length and content stay secret.
      const given = sha256(value);
      const match = this.tokens.find((t) => timingSafeEqual(t.digest, given));
      if (match) return match.principal;
    }
    throw unauthorized();
  }

  /** One bcrypt check, limited per address first unless the credential was good recently. */
  private async checkPassword(key: string, user: string, password: string, client: string): Promise<Principal | undefined> {
    let attempt: LoginAttempt | undefined;
    try {
      attempt = this.knownGood.has(key) ? undefined : this.config.failedLogins.attempt(client);
    } catch (err) {
      this.config.onCheck?.('limited');
      throw err;
    }
    const hash = this.users.get(user);
    let ok: boolean;
    try {
      ok = await this.config.passwords.check(password, hash ?? this.dummyHash);
    } catch (err) {
      // Nothing was checked: the attempt is not a failure.
      attempt?.finish(true);
      this.config.onCheck?.('busy');
      throw err;
    }
    attempt?.finish(ok && hash !== undefined);
    if (ok && hash) {
      this.config.onCheck?.('ok');
      const p = this.principal(user, this.config.grants[user] ?? ['**']);
      this.verified.set(key, p);
      this.knownGood.set(key, true);
      return p;
    }
    this.config.onCheck?.('refused');
    this.refused.set(key, true);
    return undefined;
  }

  /**
   * Patterns are matched against the upstream-qualified name only, so a grant
   * for Docker Hub's `library/*` never opens `library/…` at another registry.
   */
  private principal(name: string, patterns: readonly string[]): Principal {
    const globs = patterns.map((p) => globToRegExp(qualifyPattern(p, this.config.defaultUpstream)));
    return { name, allows: (repository) => globs.some((g) => g.test(repository)) };
  }
}

/** `library/*` → `docker.io/library/*` (the default upstream); `ghcr.io/org/**` and `**` stay as they are. */
export function qualifyPattern(pattern: string, defaultUpstream: string): string {
  const first = pattern.split('/')[0] ?? '';
  if (first === '**' || first.includes('.') || first.includes(':') || first === 'localhost') return pattern;
  return `${defaultUpstream}/${pattern}`;
}

export function unauthorized(): RegistryError {
  return new RegistryError('UNAUTHORIZED', 'authentication required', {
    headers: { 'www-authenticate': 'Basic realm="archway"' },
  });
}

export function denied(name: string): RegistryError {
  return new RegistryError('DENIED', `not allowed to pull ${name}`, { detail: { name } });
}

