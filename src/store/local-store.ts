import { mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { LRUCache } from 'lru-cache';
import { digestAlgorithm, digestHex, digestOf, parseDigest, type Digest } from '../oci/digest.ts';
import { atomicWrite } from './atomic-write.ts';
import type { StoredManifest } from './manifest-store.ts';

/** A pushed tag of a local repository. */
export interface LocalTag {
  digest: Digest;
  mediaType: string;
  /** os/arch[/variant] of each entry when the tag is an index, in its order. */
  platforms: string[];
  /** When it was pushed (ms since epoch). */
  pushedAt: number;
}

/** Where a blob mounted into a local repository is served from: the repository it was mounted from. */
export interface BlobOrigin {
  upstream: string;
  /** The repository at that upstream. */
  repository: string;
  /** As the mount's check saw it, when it could tell. */
  size: number | undefined;
}

/**
 * What archway keeps of its local repositories (config `local`): manifests,
 * tags and the origin of each mounted blob, per repository (keyed
 * `<upstream>/<repository>`). Durable: never evicted, never part of the cache
 * budget; the blobs themselves stay in the cache, which can always fetch them
 * again from their origin.
 */
export interface LocalStore {
  init(): Promise<void>;
  manifest(repository: string, digest: Digest): Promise<StoredManifest | undefined>;
  /** Store bytes whose digest the caller verified. */
  putManifest(repository: string, manifest: StoredManifest): Promise<void>;
  deleteManifest(repository: string, digest: Digest): Promise<boolean>;
  tag(repository: string, tag: string): Promise<LocalTag | undefined>;
  setTag(repository: string, tag: string, record: LocalTag): Promise<void>;
  deleteTag(repository: string, tag: string): Promise<boolean>;
  /** The repository's tags, sorted. */
  tags(repository: string): Promise<string[]>;
  blob(repository: string, digest: Digest): Promise<BlobOrigin | undefined>;
  putBlob(repository: string, digest: Digest, origin: BlobOrigin): Promise<void>;
  /** Every local repository with anything in it. */
  repositories(): Promise<string[]>;
  /** Bytes held, for the local.maxSize bound and the cache summary. */
  usage(): { bytes: number };
  /**
   * Drop what this process holds in memory of a repository's manifests (these,
   * or all of every repository), deleted through another replica sharing the
   * store; absent where the store is this process's own.
   */
  forgetCopies?(repository?: string, digests?: readonly Digest[]): void;
  /** How many manifests and mounted blobs a repository holds (a walk of its records). */
  counts(repository: string): Promise<{ manifests: number; blobs: number }>;
}

/**
 * The local store on the filesystem, under `<cache.dir>/local/`:
 *   local/<repository, URI-encoded>/manifests/<algorithm>/<hex>  — a JSON header line, then the exact bytes
 *   local/<repository, URI-encoded>/tags/<tag>                    — JSON LocalTag
 *   local/<repository, URI-encoded>/blobs/<algorithm>/<hex>      — JSON BlobOrigin
 * Every file is written to a temp file and renamed, so a copy of the folder
 * (the backup) holds whole files only. Nothing here is counted in the cache's
 * disk budget, so the LRU never sees (or evicts) it.
 */
export class FsLocalStore implements LocalStore {
  private readonly dir: string;
  private readonly tmpDir: string;
  private bytes = 0;
  /** Manifests once read and verified (tags are read on every pull of a local tag). */
  private readonly hot = new LRUCache<string, StoredManifest>({ maxSize: 16 * 1024 * 1024, sizeCalculation: (m) => m.bytes.length + 200 });

  constructor(cacheDir: string) {
    this.dir = join(cacheDir, 'local');
    this.tmpDir = join(cacheDir, 'tmp');
  }

  async init(): Promise<void> {
    await mkdir(this.dir, { recursive: true });
    await mkdir(this.tmpDir, { recursive: true });
    let bytes = 0;
    for (const entry of await readdir(this.dir, { recursive: true, withFileTypes: true })) {
      if (!entry.isFile()) continue;
      bytes += (await stat(join(entry.parentPath, entry.name)).catch(() => ({ size: 0 }))).size;
    }
    this.bytes = bytes;
  }

  usage(): { bytes: number } {
    return { bytes: this.bytes };
  }

  async manifest(repository: string, digest: Digest): Promise<StoredManifest | undefined> {
    const path = this.path(repository, 'manifests', digest);
    const hot = this.hot.get(path);
    if (hot) return hot;
    const raw = await readOrUndefined(path);
    const manifest = raw && decodeStoredManifest(raw, digest);
    if (manifest) this.hot.set(path, manifest);
    return manifest;
  }

  async putManifest(repository: string, manifest: StoredManifest): Promise<void> {
    const path = this.path(repository, 'manifests', manifest.digest);
    await this.write(path, encodeStoredManifest(manifest));
    this.hot.set(path, manifest);
  }

  async deleteManifest(repository: string, digest: Digest): Promise<boolean> {
    const path = this.path(repository, 'manifests', digest);
    this.hot.delete(path);
    return this.remove(path);
  }

  async tag(repository: string, tag: string): Promise<LocalTag | undefined> {
    const raw = await readOrUndefined(this.tagPath(repository, tag));
    return raw && decodeLocalTag(raw);
  }

  async setTag(repository: string, tag: string, record: LocalTag): Promise<void> {
    await this.write(this.tagPath(repository, tag), Buffer.from(JSON.stringify(record)));
  }

  deleteTag(repository: string, tag: string): Promise<boolean> {
    return this.remove(this.tagPath(repository, tag));
  }

  async tags(repository: string): Promise<string[]> {
    const names = await readdir(join(this.repositoryDir(repository), 'tags')).catch(() => []);
    return names.sort();
  }

  async blob(repository: string, digest: Digest): Promise<BlobOrigin | undefined> {
    const raw = await readOrUndefined(this.path(repository, 'blobs', digest));
    return raw && decodeBlobOrigin(raw);
  }

  async putBlob(repository: string, digest: Digest, origin: BlobOrigin): Promise<void> {
    await this.write(this.path(repository, 'blobs', digest), Buffer.from(JSON.stringify(origin)));
  }

  async counts(repository: string): Promise<{ manifests: number; blobs: number }> {
    const files = async (kind: string) =>
      (await readdir(join(this.repositoryDir(repository), kind), { recursive: true, withFileTypes: true }).catch(() => [])).filter((e) => e.isFile()).length;
    return { manifests: await files('manifests'), blobs: await files('blobs') };
  }

  async repositories(): Promise<string[]> {
    const names = await readdir(this.dir).catch(() => []);
    return names.map((n) => decodeURIComponent(n)).sort();
  }

  private async write(path: string, bytes: Buffer): Promise<void> {
    const before = (await stat(path).catch(() => undefined))?.size ?? 0;
    await mkdir(join(path, '..'), { recursive: true });
    await atomicWrite(path, bytes, this.tmpDir);
    this.bytes += bytes.length - before;
  }

  private async remove(path: string): Promise<boolean> {
    const size = (await stat(path).catch(() => undefined))?.size;
    if (size === undefined) return false;
    await rm(path, { force: true });
    this.bytes -= size;
    return true;
  }

  private repositoryDir(repository: string): string {
    return join(this.dir, encodeURIComponent(repository));
  }

  private path(repository: string, kind: 'manifests' | 'blobs', digest: Digest): string {
    return join(this.repositoryDir(repository), kind, digestAlgorithm(digest), digestHex(digest));
  }

  /** Tags are `[A-Za-z0-9_][A-Za-z0-9._-]*` (validated at the edge): safe as file names as they are. */
  private tagPath(repository: string, tag: string): string {
    return join(this.repositoryDir(repository), 'tags', tag);
  }
}

/** A manifest record: one JSON header line with the media type, then the exact bytes (as the cache's manifest stores keep them). */
export function encodeStoredManifest(manifest: StoredManifest): Buffer {
  return Buffer.concat([Buffer.from(`${JSON.stringify({ mediaType: manifest.mediaType })}\n`), manifest.bytes]);
}

/** A manifest record read back, or undefined when it is damaged (a damaged record is never served: the pusher pushes again). */
export function decodeStoredManifest(raw: Buffer, digest: Digest): StoredManifest | undefined {
  const newline = raw.indexOf(0x0a);
  if (newline < 0) return undefined;
  const bytes = raw.subarray(newline + 1);
  if (digestOf(bytes, digestAlgorithm(digest)) !== digest) return undefined;
  try {
    const { mediaType } = JSON.parse(raw.subarray(0, newline).toString('utf8')) as { mediaType: string };
    return { digest, mediaType, bytes };
  } catch {
    return undefined;
  }
}

export function decodeLocalTag(raw: Buffer): LocalTag | undefined {
  try {
    const saved = JSON.parse(raw.toString('utf8')) as LocalTag;
    return { digest: parseDigest(saved.digest), mediaType: saved.mediaType, platforms: saved.platforms, pushedAt: saved.pushedAt };
  } catch {
    return undefined;
  }
}

export function decodeBlobOrigin(raw: Buffer): BlobOrigin | undefined {
  try {
    const saved = JSON.parse(raw.toString('utf8')) as { upstream: string; repository: string; size?: number };
    return { upstream: saved.upstream, repository: saved.repository, size: saved.size };
  } catch {
    return undefined;
  }
}

async function readOrUndefined(path: string): Promise<Buffer | undefined> {
  try {
    return await readFile(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}
