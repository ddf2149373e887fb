// skopeo as an independent, real registry client: pushes built layouts to a
// registry and pulls through the proxy so tests can compare exact bytes.
import { copyFile, link, mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { digestHex } from './digest.ts';
import type { BuiltImage } from './images.ts';
import { ensureCommands } from './packages.ts';
import { run } from './process.ts';
import { removeDir, tempDir } from './tmp.ts';

const TIMEOUT_S = 120;

interface SkopeoFeatures {
  preserveDigests: boolean;
  retryTimes: boolean;
}

let features: Promise<SkopeoFeatures> | undefined;

/** Flags vary between skopeo versions; probe once instead of assuming. */
async function skopeoFeatures(): Promise<SkopeoFeatures> {
  features ??= (async () => {
    await ensureCommands([{ command: 'skopeo', debianPackage: 'skopeo' }]);
    const help = (await run('skopeo', ['copy', '--help'])).stdout;
    return { preserveDigests: help.includes('--preserve-digests'), retryTimes: help.includes('--retry-times') };
  })();
  return features;
}

async function skopeo(args: string[]): Promise<Buffer> {
  // --insecure-policy: a CI machine may lack /etc/containers/policy.json and
  // signature policy is irrelevant for loopback test registries.
  const global = ['--insecure-policy', '--command-timeout', `${TIMEOUT_S}s`];
  const result = await run('skopeo', [...global, ...args], { timeoutMs: (TIMEOUT_S + 10) * 1000 });
  return result.stdoutBuffer;
}

async function retryFlags(): Promise<string[]> {
  // Retries would hide flaky proxy behaviour and multiply request counts.
  return (await skopeoFeatures()).retryTimes ? ['--retry-times', '0'] : [];
}

/** Explicit creds, or none at all: never pick up the machine's auth.json. */
function credsFlags(prefix: '--src-' | '--dest-' | '--', creds: string | undefined): string[] {
  return creds === undefined ? [`${prefix}no-creds`] : [`${prefix}creds`, creds];
}

export interface PushDestination {
  /** e.g. 127.0.0.1:5000 */
  hostPort: string;
  /** Repository name, e.g. library/foo */
  name: string;
  /** Defaults to the image's tag. */
  tag?: string;
  /** user:password */
  creds?: string;
}

async function linkOrCopy(from: string, to: string): Promise<void> {
  try {
    await link(from, to);
  } catch {
    await copyFile(from, to);
  }
}

/**
 * skopeo's `oci:` transport only looks at index.json entries with OCI media
 * types ("no descriptor found for reference" otherwise), so Docker-format
 * images are pushed from a `dir:` view of the same blobs instead. That
 * transport keeps manifests byte for byte and guesses their type from the
 * mediaType field.
 */
async function dirTransportView(image: BuiltImage, dir: string): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'version'), 'Directory Transport Version: 1.1\n');
  await writeFile(join(dir, 'manifest.json'), image.topBytes);
  const instances = new Set(image.manifests.map((m) => m.digest));
  for (const [digest, blob] of image.blobs) {
    if (digest === image.topDigest) continue;
    // Instances of a list are "<hex>.manifest.json"; everything else "<hex>".
    const name = instances.has(digest) ? `${digestHex(digest)}.manifest.json` : digestHex(digest);
    await linkOrCopy(blob.path, join(dir, name));
  }
}

/** `skopeo copy --all` of every platform, bytes and digests unchanged. */
export async function pushLayout(image: BuiltImage, dest: PushDestination): Promise<void> {
  const f = await skopeoFeatures();
  const destRef = `docker://${dest.hostPort}/${dest.name}:${dest.tag ?? image.tag}`;
  const flags = [
    'copy',
    '--all',
    // Without this skopeo may re-encode manifests; tests compare digests.
    ...(f.preserveDigests ? ['--preserve-digests'] : []),
    ...(await retryFlags()),
    '--dest-tls-verify=false',
    ...credsFlags('--dest-', dest.creds),
  ];
  if (image.topMediaType.startsWith('application/vnd.oci.')) {
    await skopeo([...flags, `oci:${image.layoutDir}:${image.tag}`, destRef]);
    return;
  }
  const view = await tempDir('archway-skopeo-dir-');
  try {
    await dirTransportView(image, view);
    await skopeo([...flags, `dir:${view}`, destRef]);
  } finally {
    await removeDir(view);
  }
}

