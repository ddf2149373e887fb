import { randomUUID } from 'node:crypto';
import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { digestAlgorithm, digestHex, digestOf, type Digest } from '../oci/digest.ts';

export interface StoredManifest {
  digest: Digest;
  mediaType: string;
  bytes: Buffer;
}

/** Manifests by digest, per upstream: what ManifestService needs of storage. */
export interface ManifestStore {
  init(): Promise<void>;
  get(upstream: string, digest: Digest): Promise<StoredManifest | undefined>;
  /** Store bytes whose digest the caller verified. */
  put(upstream: string, manifest: StoredManifest): Promise<void>;
}

/**
 * Manifests by digest, per upstream (a manifest is content, but what an
 * upstream serves is its own: two registries never share answers). Each file
 * is one JSON header line with the media type, then the exact bytes; written
 * to a temp file and renamed, so a reader sees all of it or nothing.
 */
export class FsManifestStore implements ManifestStore {
  private readonly dir: string;
  private readonly tmpDir: string;

  constructor(cacheDir: string) {
    this.dir = join(cacheDir, 'manifests');
    this.tmpDir = join(cacheDir, 'tmp');
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await mkdir(this.tmpDir, { recursive: true });
  }

  async get(upstream: string, digest: Digest): Promise<StoredManifest | undefined> {
    let raw: Buffer;
    try {
      raw = await readFile(this.path(upstream, digest));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    const newline = raw.indexOf(0x0a);
    if (newline < 0) return undefined;
    const { mediaType } = JSON.parse(raw.subarray(0, newline).toString('utf8')) as { mediaType: string };
    const bytes = raw.subarray(newline + 1);
    // Cheap at manifest sizes, and it keeps a damaged file from ever being served.
    if (digestOf(bytes, digestAlgorithm(digest)) !== digest) return undefined;
    return { digest, mediaType, bytes };
  }

  /** Store verified bytes; the caller checked that `digest` is theirs. */
  async put(upstream: string, manifest: StoredManifest): Promise<void> {
    const target = this.path(upstream, manifest.digest);
    const temp = join(this.tmpDir, randomUUID());
    await mkdir(join(target, '..'), { recursive: true });
    await writeFile(temp, Buffer.concat([Buffer.from(`${JSON.stringify({ mediaType: manifest.mediaType })}\n`), manifest.bytes]));
    await rename(temp, target);
  }

  private path(upstream: string, digest: Digest): string {
    return join(this.dir, encodeURIComponent(upstream), digestAlgorithm(digest), digestHex(digest));
  }
}
