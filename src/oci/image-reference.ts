import { RegistryError } from '../errors.ts';
import { parseReference, parseRepositoryPath, type Reference } from './reference.ts';

/** `name:tag`, `name@digest` or `name` (latest), as people write images; the name may start with a registry host. */
export function parseImageReference(image: string): { name: string; reference: Reference } {
  const at = image.lastIndexOf('@');
  if (at > 0) return { name: parseRepositoryPath(image.slice(0, at)), reference: parseReference(image.slice(at + 1)) };
  const lastSlash = image.lastIndexOf('/');
  const colon = image.lastIndexOf(':');
  // A colon before the last slash is a registry port (`host:5000/app`), not a tag.
  if (colon > lastSlash && colon > 0) {
    return { name: parseRepositoryPath(image.slice(0, colon)), reference: parseReference(image.slice(colon + 1)) };
  }
  if (!image) throw new RegistryError('NAME_INVALID', 'no image given');
  return { name: parseRepositoryPath(image), reference: { kind: 'tag', tag: 'latest' } };
}
