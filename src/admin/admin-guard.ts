import { timingSafeEqual } from 'node:crypto';
import { sha256 } from '../util/hash.ts';
import { RegistryError } from '../errors.ts';

/**
 * The admin API's bearer token. Without one configured the admin API is off:
 * every admin request is refused, whatever it carries. Compared in constant
 * time over hashes, so neither the token's content nor its length leaks
 * through timing.
 */
export class AdminGuard {
  private readonly hash: Buffer | undefined;

  constructor(token: string | undefined) {
    this.hash = token ? sha256(token) : undefined;
  }

  get enabled(): boolean {
    return this.hash !== undefined;
  }

  check(authorization: string | undefined): void {
    if (!this.hash) {
      throw new RegistryError('DENIED', 'the admin API is off: set admin.token in the config or ARCHWAY_ADMIN_TOKEN', { detail: { admin: 'off' } });
    }
    const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? '');
    if (!match || !timingSafeEqual(sha256(match[1] as string), this.hash)) {
      throw new RegistryError('UNAUTHORIZED', 'admin token required', { headers: { 'www-authenticate': 'Bearer realm="archway-admin"' } });
    }
  }
}

