import { digestOf } from '../oci/digest.ts';
import { platformJson, type Descriptor } from '../oci/manifest.ts';
import { MediaType } from '../oci/media-types.ts';
import type { Platform } from '../platform/platform.ts';
import type { StoredManifest } from '../store/manifest-store.ts';

export type IndexFormat = typeof MediaType.OciIndex | typeof MediaType.DockerManifestList;

/**
 * The index of a virtual image: one entry per member, with the member's
 * configured platform (and the os.version and features its own index entry gives). Deterministic (same entries, same bytes, same digest),
 * so every replica and every restart agrees on the tag's digest.
 */
export function assembleIndex(entries: ReadonlyArray<{ descriptor: Descriptor; platform: Platform }>, mediaType: IndexFormat): StoredManifest {
  const doc = {
    schemaVersion: 2,
    mediaType,
    manifests: entries.map(({ descriptor, platform }) => ({
      mediaType: descriptor.mediaType,
      digest: descriptor.digest,
      size: descriptor.size,
      // The configured platform, with what the member's own entry adds (a Windows build, features).
      platform: platformJson({
        ...platform,
        osVersion: platform.osVersion ?? descriptor.platform?.osVersion,
        osFeatures: platform.osFeatures ?? descriptor.platform?.osFeatures,
        features: platform.features ?? descriptor.platform?.features,
      }),
    })),
  };
  const bytes = Buffer.from(JSON.stringify(doc, null, 2));
  return { digest: digestOf(bytes), mediaType, bytes };
}

/** OCI unless the client reads only Docker's manifest list. */
export function indexFormatFor(accepted: ReadonlySet<string>): IndexFormat {
  return !accepted.has(MediaType.OciIndex) && accepted.has(MediaType.DockerManifestList) ? MediaType.DockerManifestList : MediaType.OciIndex;
}
