import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { Config } from '../config/schema.ts';
import { digestAlgorithm } from '../oci/digest.ts';
import { FsBlobStore } from '../store/fs-blob-store.ts';
import { FsManifestStore } from '../store/manifest-store.ts';

export interface VerifyReport {
  blobs: { checked: number; bad: number };
  manifests: { checked: number; bad: number };
  removed: string[];
}

/**
 * `archway cache verify`: re-hash every cached blob and manifest; report and
 * remove any whose bytes no longer match their digest (disk damage, a crash on
 * a filesystem that lost data, a hand edit). Opening the store also removes
 * leftover temp files. Best run while archway is stopped.
 */
export async function verifyCache(config: Readonly<Config>, logger: Logger): Promise<VerifyReport> {
  // maxSize is not enforced here: verifying must not evict.
  const blobs = new FsBlobStore({ dir: config.cache.dir, maxSize: Number.MAX_SAFE_INTEGER, logger });
  await blobs.init();
  const removed: string[] = [];
  let checked = 0;
  let bad = 0;
  for await (const { digest } of blobs.list()) {
    checked++;
    const read = await blobs.open(digest);
    if (!read) continue;
    const hash = createHash(digestAlgorithm(digest));
    for await (const chunk of read.stream) hash.update(chunk as Buffer);
    if (`${digestAlgorithm(digest)}:${hash.digest('hex')}` === digest) continue;
    bad++;
    removed.push(`blob ${digest}`);
    await waitClosed(read.stream);
    await blobs.delete(digest);
  }
  const manifests = new FsManifestStore(config.cache.dir);
  await manifests.init();
  const m = await manifests.verifyAll((upstream, digest) => removed.push(`manifest ${upstream} ${digest}`));
  return { blobs: { checked, bad }, manifests: m, removed };
}

async function waitClosed(stream: NodeJS.ReadableStream & { closed?: boolean; once(event: 'close', fn: () => void): unknown }): Promise<void> {
  if (stream.closed) return;
  await new Promise<void>((resolve) => stream.once('close', resolve));
}
