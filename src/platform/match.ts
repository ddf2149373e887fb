import type { Descriptor, ManifestIndex } from '../oci/manifest.ts';
import { normalizePlatform, samePlatform, type Platform } from './platform.ts';

const ARM_VARIANTS = ['v8', 'v7', 'v6', 'v5'];
const AMD64_LEVELS = ['v4', 'v3', 'v2', ''];

/**
 * Every platform a machine of platform `p` can run, best first: itself, then
 * what its processor also executes (containerd's matcher order). amd64 runs
 * older amd64 levels and 386; arm64 runs 32-bit arm down to v5; arm/vN runs
 * every lower arm variant.
 */
export function compatiblePlatforms(wanted: Platform): Platform[] {
  const p = normalizePlatform(wanted);
  const os = p.os;
  const out: Platform[] = [p];
  const add = (architecture: string, variant?: string) => out.push(variant ? { os, architecture, variant } : { os, architecture });
  if (p.architecture === 'amd64') {
    for (const level of AMD64_LEVELS.slice(AMD64_LEVELS.indexOf(p.variant ?? '') + 1)) add('amd64', level);
    add('386');
  } else if (p.architecture === 'arm64') {
    // arm64/v9 (and later) run arm64/v8, which normalises to plain arm64.
    if (p.variant) add('arm64');
    for (const v of ARM_VARIANTS) add('arm', v);
  } else if (p.architecture === 'arm') {
    const i = ARM_VARIANTS.indexOf(p.variant ?? 'v7');
    for (const v of i < 0 ? [] : ARM_VARIANTS.slice(i + 1)) add('arm', v);
  }
  return out;
}

/** Attestation manifests (BuildKit) sit in indexes as unknown/unknown: they are never a platform. */
export function isAttestationEntry(d: Descriptor): boolean {
  return d.platform?.os === 'unknown' && d.platform.architecture === 'unknown';
}

/** The index entry a machine of platform `wanted` should run: exact first, then the fallbacks in order. */
export function bestMatch(index: ManifestIndex, wanted: Platform): Descriptor | undefined {
  const candidates = index.manifests.filter((d) => d.platform && !isAttestationEntry(d));
  for (const p of compatiblePlatforms(wanted)) {
    const hit = candidates.find((d) => samePlatform(d.platform as Platform, p));
    if (hit) return hit;
  }
  return undefined;
}

/** The platforms an index offers, for error messages. */
export function availablePlatforms(index: ManifestIndex): Platform[] {
  return index.manifests.filter((d) => d.platform && !isAttestationEntry(d)).map((d) => d.platform as Platform);
}
