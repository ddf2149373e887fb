import { readFileSync } from 'node:fs';
import { ConfigError } from '../config/load.ts';

/**
 * An htpasswd file of bcrypt entries (`htpasswd -B`, as distribution uses).
 * Other schemes (MD5, SHA1, crypt) are refused at start: they are too weak to
 * guard a registry.
 */
export function readHtpasswd(path: string): Map<string, string> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`auth.htpasswd: cannot read ${path} (${(e as NodeJS.ErrnoException).code})`);
  }
  const users = new Map<string, string>();
  for (const [i, raw] of text.split(/\r?\n/).entries()) {
    const line = raw.trim();
    if (!line || line.startsWith('#')) continue;
    const colon = line.indexOf(':');
    const user = line.slice(0, colon);
    const hash = line.slice(colon + 1);
    if (colon <= 0 || !/^\$2[aby]\$\d\d\$.{53}$/.test(hash)) {
      throw new ConfigError(`auth.htpasswd: line ${i + 1} of ${path} is not a bcrypt entry (create it with htpasswd -B)`);
    }
    users.set(user, hash);
  }
  return users;
}
