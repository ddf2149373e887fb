import type { Platform } from '../oci/manifest.ts';

export type { Platform };

/**
 * Platforms as containerd's `platforms` package understands them: parsed from
 * `os/arch[/variant]` and normalised, so that every spelling a machine or an
 * index uses compares equal (`aarch64` is `arm64`, `armhf` is `arm/v7`, plain
 * `arm` is `arm/v7`, `arm64/v8` is `arm64`).
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
  arm: { architecture: 'arm' },
};

export function normalizePlatform(p: Platform): Platform {
  const os = p.os.toLowerCase();
  const rawArch = p.architecture.toLowerCase();
  const alias = ARCH_ALIASES[rawArch];
  const architecture = alias?.architecture ?? rawArch;
  // An empty variant (indexes may carry "variant": "") is no variant.
  let variant = (p.variant || alias?.variant || '').toLowerCase();
  if (/^\d+$/.test(variant)) variant = `v${variant}`;
  if (architecture === 'arm64' && variant === 'v8') variant = '';
  if (architecture === 'arm' && variant === '') variant = 'v7';
  if (architecture === 'amd64' && variant === 'v1') variant = '';
  return variant ? { os, architecture, variant } : { os, architecture };
}

/** Parse `os/arch[/variant]`; throws with a readable reason. */
export function parsePlatform(s: string): Platform {
  const parts = s.trim().split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((x) => !/^[a-zA-Z0-9_.-]+$/.test(x))) {
    throw new Error(`invalid platform "${s}" (use os/arch[/variant], e.g. linux/arm64 or linux/arm/v6)`);
  }
  const [os, architecture, variant] = parts as [string, string, string | undefined];
  return normalizePlatform(variant ? { os, architecture, variant } : { os, architecture });
}

export function formatPlatform(p: Platform): string {
  return p.variant ? `${p.os}/${p.architecture}/${p.variant}` : `${p.os}/${p.architecture}`;
}

export function samePlatform(a: Platform, b: Platform): boolean {
  const x = normalizePlatform(a);
  const y = normalizePlatform(b);
  return x.os === y.os && x.architecture === y.architecture && (x.variant ?? '') === (y.variant ?? '');
}

