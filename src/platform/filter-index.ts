import type { Descriptor } from '../oci/manifest.ts';

/** BuildKit links an attestation manifest to the image it describes with this annotation. */
const REFERENCE_DIGEST = 'vnd.docker.reference.digest';

/**
 * The index narrowed to one entry, plus the attestation entries that describe
 * it. Everything else in the document (schemaVersion, mediaType,
 * annotations, the kept entries' own fields) is carried over as it was.
 */
export function filterIndex(bytes: Buffer, keep: Descriptor): Buffer {
  const doc = JSON.parse(bytes.toString('utf8')) as { manifests: Array<Record<string, unknown>> } & Record<string, unknown>;
  const manifests = doc.manifests.filter((entry) => {
    if (entry.digest === keep.digest) return true;
    const annotations = entry.annotations as Record<string, unknown> | undefined;
    return annotations?.[REFERENCE_DIGEST] === keep.digest;
  });
  return Buffer.from(JSON.stringify({ ...doc, manifests }));
}
