// Platform helpers for the platform-awareness tests: pick the built manifest
// of a platform, compare platform strings the way containerd does, and
// spell the User-Agent a docker daemon sends. Independent of src/ on
// purpose: tests must not share the code they check.
import type { BuiltAttestation, BuiltImage, BuiltManifest, Platform } from './images.ts';
import { platformString } from './images.ts';

/** "linux/arm/v7" → { os, architecture, variant } (no normalisation). */
export function parsePlatformString(s: string): Platform {
  const [os = '', architecture = '', variant] = s.split('/');
  return variant ? { os, architecture, variant } : { os, architecture };
}

/** The two spellings that mean the same machine: arm64/v8 is arm64; plain arm is arm/v7. */
export function canonicalPlatform(p: string | Platform): string {
  const { os, architecture, variant } = typeof p === 'string' ? parsePlatformString(p) : p;
  let v = variant ?? '';
  if (architecture === 'arm64' && v === 'v8') v = '';
  if (architecture === 'arm' && v === '') v = 'v7';
  return [os, architecture, v].filter(Boolean).join('/');
}

export function samePlatformString(a: string | Platform, b: string | Platform): boolean {
  return canonicalPlatform(a) === canonicalPlatform(b);
}

/** The built image manifest of one platform; throws when the image lacks it. */
export function manifestFor(image: BuiltImage, platform: string): BuiltManifest {
  const m = image.manifests.find((x) => samePlatformString(x.platform, platform));
  if (!m) throw new Error(`image ${image.tag} has no ${platform} (has ${image.manifests.map((x) => platformString(x.platform)).join(', ')})`);
  return m;
}

/** The attestation manifest describing that image manifest, if the image has attestations. */
export function attestationFor(image: BuiltImage, manifestDigest: string): BuiltAttestation | undefined {
  return image.attestations.find((a) => a.refersTo === manifestDigest);
}

/** What a docker 20.10 daemon on this architecture sends (GOOS/GOARCH, never a variant). */
export function dockerUserAgent(arch: string): string {
  return `docker/20.10.24 go/go1.19.8 git-commit/5d6db84 kernel/6.1.0 os/linux arch/${arch} UpstreamClient(Docker-Client/20.10.24 \\(linux\\))`;
}
