// Builds multi-platform test images as OCI layout directories, entirely from
// test code: real gzip'd tar layers (dockerd/containerd extract them and
// verify rootfs.diff_ids), valid image configs, OCI or Docker media types.
// Push them to a registry with skopeo.ts.
import { mkdir } from 'node:fs/promises';
import { gzipSync, constants as zlibConstants } from 'node:zlib';
import { sha256Digest } from './digest.ts';
import { DOCKER, IN_TOTO, OCI } from './media-types.ts';
import type { MediaTypeSet } from './media-types.ts';
import { tagInLayout, writeBlob } from './oci-layout.ts';
import type { Descriptor } from './oci-layout.ts';
import { deterministicBytes } from './random.ts';
import { writeTar } from './tar.ts';
import type { TarEntry } from './tar.ts';

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
  /** Written as `os.version` in the index entry and the image config (Windows builds: `10.0.17763.5122`). */
  osVersion?: string;
  /** Written as `os.features` in the index entry and the image config. */
  osFeatures?: string[];
  /** Written as `features` in the index entry only (Docker manifest lists). */
  features?: string[];
}

/** The platform object an index entry carries, with the OCI field names. */
export function platformObject(p: Platform): NonNullable<Descriptor['platform']> {
  return {
    os: p.os,
    architecture: p.architecture,
    ...(p.variant ? { variant: p.variant } : {}),
    ...(p.osVersion ? { 'os.version': p.osVersion } : {}),
    ...(p.osFeatures ? { 'os.features': p.osFeatures } : {}),
    ...(p.features ? { features: p.features } : {}),
  };
}

export const ALL_PLATFORMS: Platform[] = [
  { os: 'linux', architecture: 'amd64' },
  { os: 'linux', architecture: 'arm64', variant: 'v8' },
  { os: 'linux', architecture: 'arm', variant: 'v7' },
  { os: 'linux', architecture: 'arm', variant: 'v6' },
  { os: 'linux', architecture: '386' },
  { os: 'linux', architecture: 'ppc64le' },
  { os: 'linux', architecture: 's390x' },
];

/** "linux/arm/v7"; with an os.version, containerd's "windows(10.0.17763.5122)/amd64". */
export function platformString(p: Platform): string {
  const os = p.osVersion ? `${p.os}(${p.osVersion})` : p.os;
  return [os, p.architecture, p.variant].filter((s) => s !== undefined && s !== '').join('/');
}

/** Path (inside every image) of the marker file written into the first layer. */
export const MARKER_PATH = '/etc/archway-test';

export interface BuiltManifest {
  platform: Platform;
  digest: string;
  mediaType: string;
  bytes: Buffer;
  size: number;
  configDigest: string;
  /** Layer blobs in manifest order; diffId is the sha256 of the uncompressed tar. */
  layers: Array<{ digest: string; size: number; diffId: string }>;
}

export interface BuiltAttestation {
  digest: string;
  mediaType: string;
  bytes: Buffer;
  size: number;
  /** Digest of the platform manifest this attestation describes. */
  refersTo: string;
}

export interface BuiltImage {
  layoutDir: string;
  tag: string;
  format: 'oci' | 'docker';
  topDigest: string;
  topMediaType: string;
  topBytes: Buffer;
  /** One per requested platform, in order (attestations are separate). */
  manifests: BuiltManifest[];
  attestations: BuiltAttestation[];
  /** Every blob (configs, layers, manifests, index) by digest. */
  blobs: Map<string, { size: number; path: string }>;
  /** Content of /etc/archway-test in this platform's image. */
  fileContent(platform: Platform): string;
}

export interface BuildImageOptions {
  /** Layout directory; created if needed, may already hold other tags. */
  dir: string;
  tag: string;
  platforms: Platform[];
  format: 'oci' | 'docker';
  /** Approximate bytes of file content per layer (at least one layer). */
  layerSizes: number[];
  /** Makes content unique: different seeds never share layers. */
  seed: string;
  /** Default true. false: a single-platform image manifest at the tag. */
  index?: boolean;
  /** Add BuildKit-style attestation manifests (platform unknown/unknown); OCI only. */
  attestation?: boolean;
}

const CREATED = '2024-01-01T00:00:00Z';

function markerContent(seed: string, platform: Platform): string {
  return `seed=${seed} platform=${platformString(platform)}\n`;
}

function json(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value));
}

function layerEntries(seed: string, platform: Platform, layerIndex: number, size: number): TarEntry[] {
  const data = deterministicBytes(`${seed}|${platformString(platform)}|${layerIndex}`, size);
  const entries: TarEntry[] = [
    { type: 'dir', name: 'data' },
    { type: 'file', name: `data/layer-${layerIndex}.bin`, data },
  ];
  if (layerIndex === 0) {
    entries.unshift(
      { type: 'dir', name: 'etc' },
      { type: 'file', name: MARKER_PATH.slice(1), data: Buffer.from(markerContent(seed, platform)) },
    );
  }
  return entries;
}

