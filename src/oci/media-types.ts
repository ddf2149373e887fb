/** Manifest media types archway understands; the strings of the OCI image spec and Docker's. */
export const MediaType = {
  OciIndex: 'application/vnd.oci.image.index.v1+json',
  OciManifest: 'application/vnd.oci.image.manifest.v1+json',
  DockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  DockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
} as const;

/** Every manifest media type archway serves; a manifest labelled otherwise is never served (it could be read as a page). */
export const MANIFEST_MEDIA_TYPES: readonly string[] = Object.values(MediaType);

export const INDEX_MEDIA_TYPES: readonly string[] = [MediaType.OciIndex, MediaType.DockerManifestList];

/** What archway asks upstreams for: everything, so the cache holds the whole truth. */
export const UPSTREAM_MANIFEST_ACCEPT = [
  MediaType.OciIndex,
  MediaType.DockerManifestList,
  MediaType.OciManifest,
  MediaType.DockerManifest,
  // Not schema 1: its signatures make the served bytes disagree with its digest, and
  // every client archway serves reads schema 2.
].join(', ');

export function isManifestMediaType(mediaType: string): boolean {
  return MANIFEST_MEDIA_TYPES.includes(mediaType);
}

export function isIndexMediaType(mediaType: string): boolean {
  return INDEX_MEDIA_TYPES.includes(mediaType);
}

/** Strip parameters (`; charset=utf-8`) and case, as media types compare. */
export function bareMediaType(contentType: string): string {
  return (contentType.split(';')[0] ?? '').trim().toLowerCase();
}

/**
 * Parsed Accept headers by their text: a registry's clients send a handful of
 * distinct ones (docker's, containerd's, skopeo's), and every manifest request
 * would otherwise split and lower-case the same string again. Bounded: when
 * full (clients sending arbitrary headers) it starts over.
 */
const parsedAccepts = new Map<string, ReadonlySet<string>>();
const PARSED_ACCEPTS_MAX = 256;

/** The media types a client's Accept header lists (all Accept headers, comma lists, parameters dropped). */
export function acceptedMediaTypes(accept: string | string[] | undefined): ReadonlySet<string> {
  if (typeof accept !== 'string') return parseAccept(accept ?? []);
  let types = parsedAccepts.get(accept);
  if (!types) {
    if (parsedAccepts.size >= PARSED_ACCEPTS_MAX) parsedAccepts.clear();
    types = parseAccept([accept]);
    parsedAccepts.set(accept, types);
  }
  return types;
}

function parseAccept(values: readonly string[]): ReadonlySet<string> {
  const types = new Set<string>();
  for (const value of values) {
    for (const part of value.split(',')) {
      const t = bareMediaType(part);
      if (t) types.add(t);
    }
  }
  return types;
}

/** Does the client accept this index media type? A wildcard counts. */
export function clientAcceptsIndex(accepted: ReadonlySet<string>, indexMediaType: string): boolean {
  return accepted.has(indexMediaType) || accepted.has('*/*') || accepted.has('application/*');
}
