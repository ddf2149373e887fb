import type { Descriptor } from '../oci/manifest.ts';
import { topLevelArrayElements } from './json-spans.ts';

/** BuildKit links an attestation manifest to the image it describes with this annotation. */
const REFERENCE_DIGEST = 'vnd.docker.reference.digest';

/**
 * The index narrowed to one entry, plus the attestation entries that describe
 * it. Only whole entries are cut out of the upstream's bytes: everything else
 * (schemaVersion, mediaType, annotations, the kept entries exactly as
 * written, their platform objects with os.version, os.features and features
 * included) stays byte for byte, whitespace and key order too.
 */
export function filterIndex(bytes: Buffer, keep: Descriptor): Buffer {
  const spans = topLevelArrayElements(bytes, 'manifests') ?? [];
  const [first, second] = spans;
  const last = spans.at(-1);
  if (!first || !last) throw new Error('filterIndex: an index without manifests');
  const kept = spans.filter((span) => {
    const entry = JSON.parse(bytes.subarray(span.start, span.end).toString('utf8')) as Record<string, unknown> | null;
    if (entry?.digest === keep.digest) return true;
    const annotations = entry?.annotations as Record<string, unknown> | undefined;
    return annotations?.[REFERENCE_DIGEST] === keep.digest;
  });
  // Between entries, the separator the upstream used (a comma and its line break and indent).
  const separator = second ? bytes.subarray(first.end, second.start) : Buffer.from(',');
  const parts: Buffer[] = [bytes.subarray(0, first.start)];
  for (const [i, span] of kept.entries()) {
    if (i > 0) parts.push(separator);
    parts.push(bytes.subarray(span.start, span.end));
  }
  parts.push(bytes.subarray(last.end));
  return Buffer.concat(parts);
}
