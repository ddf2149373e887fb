import { RegistryError } from '../errors.ts';
import { isDigestLike, parseDigest, type Digest } from './digest.ts';

/**
 * Repository names and tags, by the grammar of the OCI distribution spec:
 *   name:  [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(\/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*
 *   tag:   [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}
 */
const NAME_COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
const NAME = new RegExp(`^${NAME_COMPONENT}(?:/${NAME_COMPONENT})*$`);
const TAG = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
/** distribution limits the whole name to 255 characters; clients rely on it too. */
const MAX_NAME_LENGTH = 255;

export type Reference = { kind: 'tag'; tag: string } | { kind: 'digest'; digest: Digest };

export function parseName(name: string): string {
  if (name.length === 0 || name.length > MAX_NAME_LENGTH || !NAME.test(name)) {
    throw new RegistryError('NAME_INVALID', 'invalid repository name', { detail: { name } });
  }
  return name;
}

export function isTag(tag: string): boolean {
  return TAG.test(tag);
}

export function parseTag(tag: string): string {
  if (!isTag(tag)) throw new RegistryError('TAG_INVALID', 'invalid tag', { detail: { tag } });
  return tag;
}

/** A manifest reference is a digest when it has a colon (tags cannot), else a tag. */
export function parseReference(ref: string): Reference {
  if (isDigestLike(ref)) return { kind: 'digest', digest: parseDigest(ref) };
  return { kind: 'tag', tag: parseTag(ref) };
}

/**
 * The name in a /v2 path: a repository name by the spec's grammar, optionally
 * after a registry host with a port (`registry.local:5001/app`), which the
 * grammar has no room for but path-prefix routing needs. What the host means
 * is the router's business.
 */
export function parseRepositoryPath(path: string): string {
  const slash = path.indexOf('/');
  const first = slash < 0 ? '' : path.slice(0, slash);
  if (/^[a-z0-9.-]+:\d{1,5}$/.test(first)) return `${first}/${parseName(path.slice(slash + 1))}`;
  return parseName(path);
}