async function buildPlatformManifest(
  opts: BuildImageOptions,
  types: MediaTypeSet,
  platform: Platform,
  addBlob: (bytes: Buffer) => Promise<{ digest: string; size: number }>,
): Promise<BuiltManifest> {
  const layers: BuiltManifest['layers'] = [];
  for (const [i, size] of opts.layerSizes.entries()) {
    const tar = writeTar(layerEntries(opts.seed, platform, i, size));
    // Random content does not compress: fastest level keeps big layers cheap.
    const blob = await addBlob(gzipSync(tar, { level: zlibConstants.Z_BEST_SPEED }));
    layers.push({ ...blob, diffId: sha256Digest(tar) });
  }
  const config = {
    created: CREATED,
    architecture: platform.architecture,
    os: platform.os,
    ...(platform.osVersion ? { 'os.version': platform.osVersion } : {}),
    ...(platform.osFeatures ? { 'os.features': platform.osFeatures } : {}),
    ...(platform.variant ? { variant: platform.variant } : {}),
    config: { Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'] },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    history: layers.map((_, i) => ({ created: CREATED, created_by: `archway-test layer ${i} (${opts.seed})` })),
  };
  const configBlob = await addBlob(json(config));
  const manifest = {
    schemaVersion: 2,
    mediaType: types.manifest,
    config: { mediaType: types.config, digest: configBlob.digest, size: configBlob.size },
    layers: layers.map((l) => ({ mediaType: types.layer, digest: l.digest, size: l.size })),
  };
  const bytes = json(manifest);
  const { digest, size } = await addBlob(bytes);
  return { platform, digest, mediaType: types.manifest, bytes, size, configDigest: configBlob.digest, layers };
}

/** An attestation manifest shaped like BuildKit's (one in-toto SBOM statement). */
async function buildAttestation(
  seed: string,
  subject: BuiltManifest,
  addBlob: (bytes: Buffer) => Promise<{ digest: string; size: number }>,
): Promise<BuiltAttestation> {
  const statement = await addBlob(
    json({
      _type: 'https://in-toto.io/Statement/v0.1',
      predicateType: 'https://spdx.dev/Document',
      subject: [{ name: `archway-test-${seed}`, digest: { sha256: subject.digest.slice('sha256:'.length) } }],
      predicate: { spdxVersion: 'SPDX-2.3', name: `archway-test ${platformString(subject.platform)}` },
    }),
  );
  const config = await addBlob(
    json({
      architecture: 'unknown',
      os: 'unknown',
      config: {},
      rootfs: { type: 'layers', diff_ids: [statement.digest] },
    }),
  );
  const manifest = {
    schemaVersion: 2,
    mediaType: OCI.manifest,
    config: { mediaType: OCI.config, digest: config.digest, size: config.size },
    layers: [
      {
        mediaType: IN_TOTO,
        digest: statement.digest,
        size: statement.size,
        annotations: { 'in-toto.io/predicate-type': 'https://spdx.dev/Document' },
      },
    ],
  };
  const bytes = json(manifest);
  const { digest, size } = await addBlob(bytes);
  return { digest, mediaType: OCI.manifest, bytes, size, refersTo: subject.digest };
}

export async function buildImage(opts: BuildImageOptions): Promise<BuiltImage> {
  const useIndex = opts.index ?? true;
  if (opts.layerSizes.length === 0) throw new Error('buildImage: need at least one layer');
  if (opts.platforms.length === 0) throw new Error('buildImage: need at least one platform');
  if (!useIndex && opts.platforms.length !== 1) throw new Error('buildImage: index=false needs exactly one platform');
  if (opts.attestation && (opts.format !== 'oci' || !useIndex)) {
    throw new Error('buildImage: attestations need format oci with an index');
  }
  const types: MediaTypeSet = opts.format === 'oci' ? OCI : DOCKER;
  await mkdir(opts.dir, { recursive: true });

  const blobs = new Map<string, { size: number; path: string }>();
  const addBlob = async (bytes: Buffer): Promise<{ digest: string; size: number }> => {
    const { digest, size, path } = await writeBlob(opts.dir, bytes);
    blobs.set(digest, { size, path });
    return { digest, size };
  };

  const manifests: BuiltManifest[] = [];
  for (const platform of opts.platforms) manifests.push(await buildPlatformManifest(opts, types, platform, addBlob));
  const attestations: BuiltAttestation[] = [];
  if (opts.attestation) {
    for (const m of manifests) attestations.push(await buildAttestation(opts.seed, m, addBlob));
  }

  let top: { digest: string; mediaType: string; bytes: Buffer; size: number };
  const [single] = manifests;
  if (!useIndex && single) {
    top = single;
  } else {
    const entries: Descriptor[] = manifests.map((m) => ({
      mediaType: m.mediaType,
      digest: m.digest,
      size: m.size,
      platform: platformObject(m.platform),
    }));
    for (const a of attestations) {
      entries.push({
        mediaType: a.mediaType,
        digest: a.digest,
        size: a.size,
        annotations: { 'vnd.docker.reference.digest': a.refersTo, 'vnd.docker.reference.type': 'attestation-manifest' },
        platform: { os: 'unknown', architecture: 'unknown' },
      });
    }
    const bytes = json({ schemaVersion: 2, mediaType: types.index, manifests: entries });
    top = { ...(await addBlob(bytes)), mediaType: types.index, bytes };
  }
  await tagInLayout(opts.dir, { mediaType: top.mediaType, digest: top.digest, size: top.size }, opts.tag);

  return {
    layoutDir: opts.dir,
    tag: opts.tag,
    format: opts.format,
    topDigest: top.digest,
    topMediaType: top.mediaType,
    topBytes: top.bytes,
    manifests,
    attestations,
    blobs,
    fileContent: (platform) => markerContent(opts.seed, platform),
  };
}
