// containerd's own pull path (what Kubernetes nodes use) through a mirror,
// configured the modern way: a hosts.toml in a hosts directory.
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ensureCommands } from './packages.ts';
import { run } from './process.ts';
import { removeDir, tempDir } from './tmp.ts';

export interface CtrOptions {
  containerdSocket: string;
  /** containerd namespace (default archway-test, separate from dockerd's "moby"). */
  namespace?: string;
}

export interface CtrPullOptions extends CtrOptions {
  /** http://127.0.0.1:PORT or https://127.0.0.1:PORT (then give `ca` unless the system trusts it). */
  mirror: string;
  /** Fully qualified, e.g. docker.io/library/foo:1 (ctr does not normalise). */
  ref: string;
  /** e.g. linux/arm64 */
  platform?: string;
  allPlatforms?: boolean;
  /** Snapshotter to unpack into (default native: needs no overlay support). */
  snapshotter?: string;
  /** user:password sent to the mirror. */
  user?: string;
  /** Headers containerd sends with every request to the mirror (hosts.toml `header`), e.g. Authorization. */
  headers?: Record<string, string>;
  /** PEM file of the CA that signed an https mirror's certificate (hosts.toml `ca`). */
  ca?: string;
}

function ctrArgs(opts: CtrOptions, args: string[]): string[] {
  return ['-a', opts.containerdSocket, '-n', opts.namespace ?? 'archway-test', ...args];
}

async function ctr(opts: CtrOptions, args: string[]): Promise<string> {
  await ensureCommands([{ command: 'ctr', debianPackage: 'containerd' }]);
  return (await run('ctr', ctrArgs(opts, args), { timeoutMs: 180_000 })).stdout;
}

/**
 * hosts.toml for the ref's registry: the mirror first, the real registry as
 * `server` fallback. A plain-http mirror just uses an http:// host URL; no
 * --plain-http flag is needed (that flag only changes the default scheme).
 * An https mirror may name the CA to trust (`ca`), and any mirror may get
 * headers sent with every request (`[host."…".header]`, e.g. Authorization).
 */
function hostsToml(registryHost: string, mirror: string, opts: { headers?: Record<string, string> | undefined; ca?: string | undefined } = {}): string {
  const server = registryHost === 'docker.io' ? 'https://registry-1.docker.io' : `https://${registryHost}`;
  const lines = [`server = ${tomlString(server)}`, '', `[host.${tomlString(mirror)}]`, '  capabilities = ["pull", "resolve"]'];
  if (opts.ca !== undefined) lines.push(`  ca = ${tomlString(opts.ca)}`);
  const headers = Object.entries(opts.headers ?? {});
  if (headers.length > 0) {
    lines.push('', `[host.${tomlString(mirror)}.header]`);
    for (const [name, value] of headers) lines.push(`  ${tomlString(name)} = ${tomlString(value)}`);
  }
  return `${lines.join('\n')}\n`;
}

/** A TOML basic string (JSON's escapes are valid TOML for what we write). */
function tomlString(s: string): string {
  return JSON.stringify(s);
}

export async function ctrPull(opts: CtrPullOptions): Promise<{ stdout: string }> {
  const registryHost = opts.ref.split('/')[0] ?? '';
  if (!registryHost.includes('.') && !registryHost.includes(':') && registryHost !== 'localhost') {
    throw new Error(`ctrPull: ref must be fully qualified (docker.io/library/NAME:TAG), got ${opts.ref}`);
  }
  const hostsDir = await tempDir('archway-ctr-hosts-');
  try {
    await mkdir(join(hostsDir, registryHost), { recursive: true });
    await writeFile(join(hostsDir, registryHost, 'hosts.toml'), hostsToml(registryHost, opts.mirror, { headers: opts.headers, ca: opts.ca }));
    const stdout = await ctr(opts, [
      'images',
      'pull',
      '--hosts-dir',
      hostsDir,
      '--snapshotter',
      opts.snapshotter ?? 'native',
      ...(opts.user ? ['--user', opts.user] : []),
      ...(opts.platform ? ['--platform', opts.platform] : []),
      ...(opts.allPlatforms ? ['--all-platforms'] : []),
      opts.ref,
    ]);
    return { stdout };
  } finally {
    await removeDir(hostsDir);
  }
}

/** Digest of the manifest or index the image record points to. */
export async function ctrImageDigest(opts: CtrOptions, ref: string): Promise<string> {
  const listing = await ctr(opts, ['images', 'ls']);
  for (const line of listing.split('\n').slice(1)) {
    const [name, , digest] = line.trim().split(/\s+/);
    if (name === ref && digest) return digest;
  }
  throw new Error(`ctr: image ${ref} not found in:\n${listing}`);
}

export async function ctrRemove(opts: CtrOptions, ref: string): Promise<void> {
  // --sync: wait for garbage collection so content is really gone.
  await ctr(opts, ['images', 'rm', '--sync', ref]);
}
