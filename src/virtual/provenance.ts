import type { Digest } from '../oci/digest.ts';
import type { ConfirmationStore } from '../store/confirmation-store.ts';
import type { StorageHealth } from '../store/storage-health.ts';
import type { VirtualImage, VirtualMember } from './virtual-catalog.ts';

/** Confirmation-store namespace of provenance records (not a registry host: cannot clash with one). */
const PROVENANCE = '\0virtual';

/**
 * Which member of a virtual image a digest came from, so a request under the
 * virtual name for a member's manifest or blob goes to that member's
 * repository and nowhere else. Learned as content passes through (the
 * assembled index's entries, then each member manifest's config and layers),
 * kept on disk like repository confirmations, so it survives restarts.
 */
export class VirtualProvenance {
  constructor(
    private readonly confirmations: ConfirmationStore,
    private readonly storage: StorageHealth,
  ) {}

  async record(image: VirtualImage, member: VirtualMember, digests: readonly Digest[]): Promise<void> {
    const key = memberKey(image, member);
    await this.storage.bestEffort('confirmation', async () => {
      for (const digest of digests) await this.confirmations.add(PROVENANCE, key, digest);
    });
  }

  async memberOf(image: VirtualImage, digest: Digest): Promise<VirtualMember | undefined> {
    for (const member of image.members) {
      // A store that cannot tell (Redis away): unknown here, as a digest that passed through no member.
      if (await this.confirmations.has(PROVENANCE, memberKey(image, member), digest).catch(() => false)) return member;
    }
    return undefined;
  }
}

/** The virtual name and the member's repository: a changed member in the config starts afresh. */
function memberKey(image: VirtualImage, member: VirtualMember): string {
  return `${image.home}/${image.repository}\n${member.key}\n${member.route.upstream.name}/${member.route.repository}`;
}
