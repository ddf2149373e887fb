import { RegistryError } from '../errors.ts';
import { parseDigest, type Digest } from '../oci/digest.ts';
import { parseReference, parseRepositoryPath, type Reference } from '../oci/reference.ts';

/** A parsed, validated /v2 request path. */
export type V2Endpoint =
  | { endpoint: 'base' }
  | { endpoint: 'manifest'; name: string; reference: Reference }
  | { endpoint: 'blob'; name: string; digest: Digest }
  | { endpoint: 'tags'; name: string }
  | { endpoint: 'referrers'; name: string; digest: Digest }
  /** `/blobs/uploads/` (starting an upload or a mount) and `/blobs/uploads/<id>` (an upload session). */
  | { endpoint: 'upload'; name: string };

// Names have any number of segments, and a segment may itself be called
// "manifests" or "blobs": the greedy name takes everything up to the last one.
const MANIFEST = /^\/v2\/(.+)\/manifests\/([^/]+)$/;
const BLOB = /^\/v2\/(.+)\/blobs\/([^/]+)$/;
const TAGS = /^\/v2\/(.+)\/tags\/list$/;
const REFERRERS = /^\/v2\/(.+)\/referrers\/([^/]+)$/;
const UPLOAD = /^\/v2\/(.+)\/blobs\/uploads\/[^/]*$/;

/** Parse a /v2 path (without query). Throws NAME_INVALID/DIGEST_INVALID, MANIFEST_UNKNOWN for a reference no tag can have, or 404 for other paths. */
export function parseV2Path(path: string): V2Endpoint {
  if (path === '/v2/' || path === '/v2') return { endpoint: 'base' };
  let m = MANIFEST.exec(path);
  if (m) return { endpoint: 'manifest', name: parseRepositoryPath(m[1] as string), reference: parseManifestReference(decode(m[2] as string)) };
  m = UPLOAD.exec(path);
  if (m) return { endpoint: 'upload', name: parseRepositoryPath(m[1] as string) };
  m = BLOB.exec(path);
  if (m) return { endpoint: 'blob', name: parseRepositoryPath(m[1] as string), digest: parseDigest(decode(m[2] as string)) };
  m = TAGS.exec(path);
  if (m) return { endpoint: 'tags', name: parseRepositoryPath(m[1] as string) };
  m = REFERRERS.exec(path);
  if (m) return { endpoint: 'referrers', name: parseRepositoryPath(m[1] as string), digest: parseDigest(decode(m[2] as string)) };
  throw new RegistryError('NAME_UNKNOWN', 'unknown endpoint', { status: 404, detail: { path } });
}

/**
 * A manifest reference that is neither a digest nor a valid tag names no
 * manifest: 404 MANIFEST_UNKNOWN, as distribution answers and the OCI
 * conformance suite (v1.1.1, pull: `GET /v2/<name>/manifests/.INVALID_MANIFEST_NAME`)
 * requires. A reference with a colon is a digest, and a malformed one stays
 * 400 DIGEST_INVALID.
 */
function parseManifestReference(ref: string): Reference {
  try {
    return parseReference(ref);
  } catch (e) {
    if (e instanceof RegistryError && e.code === 'TAG_INVALID') throw new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown', { detail: { tag: ref } });
    throw e;
  }
}

/** Some clients percent-encode the colon of a digest. */
function decode(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}
