import type { Descriptor, ManifestIndex } from '../oci/manifest.ts';

/**
 * The entry a registry answers to a client that cannot read indexes:
 * linux/amd64, as distribution and Docker Hub do. Platform policy (client
 * detection, rules) refines this choice in a later layer.
 */
export function defaultPlatformEntry(index: ManifestIndex): Descriptor | undefined {
  return index.manifests.find((d) => d.platform?.os === 'linux' && d.platform.architecture === 'amd64');
}