/** How skopeo reaches a registry over TLS. */
export interface TlsOptions {
  /**
   * Verify the registry's certificate (default false: tolerate plain HTTP and
   * self-signed registries). With true, skopeo never falls back to HTTP.
   */
  tlsVerify?: boolean;
  /** Directory of extra CA certificates (`ca.crt`, any `*.crt`) to trust. */
  certDir?: string;
}

function tlsFlags(prefix: '--src-' | '--', opts: TlsOptions): string[] {
  return [`${prefix}tls-verify=${opts.tlsVerify === true}`, ...(opts.certDir !== undefined ? [`${prefix}cert-dir`, opts.certDir] : [])];
}

/** The manifest or index exactly as the registry serves it. */
export async function inspectRaw(ref: string, opts: { creds?: string } & TlsOptions = {}): Promise<Buffer> {
  return skopeo(['inspect', '--raw', ...(await retryFlags()), ...tlsFlags('--', opts), ...credsFlags('--', opts.creds), `docker://${ref}`]);
}

export interface CopyToLayoutOptions extends TlsOptions {
  /** Copy every platform of an index (default: only the matching one). */
  all?: boolean;
  overrideOs?: string;
  overrideArch?: string;
  overrideVariant?: string;
  creds?: string;
  /** Tag inside the layout; default: the ref's tag, or "latest" for digests. */
  tag?: string;
}

function tagOf(ref: string): string {
  const tail = ref.slice(ref.lastIndexOf('/') + 1);
  if (tail.includes('@')) return 'latest';
  const colon = tail.indexOf(':');
  return colon === -1 ? 'latest' : tail.slice(colon + 1);
}

async function copyFrom(ref: string, destination: string, opts: Omit<CopyToLayoutOptions, 'tag'>): Promise<void> {
  const overrides = [
    ...(opts.overrideOs ? ['--override-os', opts.overrideOs] : []),
    ...(opts.overrideArch ? ['--override-arch', opts.overrideArch] : []),
    ...(opts.overrideVariant ? ['--override-variant', opts.overrideVariant] : []),
  ];
  await skopeo([
    ...overrides,
    'copy',
    ...(opts.all ? ['--all'] : []),
    ...(await retryFlags()),
    ...tlsFlags('--src-', opts),
    ...credsFlags('--src-', opts.creds),
    `docker://${ref}`,
    destination,
  ]);
}

/**
 * Pulls `ref` (HOSTPORT/NAME:TAG or HOSTPORT/NAME@DIGEST) into an OCI layout;
 * read it with readLayoutTop/readLayoutBlob from oci-layout.ts.
 * Beware: skopeo CONVERTS Docker-format manifests to OCI on the way into an
 * OCI layout (new digests). Use copyToDir to compare Docker-format bytes.
 */
export async function copyToLayout(ref: string, dir: string, opts: CopyToLayoutOptions = {}): Promise<void> {
  await copyFrom(ref, `oci:${dir}:${opts.tag ?? tagOf(ref)}`, opts);
}

/**
 * Pulls `ref` into a skopeo `dir:` directory, which keeps every manifest byte
 * for byte whatever its format; read it with readDirManifest/readDirBlob.
 */
export async function copyToDir(ref: string, dir: string, opts: Omit<CopyToLayoutOptions, 'tag'> = {}): Promise<void> {
  await copyFrom(ref, `dir:${dir}`, opts);
}

/** Top-level manifest/index of a copyToDir result, or one instance of its list. */
export async function readDirManifest(dir: string, instanceDigest?: string): Promise<Buffer> {
  const name = instanceDigest === undefined ? 'manifest.json' : `${digestHex(instanceDigest)}.manifest.json`;
  return readFile(join(dir, name));
}

/** A config or layer blob of a copyToDir result. */
export async function readDirBlob(dir: string, digest: string): Promise<Buffer> {
  return readFile(join(dir, digestHex(digest)));
}
