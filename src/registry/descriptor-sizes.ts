import type { Digest } from '../oci/digest.ts';
import { referencedDescriptors } from '../oci/manifest.ts';
import type { StoredManifest } from '../store/manifest-store.ts';
import { growingLru } from '../util/growing-lru.ts';

/** Enough for the layers of tens of thousands of images; an entry is a few hundred bytes. */
const MAX_ENTRIES = 200_000;

/**
 * The sizes the manifests archway served give their blobs: the length a blob
 * body may have, before any upstream says so. An upstream whose body is
 * longer than the descriptor a client will check it against is lying, and
 * its bytes are refused at the first one too many.
 *
 * Per upstream and repository: a manifest says nothing of what another
 * registry serves, nor of what another repository's manifests say, so
 * whoever can push a manifest somewhere (anyone, on Docker Hub) cannot make
 * archway refuse a good blob of another repository by naming it with a wrong
 * size.
 */
export class DescriptorSizes {
  private readonly sizes = growingLru<string, number>(MAX_ENTRIES);
  /**
   * The repositories each manifest was already read for (the stores hand out
   * the same object while it is hot): a warm tag parses nothing.
   */
  private readonly learned = new WeakMap<StoredManifest, Set<string>>();

  /** Remember the sizes of what `manifest` (served for `repository` at `upstream`) refers to. */
  learn(upstream: string, repository: string, manifest: StoredManifest): void {
    const where = `${upstream}\n${repository}`;
    let seen = this.learned.get(manifest);
    if (seen?.has(where)) return;
    if (!seen) this.learned.set(manifest, (seen = new Set()));
    seen.add(where);
    for (const { digest, size } of referencedDescriptors(manifest.bytes)) {
      if (size !== undefined) this.sizes.set(`${where}\n${digest}`, size);
    }
  }

  sizeOf(upstream: string, repository: string, digest: Digest): number | undefined {
    return this.sizes.get(`${upstream}\n${repository}\n${digest}`);
  }
}
