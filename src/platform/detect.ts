import { normalizePlatform, type Platform } from './platform.ts';

/**
 * The platform a client reports in its User-Agent. Docker daemons and CRI-O
 * send `… os/linux arch/arm64 …` (Go's GOOS/GOARCH, so never a variant: a
 * daemon on arm reports plain `arm`, which normalises to arm/v7). containerd,
 * skopeo, podman and crane report no architecture: undefined. A daemon on
 * Windows reports no os.version either (moby drops its kernel field, which
 * holds spaces, from the User-Agent): a Windows host's build comes from a rule.
 */
export function detectPlatform(userAgent: string | undefined): Platform | undefined {
  if (!userAgent) return undefined;
  const os = /(?:^|\s)os\/([a-zA-Z0-9_]+)/.exec(userAgent)?.[1];
  const architecture = /(?:^|\s)arch\/([a-zA-Z0-9_]+)/.exec(userAgent)?.[1];
  if (!os || !architecture) return undefined;
  return normalizePlatform({ os, architecture });
}
