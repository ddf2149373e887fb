import { digestAlgorithm, digestOf, type Digest } from '../oci/digest.ts';
import { parseImageManifest, parseIndex, readPlatform } from '../oci/manifest.ts';
import { isIndexMediaType } from '../oci/media-types.ts';
import type { Reference } from '../oci/reference.ts';
import { isAttestationEntry } from '../platform/match.ts';
import { formatPlatform, type Platform } from '../platform/platform.ts';
import type { BlobService } from '../registry/blob-service.ts';
import { ACCEPT_ALL_MANIFESTS, AS_PUBLISHED, type ManifestService, type ManifestSource } from '../registry/manifest-service.ts';
import type { Route, Router } from '../routing/router.ts';
import type { BlobStore } from '../store/blob-store.ts';
import { readLimitedBuffer } from '../upstream/body.ts';
import { FAN_OUT, mapLimit } from '../util/bounded-map.ts';
import type { VirtualImageService } from '../virtual/virtual-image-service.ts';
import type { VirtualImage } from '../virtual/virtual-catalog.ts';
import type { LocalRepository } from '../local/local-catalog.ts';
import type { LocalImageService } from '../local/local-image-service.ts';

export type CachedState = 'yes' | 'partial' | 'no';

/** One runnable image of a tag: what `docker manifest inspect --verbose` shows, and whether archway holds it. */
export interface PlatformRow {
  /** os[(os.version+os.features)]/architecture[/variant] (containerd's syntax), or `unknown` when neither index nor config says. */
  platform: string;
  /** The platform's `os.version`, `os.features` and `features` as the index (or config) gives them. */
  osVersion?: string;
  osFeatures?: string[];
  features?: string[];
  digest: Digest;
  mediaType: string;
  /** Sum of the layer sizes: the bytes a pull downloads. */
  size: number;
  layers: Array<{ digest: Digest; size: number }>;
  config?: { digest: Digest; size: number };
  /** Whether every blob (config and layers) is in archway's cache. */
  cached: CachedState;
  /** For a virtual image: the member repository the image comes from. */
  member?: string;
}

export interface PlatformReport {
  /** As the request named it. */
  image: string;
  registry: string;
  repository: string;
  virtual: boolean;
  digest: Digest;
  mediaType: string;
  platforms: PlatformRow[];
  /** BuildKit attestation entries in the index (not platforms; not listed). */
  attestations: number;
}


/** An image config is a few KiB; refuse to buffer anything absurd. */
const MAX_CONFIG_BYTES = 4 * 1024 * 1024;

export interface InspectTarget {
  image: string;
  reference: Reference;
  route: Route;
  virtual: VirtualImage | undefined;
  /** A local repository (config `local`): its manifests are the pushed ones, its blobs come from where they were mounted from. */
  local?: { repository: LocalRepository; router: Router } | undefined;
}

/**
 * The platform inspector: for an image reference, every platform it offers
 * with its digest, media type, layer sizes and cache state. Manifests come
 * through the same cached services as pulls (so inspecting warms the
 * manifest cache, never the blobs); a single-platform image's platform is
 * read from its config blob.
 */
export class PlatformInspector {
  constructor(
    private readonly manifests: ManifestService,
    private readonly virtualImages: VirtualImageService,
    private readonly blobs: BlobService,
    private readonly store: BlobStore,
    private readonly localImages: LocalImageService,
  ) {}

