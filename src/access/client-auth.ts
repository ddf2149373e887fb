import { createHash, timingSafeEqual } from 'node:crypto';
import bcrypt from 'bcryptjs';
import { LRUCache } from 'lru-cache';
import { RegistryError } from '../errors.ts';
import { globToRegExp } from '../platform/glob.ts';

/** Who a request comes from, and which repositories it may pull. */
export interface Principal {
  name: string;
  allows(repositories: readonly string[]): boolean;
}

export interface ClientAuthConfig {
  /** user → bcrypt hash */
  users: ReadonlyMap<string, string>;
  /** user → repository patterns; a user without an entry may pull everything. */
  grants: Readonly<Record<string, readonly string[]>>;
  tokens: ReadonlyArray<{ name: string; token: string; repositories: readonly string[] }>;
}

/** A bcrypt check costs tens of milliseconds and docker sends credentials on every request. */
const VERIFIED_TTL_MS = 5 * 60_000;

/**
 * Authentication of archway's own clients: Basic against an htpasswd file
 * (docker, containerd and skopeo all answer a Basic challenge with the
 * credentials they were given) and static bearer tokens (containerd's
 * hosts.toml can send an Authorization header). Each user or token may pull
 * the repositories its patterns match.
 */
export class ClientAuth {
  private readonly verified = new LRUCache<string, Principal>({ max: 10_000, ttl: VERIFIED_TTL_MS });
  private readonly tokens: Array<{ digest: Buffer; principal: Principal }>;

  constructor(private readonly config: ClientAuthConfig) {
    this.tokens = config.tokens.map((t) => ({ digest: sha256(t.token), principal: principal(t.name, t.repositories) }));
  }

  /** The principal of a request, or UNAUTHORIZED (with the challenge to send). */
  async authenticate(authorization: string | undefined): Promise<Principal> {
    const [scheme = '', value = ''] = (authorization ?? '').split(/\s+/, 2);
    if (scheme.toLowerCase() === 'basic') {
      const decoded = Buffer.from(value, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon > 0) {
        const user = decoded.slice(0, colon);
        const key = sha256(decoded).toString('hex');
        const known = this.verified.get(key);
        if (known) return known;
        const hash = this.config.users.get(user);
        if (hash && (await bcrypt.compare(decoded.slice(colon + 1), hash))) {
          const p = principal(user, this.config.grants[user] ?? ['**']);
          this.verified.set(key, p);
          return p;
        }
      }
    } else if (scheme.toLowerCase() === 'bearer' && value) {
      // Compare digests in constant time: the token's length and content stay secret.
      const given = sha256(value);
      const match = this.tokens.find((t) => timingSafeEqual(t.digest, given));
      if (match) return match.principal;
    }
    throw unauthorized();
  }
}

export function unauthorized(): RegistryError {
  return new RegistryError('UNAUTHORIZED', 'authentication required', {
    headers: { 'www-authenticate': 'Basic realm="archway"' },
  });
}

export function denied(name: string): RegistryError {
  return new RegistryError('DENIED', `not allowed to pull ${name}`, { detail: { name } });
}

function principal(name: string, patterns: readonly string[]): Principal {
  const globs = patterns.map(globToRegExp);
  return { name, allows: (repositories) => repositories.some((r) => globs.some((g) => g.test(r))) };
}

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}
