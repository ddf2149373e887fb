import type { Platform } from '../oci/manifest.ts';
import { parseWindowsVersion } from './windows-version.ts';

export type { Platform };

/**
 * Platforms as containerd's `platforms` package understands them: parsed from
 * `os[(os.version[+os.feature…])]/arch[/variant]` and normalised, so that
 * every spelling a machine or an index uses compares equal (`aarch64` is
 * `arm64`, `armhf` is `arm/v7`, plain `arm` is `arm/v7`, `arm64/v8` is
 * `arm64`, `amd64/v1` is `amd64`). Architectures archway knows nothing about
 * are kept as written (lower-cased for comparison), variant included.
 */
const ARCH_ALIASES: Record<string, { architecture: string; variant?: string }> = {
  x86_64: { architecture: 'amd64' },
  'x86-64': { architecture: 'amd64' },
  amd64: { architecture: 'amd64' },
  aarch64: { architecture: 'arm64' },
  arm64: { architecture: 'arm64' },
  i386: { architecture: '386' },
  i486: { architecture: '386' },
  i586: { architecture: '386' },
  i686: { architecture: '386' },
  '386': { architecture: '386' },
  armhf: { architecture: 'arm', variant: 'v7' },
  armel: { architecture: 'arm', variant: 'v6' },
  // uname -m spellings (what an operator copies from a machine into a rule).
  armv7l: { architecture: 'arm', variant: 'v7' },
  armv6l: { architecture: 'arm', variant: 'v6' },
  arm: { architecture: 'arm' },
  loongarch64: { architecture: 'loong64' },
  // Debian's spellings of Go's ppc64le and mips64le.
  ppc64el: { architecture: 'ppc64le' },
  mips64el: { architecture: 'mips64le' },
};

/** Architectures whose variants archway orders (match.ts): a bare number there means `v<number>`. */
const VERSIONED_ARCHS = new Set(['amd64', 'arm', 'arm64']);

export function normalizePlatform(p: Platform): Platform {
  const os = p.os.toLowerCase();
  const rawArch = p.architecture.toLowerCase();
  const alias = ARCH_ALIASES[rawArch];
  const architecture = alias?.architecture ?? rawArch;
  // An empty variant (indexes may carry "variant": "") is no variant.
  let variant = (p.variant || alias?.variant || '').toLowerCase();
  if (VERSIONED_ARCHS.has(architecture) && /^\d+(\.\d+)?$/.test(variant)) variant = `v${variant}`;
  if (architecture === 'arm64' && (variant === 'v8' || variant === 'v8.0')) variant = '';
  if (architecture === 'arm64' && variant === 'v9.0') variant = 'v9';
  if (architecture === 'arm' && variant === '') variant = 'v7';
  if (architecture === 'amd64' && variant === 'v1') variant = '';
  const out: Platform = variant ? { os, architecture, variant } : { os, architecture };
  if (p.osVersion) out.osVersion = p.osVersion;
  // containerd compares os.features as a sorted set.
  if (p.osFeatures?.length) out.osFeatures = [...new Set(p.osFeatures)].sort();
  if (p.features?.length) out.features = [...p.features];
  return out;
}

/** `windows(10.0.17763+win32k)`: containerd's spelling of an os with its os.version and os.features. */
const OS_PART = /^([A-Za-z0-9_.-]+)(?:\(([A-Za-z0-9_.%-]*)((?:\+[A-Za-z0-9_.%-]+)*)\))?$/;
const PART = /^[A-Za-z0-9_.-]+$/;

/**
 * Parse `os[(os.version[+feature…])]/arch[/variant]` (containerd's and
 * `ctr --platform`'s syntax, e.g. `windows(10.0.17763)/amd64`); throws with a
 * readable reason.
 */
export function parsePlatform(s: string): Platform {
  const parts = s.trim().split('/');
  const osMatch = OS_PART.exec(parts[0] ?? '');
  if (parts.length < 2 || parts.length > 3 || !osMatch || parts.slice(1).some((x) => !PART.test(x))) {
    throw new Error(`invalid platform "${s}" (use os/arch[/variant], e.g. linux/arm64, linux/arm/v6 or windows(10.0.17763)/amd64)`);
  }
  const [, os = '', rawVersion = '', rawFeatures = ''] = osMatch;
  const [, architecture = '', variant] = parts;
  const p: Platform = variant ? { os, architecture, variant } : { os, architecture };
  const decode = (v: string): string => {
    try {
      return decodeURIComponent(v);
    } catch {
      throw new Error(`invalid platform "${s}" (bad %-escape in "${v}")`);
    }
  };
  if (rawVersion) p.osVersion = decode(rawVersion);
  if (rawFeatures) p.osFeatures = rawFeatures.slice(1).split('+').map(decode);
  // A Windows host is matched by its build: anything else would silently match no versioned image.
  if (os.toLowerCase() === 'windows' && p.osVersion && !parseWindowsVersion(p.osVersion)) {
    throw new Error(`invalid platform "${s}" (a Windows os.version is major.minor.build[.revision], e.g. windows(10.0.17763)/amd64)`);
  }
  return normalizePlatform(p);
}

/**
 * An os option %-escaped: containerd escapes `%+()/`; archway escapes every
 * byte outside the specifier's characters, so that what an upstream wrote
 * into os.version always formats to a string that parses back and is safe in
 * a header (x-archway-platform) or a metric label.
 */
const encodeOption = (v: string): string =>
  v.replace(/[^A-Za-z0-9_.-]/gu, (c) => [...Buffer.from(c, 'utf8')].map((b) => `%${b.toString(16).toUpperCase().padStart(2, '0')}`).join(''));

/** The inverse of parsePlatform (containerd's FormatAll): os.version and os.features in parentheses after the os. */
export function formatPlatform(p: Platform): string {
  const options = `${encodeOption(p.osVersion ?? '')}${[...(p.osFeatures ?? [])].sort().map((f) => `+${encodeOption(f)}`).join('')}`;
  const os = options ? `${p.os}(${options})` : p.os;
  return p.variant ? `${os}/${p.architecture}/${p.variant}` : `${os}/${p.architecture}`;
}

/**
 * The same platform, for looking an entry up by name: os, architecture and
 * variant equal once normalised, and, when both name an os.version, one a
 * dot-separated prefix of the other (`10.0.17763` names `10.0.17763.5122`).
 */
export function samePlatform(a: Platform, b: Platform): boolean {
  const x = normalizePlatform(a);
  const y = normalizePlatform(b);
  if (x.os !== y.os || x.architecture !== y.architecture || (x.variant ?? '') !== (y.variant ?? '')) return false;
  if (!x.osVersion || !y.osVersion) return true;
  const [short, long] = x.osVersion.length <= y.osVersion.length ? [x.osVersion, y.osVersion] : [y.osVersion, x.osVersion];
  return long === short || long.startsWith(`${short}.`);
}