  async inspect(target: InspectTarget): Promise<PlatformReport> {
    const { route, virtual, local } = target;
    const source: ManifestSource = local ? this.localImages.source(local.repository) : virtual ? this.virtualImages.source(virtual) : this.manifests.source(route);
    const top = (await this.manifests.get(source, target.reference, ACCEPT_ALL_MANIFESTS, AS_PUBLISHED)).manifest;
    const report: PlatformReport = {
      image: target.image,
      registry: route.upstream.name,
      repository: route.repository,
      virtual: virtual !== undefined,
      digest: top.digest,
      mediaType: top.mediaType,
      platforms: [],
      attestations: 0,
    };
    if (!isIndexMediaType(top.mediaType)) {
      const parts = parseImageManifest(top.bytes);
      // Under a virtual name, a member's manifest: its config lives in the member's repository.
      const member = virtual ? await this.virtualImages.memberOf(virtual, top.digest) : undefined;
      const configRoute = local && parts.config ? await this.localImages.blobRoute(local.repository, parts.config.digest, local.router) : (member ?? route);
      const platform = parts.config ? await this.configPlatform(configRoute, parts.config.digest) : undefined;
      const row = await this.row(platform, top.digest, top.mediaType, top.bytes);
      if (member) row.member = `${member.upstream.name}/${member.repository}`;
      report.platforms.push(row);
      return report;
    }
    const entries = parseIndex(top.bytes, top.mediaType).manifests;
    const images = entries.filter((e) => !isAttestationEntry(e));
    report.attestations = entries.length - images.length;
    report.platforms = await mapLimit(images, FAN_OUT, async (entry) => {
      const child = (await source.digest(entry.digest)).manifest;
      const row = await this.row(entry.platform, child.digest, child.mediaType, child.bytes);
      if (virtual) {
        const member = await this.virtualImages.memberOf(virtual, entry.digest);
        if (member) row.member = `${member.upstream.name}/${member.repository}`;
      }
      return row;
    });
    return report;
  }

  private async row(platform: Platform | undefined, digest: Digest, mediaType: string, bytes: Buffer): Promise<PlatformRow> {
    // A nested index (rare) has no layers of its own: reported with none.
    const parts = isIndexMediaType(mediaType) ? { config: undefined, layers: [] } : parseImageManifest(bytes);
    const blobs = [...(parts.config ? [parts.config] : []), ...parts.layers];
    // Each stat may be a request (S3 HEAD): bounded like the manifests.
    const present = await mapLimit(blobs, FAN_OUT, async (b) => (await this.store.stat(b.digest)) !== undefined);
    const cachedCount = present.filter(Boolean).length;
    return {
      platform: platform ? formatPlatform(platform) : 'unknown',
      ...(platform?.osVersion ? { osVersion: platform.osVersion } : {}),
      ...(platform?.osFeatures ? { osFeatures: platform.osFeatures } : {}),
      ...(platform?.features ? { features: platform.features } : {}),
      digest,
      mediaType,
      size: parts.layers.reduce((sum, l) => sum + l.size, 0),
      layers: parts.layers,
      ...(parts.config ? { config: parts.config } : {}),
      cached: blobs.length > 0 && cachedCount === blobs.length ? 'yes' : cachedCount > 0 ? 'partial' : 'no',
    };
  }

  /**
   * The platform (os, architecture, variant, os.version, os.features) from the image config: from the cache when it is
   * there, else read from the upstream without caching it (inspecting must not
   * make an image look partly pulled), and checked against its digest.
   */
  private async configPlatform(route: Route, digest: Digest): Promise<Platform | undefined> {
    const cached = (await this.blobs.cachedSize(route, digest)) !== undefined ? await this.store.open(digest) : undefined;
    // From the store itself when cached: a blob answer may be a redirect (storage.s3.redirect).
    const body = cached ? cached.stream : (await route.upstream.getBlob(route.repository, digest)).body;
    // An absurdly large "config" is no config: no platform from it.
    const bytes = await readLimitedBuffer(body, MAX_CONFIG_BYTES).catch(() => undefined);
    if (!bytes || (!cached && digestOf(bytes, digestAlgorithm(digest)) !== digest)) return undefined;
    try {
      // An image config carries the platform fields at its top level, named as in an index entry.
      return readPlatform(JSON.parse(bytes.toString('utf8')));
    } catch {
      return undefined;
    }
  }
}
