/**
 * Windows os.version (`major.minor.build[.revision]`, e.g. `10.0.17763.5122`)
 * and which container builds a Windows host runs, after containerd's
 * `platforms` (platform_windows_compat.go) and Microsoft's version
 * compatibility table: process isolation needs the same major.minor.build;
 * from Windows Server 2022 (build 20348) on, a host also runs containers of
 * any build from 20348 up to its own (the stable ABI). The revision never
 * matters for compatibility.
 */
interface WindowsVersion {
  major: number;
  minor: number;
  build: number;
  revision: number;
}

/** Windows Server 2022 (ltsc2022): the first build with the stable container ABI. */
const STABLE_ABI_BUILD = 20348;

/** undefined unless at least major.minor.build, all decimal. */
export function parseWindowsVersion(v: string | undefined): WindowsVersion | undefined {
  const m = /^(\d+)\.(\d+)\.(\d+)(?:\.(\d+))?$/.exec(v ?? '');
  if (!m) return undefined;
  return { major: Number(m[1]), minor: Number(m[2]), build: Number(m[3]), revision: Number(m[4] ?? 0) };
}

/** Whether a host of os.version `host` runs a container image of os.version `container`. */
export function windowsCanRun(host: string, container: string): boolean {
  const h = parseWindowsVersion(host);
  const c = parseWindowsVersion(container);
  if (!h || !c || h.major !== c.major || h.minor !== c.minor) return false;
  if (h.build < STABLE_ABI_BUILD) return h.build === c.build;
  return c.build >= STABLE_ABI_BUILD && c.build <= h.build;
}

/** Orders os.versions numerically, component by component; unparseable or absent ones sort first. */
export function compareWindowsVersions(a: string | undefined, b: string | undefined): number {
  const x = parseWindowsVersion(a);
  const y = parseWindowsVersion(b);
  if (!x || !y) return (x ? 1 : 0) - (y ? 1 : 0);
  return x.major - y.major || x.minor - y.minor || x.build - y.build || x.revision - y.revision;
}
