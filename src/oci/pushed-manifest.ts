import { RegistryError } from '../errors.ts';
import { digestAlgorithm, digestOf, type Digest } from './digest.ts';
import { parseImageManifest, parseIndex, parseJson, type Descriptor } from './manifest.ts';
import { bareMediaType, isIndexMediaType, isManifestMediaType } from './media-types.ts';
import type { Reference } from './reference.ts';

/** A manifest a client pushed, checked for what it is; what it refers to is the caller's to check. */
export type PushedManifest =
  | { kind: 'index'; digest: Digest; mediaType: string; bytes: Buffer; entries: Descriptor[] }
  | { kind: 'image'; digest: Digest; mediaType: string; bytes: Buffer; blobs: Array<{ digest: Digest; size: number }> };

/**
 * Read a pushed manifest the way distribution does before storing it: the
 * Content-Type must be one of the four manifest types archway serves (and
 * the body's own `mediaType`, when it has one, the same: the type served
 * later comes from here); the body must parse as that type; a push by digest
 * must hash to the digest in the URL. Anything else is MANIFEST_INVALID (or
 * DIGEST_INVALID), and nothing is stored.
 */
export function parsePushedManifest(bytes: Buffer, contentType: string | undefined, reference: Reference): PushedManifest {
  const mediaType = bareMediaType(contentType ?? '');
  if (!isManifestMediaType(mediaType)) {
    throw new RegistryError('MANIFEST_INVALID', `unsupported manifest media type ${JSON.stringify(mediaType)}`, { detail: { mediaType } });
  }
  const digest = reference.kind === 'digest' ? digestOf(bytes, digestAlgorithm(reference.digest)) : digestOf(bytes);
  if (reference.kind === 'digest' && digest !== reference.digest) {
    throw new RegistryError('DIGEST_INVALID', 'the manifest does not hash to the digest it was pushed under', { detail: { expected: reference.digest, actual: digest } });
  }
  const doc = parseJson(bytes);
  if (doc.schemaVersion !== 2) throw new RegistryError('MANIFEST_INVALID', 'schemaVersion must be 2');
  if (doc.mediaType !== undefined && doc.mediaType !== mediaType) {
    throw new RegistryError('MANIFEST_INVALID', `the body says ${String(doc.mediaType)}, the Content-Type ${mediaType}`, { detail: { mediaType } });
  }
  if (isIndexMediaType(mediaType)) {
    const entries = parseIndex(bytes, mediaType).manifests;
    for (const e of entries) {
      if (!isManifestMediaType(e.mediaType)) throw new RegistryError('MANIFEST_INVALID', `index entry ${e.digest} is not a manifest (${e.mediaType})`);
      checkSize(e.size, e.digest);
    }
    return { kind: 'index', digest, mediaType, bytes, entries };
  }
  const parts = parseImageManifest(bytes);
  if (!parts.config) throw new RegistryError('MANIFEST_INVALID', 'image manifest without config');
  const blobs = [parts.config, ...parts.layers];
  for (const b of blobs) checkSize(b.size, b.digest);
  return { kind: 'image', digest, mediaType, bytes, blobs };
}

function checkSize(size: number, digest: Digest): void {
  if (!Number.isSafeInteger(size) || size < 0) throw new RegistryError('MANIFEST_INVALID', `descriptor ${digest} has an invalid size`);
}
