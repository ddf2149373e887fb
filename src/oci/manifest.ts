import { RegistryError } from '../errors.ts';
import { parseDigest, type Digest } from './digest.ts';
import { bareMediaType, isManifestMediaType } from './media-types.ts';

/** An index entry's (or image config's) platform, OCI field names in camelCase. */
export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
  /** `os.version`: for Windows the build a container needs (`10.0.17763.5122`). */
  osVersion?: string;
  /** `os.features` (e.g. `win32k`): required of the host. */
  osFeatures?: string[];
  /** `features` (Docker manifest lists; reserved in OCI): carried and shown, never matched. */
  features?: string[];
}

export interface Descriptor {
  mediaType: string;
  digest: Digest;
  size: number;
  platform?: Platform;
}

/** What archway needs of an index: its entries. Everything else stays in the stored bytes. */
export interface ManifestIndex {
  mediaType: string;
  manifests: Descriptor[];
}

/**
 * The manifest media type to serve these bytes with, one archway checked: the
 * body's `mediaType` field when it is a manifest type, else (OCI allows the
 * field to be absent) the upstream's Content-Type when it is one. Undefined
 * when neither is: the bytes would go out under a type a browser might render
 * (text/html with a <script> in an annotation), so they are not served at all.
 * A body whose own field names another type is not trusted on the header's word.
 */
export function manifestMediaType(bytes: Buffer, contentType: string | undefined): string | undefined {
  // Parsed whatever the header says: an HTML error page with a 200 is not a manifest.
  const doc = parseJson(bytes);
  if (doc.mediaType !== undefined) return typeof doc.mediaType === 'string' && isManifestMediaType(doc.mediaType) ? doc.mediaType : undefined;
  const fromHeader = contentType ? bareMediaType(contentType) : '';
  return isManifestMediaType(fromHeader) ? fromHeader : undefined;
}

/** Parse the entries of an OCI index or Docker manifest list; throws MANIFEST_INVALID on junk. */
export function parseIndex(bytes: Buffer, mediaType: string): ManifestIndex {
  const doc = parseJson(bytes);
  if (!Array.isArray(doc.manifests)) throw new RegistryError('MANIFEST_INVALID', 'index without manifests');
  const manifests = doc.manifests.map((entry: unknown): Descriptor => {
    if (typeof entry !== 'object' || entry === null) throw new RegistryError('MANIFEST_INVALID', 'bad index entry');
    const e = entry as Record<string, unknown>;
    if (typeof e.digest !== 'string' || typeof e.size !== 'number' || typeof e.mediaType !== 'string') {
      throw new RegistryError('MANIFEST_INVALID', 'bad index entry');
    }
    const descriptor: Descriptor = { mediaType: e.mediaType, digest: parseDigest(e.digest), size: e.size };
    const platform = readPlatform(e.platform);
    if (platform) descriptor.platform = platform;
    return descriptor;
  });
  return { mediaType, manifests };
}

/**
 * The platform object of an index entry or the platform fields of an image
 * config (both use `os`, `architecture`, `variant`, `os.version`,
 * `os.features`; manifest lists also `features`). Fields of the wrong type are
 * left out; without os and architecture there is no platform.
 */
export function readPlatform(value: unknown): Platform | undefined {
  if (typeof value !== 'object' || value === null) return undefined;
  const p = value as Record<string, unknown>;
  if (typeof p.os !== 'string' || typeof p.architecture !== 'string') return undefined;
  const platform: Platform = { os: p.os, architecture: p.architecture };
  if (typeof p.variant === 'string' && p.variant) platform.variant = p.variant;
  if (typeof p['os.version'] === 'string' && p['os.version']) platform.osVersion = p['os.version'];
  const strings = (v: unknown): string[] | undefined => (Array.isArray(v) && v.length > 0 && v.every((x) => typeof x === 'string') ? [...v] : undefined);
  const osFeatures = strings(p['os.features']);
  if (osFeatures) platform.osFeatures = osFeatures;
  const features = strings(p.features);
  if (features) platform.features = features;
  return platform;
}

/** The inverse of readPlatform: the platform object an index entry carries, with the OCI field names. */
export function platformJson(p: Platform): Record<string, unknown> {
  return {
    architecture: p.architecture,
    os: p.os,
    ...(p.osVersion ? { 'os.version': p.osVersion } : {}),
    ...(p.osFeatures?.length ? { 'os.features': [...p.osFeatures] } : {}),
    ...(p.variant ? { variant: p.variant } : {}),
    ...(p.features?.length ? { features: [...p.features] } : {}),
  };
}

/** A manifest's JSON object; MANIFEST_INVALID when it is not one. */
export function parseJson(bytes: Buffer): Record<string, unknown> {
  let doc: unknown;
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch {
    throw new RegistryError('MANIFEST_INVALID', 'manifest is not JSON');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) {
    throw new RegistryError('MANIFEST_INVALID', 'manifest is not a JSON object');
  }
  return doc as Record<string, unknown>;
}

/**
 * The descriptors a manifest points at: an index's entries, an image's config
 * and layers (and a subject), each with its size when the descriptor gives a
 * valid one. Unreadable parts are skipped: this only says where content came
 * from and how long it is, it validates nothing.
 */
export function referencedDescriptors(bytes: Buffer): Array<{ digest: Digest; size: number | undefined }> {
  let doc: Record<string, unknown>;
  try {
    doc = parseJson(bytes);
  } catch {
    return [];
  }
  const found: Array<{ digest: Digest; size: number | undefined }> = [];
  const add = (d: unknown) => {
    if (typeof d !== 'object' || d === null) return;
    const e = d as Record<string, unknown>;
    try {
      const size = typeof e.size === 'number' && Number.isSafeInteger(e.size) && e.size >= 0 ? e.size : undefined;
      found.push({ digest: parseDigest(String(e.digest)), size });
    } catch {
      // not a descriptor
    }
  };
  for (const list of [doc.manifests, doc.layers]) if (Array.isArray(list)) list.forEach(add);
  add(doc.config);
  add(doc.subject);
  return found;
}

/** The digests a manifest points at (see referencedDescriptors). */
export function referencedDigests(bytes: Buffer): Digest[] {
  return referencedDescriptors(bytes).map((d) => d.digest);
}

/** What the platform inspector reads of an image manifest: its config and layers. */
export interface ImageManifestParts {
  config: { digest: Digest; size: number } | undefined;
  layers: Array<{ digest: Digest; size: number }>;
}

export function parseImageManifest(bytes: Buffer): ImageManifestParts {
  const doc = parseJson(bytes);
  const part = (d: unknown): { digest: Digest; size: number } => {
    const e = (d ?? {}) as Record<string, unknown>;
    if (typeof e.digest !== 'string' || typeof e.size !== 'number') throw new RegistryError('MANIFEST_INVALID', 'bad descriptor in image manifest');
    return { digest: parseDigest(e.digest), size: e.size };
  };
  if (!Array.isArray(doc.layers)) throw new RegistryError('MANIFEST_INVALID', 'image manifest without layers');
  return { config: doc.config === undefined ? undefined : part(doc.config), layers: doc.layers.map(part) };
}
