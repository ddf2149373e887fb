import { LRUCache } from 'lru-cache';
import type { Digest } from '../oci/digest.ts';
import { referencedDescriptors } from '../oci/manifest.ts';
import type { StoredManifest } from '../store/manifest-store.ts';

/** Enough for the layers of tens of thousands of images; an entry is a few hundred bytes. */
const MAX_ENTRIES = 200_000;

/**
 * The sizes the manifests archway served give their blobs: the length a blob
 * body may have, before any upstream says so. An upstream whose body is
 * longer than the descriptor a client will check it against is lying, and
 * its bytes are refused at the first one too many.
 *
 * Per upstream: a manifest from one registry says nothing of what another
 * serves, so a hostile upstream cannot make archway refuse a good blob of
 * another one.
 */
export class DescriptorSizes {
  private readonly sizes = new LRUCache<string, number>({ max: MAX_ENTRIES });
  /** Manifests already read (the stores hand out the same object while it is hot): a warm tag parses nothing. */
  private readonly learned = new WeakSet<StoredManifest>();

  /** Remember the sizes of what `manifest` (served for `upstream`) refers to. */
  learn(upstream: string, manifest: StoredManifest): void {
    if (this.learned.has(manifest)) return;
    this.learned.add(manifest);
    for (const { digest, size } of referencedDescriptors(manifest.bytes)) {
      if (size !== undefined) this.sizes.set(key(upstream, digest), size);
    }
  }

  sizeOf(upstream: string, digest: Digest): number | undefined {
    return this.sizes.get(key(upstream, digest));
  }
}

function key(upstream: string, digest: Digest): string {
  return `${upstream}\n${digest}`;
}
