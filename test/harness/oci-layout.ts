// OCI image layout directories (oci-layout, index.json, blobs/sha256/...):
// the on-disk format skopeo reads with `oci:DIR:TAG` and writes when tests
// copy images back out of the proxy.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { digestHex, sha256Digest } from './digest.ts';
import { OCI } from './media-types.ts';

export const REF_NAME = 'org.opencontainers.image.ref.name';

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  /** os, architecture, variant, and any other platform field (`os.version`, `os.features`, `features`). */
  platform?: { os: string; architecture: string; variant?: string } & Record<string, unknown>;
  annotations?: Record<string, string>;
}

interface LayoutIndex {
  schemaVersion: 2;
  mediaType?: string;
  manifests: Descriptor[];
}

export function blobFile(layoutDir: string, digest: string): string {
  return join(layoutDir, 'blobs', 'sha256', digestHex(digest));
}

export async function writeBlob(layoutDir: string, bytes: Buffer): Promise<{ digest: string; size: number; path: string }> {
  const digest = sha256Digest(bytes);
  const path = blobFile(layoutDir, digest);
  await mkdir(join(layoutDir, 'blobs', 'sha256'), { recursive: true });
  await writeFile(path, bytes);
  return { digest, size: bytes.length, path };
}

async function readIndex(layoutDir: string): Promise<LayoutIndex> {
  try {
    return JSON.parse(await readFile(join(layoutDir, 'index.json'), 'utf8')) as LayoutIndex;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { schemaVersion: 2, manifests: [] };
    throw err;
  }
}

/**
 * Points `tag` at the descriptor in the layout's index.json, keeping other
 * tags, so several test images can share one layout directory.
 * Not safe against concurrent writers on the same directory.
 */
export async function tagInLayout(layoutDir: string, descriptor: Descriptor, tag: string): Promise<void> {
  await mkdir(layoutDir, { recursive: true });
  await writeFile(join(layoutDir, 'oci-layout'), JSON.stringify({ imageLayoutVersion: '1.0.0' }));
  const index = await readIndex(layoutDir);
  const others = index.manifests.filter((d) => d.annotations?.[REF_NAME] !== tag);
  const tagged: Descriptor = { ...descriptor, annotations: { ...descriptor.annotations, [REF_NAME]: tag } };
  const next: LayoutIndex = { schemaVersion: 2, mediaType: OCI.index, manifests: [...others, tagged] };
  await writeFile(join(layoutDir, 'index.json'), JSON.stringify(next, null, 2));
}

export async function readLayoutBlob(layoutDir: string, digest: string): Promise<Buffer> {
  return readFile(blobFile(layoutDir, digest));
}

/**
 * The manifest or index a tag points to. Without a tag the layout must hold
 * exactly one entry (what `skopeo copy ... oci:DIR` without a tag writes).
 */
export async function readLayoutTop(
  layoutDir: string,
  tag?: string,
): Promise<{ digest: string; mediaType: string; bytes: Buffer }> {
  const index = await readIndex(layoutDir);
  const candidates =
    tag === undefined ? index.manifests : index.manifests.filter((d) => d.annotations?.[REF_NAME] === tag);
  const [entry, ...rest] = candidates;
  if (!entry || rest.length > 0) {
    throw new Error(`${layoutDir}: expected one index.json entry for tag ${tag ?? '(any)'}, found ${candidates.length}`);
  }
  return { digest: entry.digest, mediaType: entry.mediaType, bytes: await readLayoutBlob(layoutDir, entry.digest) };
}
