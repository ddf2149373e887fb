import type { Descriptor, ManifestIndex } from '../oci/manifest.ts';
import { normalizePlatform, type Platform } from './platform.ts';
import { compareWindowsVersions, windowsCanRun } from './windows-version.ts';

/**
 * Every platform a machine of platform `wanted` can run, best first: itself,
 * then what its processor also executes, in containerd's order
 * (`platforms.Only`):
 * - amd64/vN runs amd64/vN-1 … v1 (plain amd64), then 386: a v3 machine
 *   runs v2 and v1 images, never v4;
 * - arm/vN runs arm/vN-1 … v5;
 * - arm64/v8.x runs v8.x-1 … v8 (plain arm64); arm64/v9.x runs v9.x-1 … v9,
 *   then v8.x+5 and down (v9.0 branched from v8.5); every arm64 then runs
 *   32-bit arm/v8 … v5;
 * - anything else (ppc64le, s390x, riscv64, loong64, mips64le, architectures
 *   archway has never heard of) runs only itself.
 * Each keeps the wanted os, os.version and os.features.
 */
export function compatiblePlatforms(wanted: Platform): Platform[] {
  const p = normalizePlatform(wanted);
  const out: Platform[] = [p];
  const add = (architecture: string, variant?: string) => out.push(normalizePlatform({ ...p, architecture, variant: variant ?? '' }));
  const level = (variant: string | undefined): number | undefined => {
    const m = /^v(\d+)$/.exec(variant ?? '');
    return m ? Number(m[1]) : undefined;
  };
  if (p.architecture === 'amd64') {
    const n = level(p.variant) ?? 1;
    for (let v = n - 1; v >= 1; v--) add('amd64', `v${v}`);
    add('386');
  } else if (p.architecture === 'arm') {
    const n = level(p.variant) ?? 0;
    for (let v = n - 1; v >= 5; v--) add('arm', `v${v}`);
  } else if (p.architecture === 'arm64') {
    const m = /^v(\d+)(?:\.(\d+))?$/.exec(p.variant ?? 'v8');
    let major = m ? Number(m[1]) : 0;
    let minor = m?.[2] ? Number(m[2]) : 0;
    if (major === 9) {
      for (let v = minor - 1; v >= 0; v--) add('arm64', v === 0 ? 'v9' : `v9.${v}`);
      major = 8;
      minor += 5;
      add('arm64', `v8.${minor}`);
    }
    if (major === 8) for (let v = minor - 1; v >= 0; v--) add('arm64', v === 0 ? 'v8' : `v8.${v}`);
    // Every arm64 processor archway knows of executes 32-bit arm up to v8.
    for (let v = 8; v >= 5; v--) add('arm', `v${v}`);
  }
  return out;
}

/** Attestation manifests (BuildKit) sit in indexes as unknown/unknown: they are never a platform. */
export function isAttestationEntry(d: Descriptor): boolean {
  return d.platform?.os === 'unknown' && d.platform.architecture === 'unknown';
}

/**
 * Whether an index entry's platform is `wanted` exactly (no fallback), as
 * containerd's matcher decides: os, architecture and variant equal once
 * normalised; for Windows, when both give an os.version, a host of that
 * version can run the entry's build (windows-version.ts); the entry's
 * os.features all among the wanted ones. `features` are never matched.
 */
export function platformMatches(wanted: Platform, entry: Platform): boolean {
  const w = normalizePlatform(wanted);
  const e = normalizePlatform(entry);
  if (w.os !== e.os || w.architecture !== e.architecture || (w.variant ?? '') !== (e.variant ?? '')) return false;
  if (w.os === 'windows' && w.osVersion && e.osVersion && !windowsCanRun(w.osVersion, e.osVersion)) return false;
  const have = new Set(w.osFeatures ?? []);
  return (e.osFeatures ?? []).every((f) => have.has(f));
}

/**
 * The index entry a machine of platform `wanted` should run: the first
 * platform of the fallback order any entry matches. Among several entries for
 * it, a wanted os.version takes the newest build it can run; otherwise the
 * first in the index, as the publisher ordered them.
 */
export function bestMatch(index: ManifestIndex, wanted: Platform): Descriptor | undefined {
  const candidates = index.manifests.filter((d) => d.platform && !isAttestationEntry(d));
  for (const p of compatiblePlatforms(wanted)) {
    const hits = candidates.filter((d) => platformMatches(p, d.platform as Platform));
    if (hits.length === 0) continue;
    if (p.os !== 'windows' || !p.osVersion) return hits[0];
    return hits.reduce((best, d) => (compareWindowsVersions(d.platform?.osVersion, best.platform?.osVersion) > 0 ? d : best));
  }
  return undefined;
}

/** The platforms an index offers, for error messages. */
export function availablePlatforms(index: ManifestIndex): Platform[] {
  return index.manifests.filter((d) => d.platform && !isAttestationEntry(d)).map((d) => d.platform as Platform);
}
