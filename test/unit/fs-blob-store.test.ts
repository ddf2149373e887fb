import { access, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { blobFilePath, FsBlobStore } from '../../src/store/fs-blob-store.ts';
import { blobStoreContract, flipped } from '../store/blob-store.contract.ts';

blobStoreContract('filesystem', async ({ maxSize, onDamaged }) => {
  const dir = await mkdtemp(join(tmpdir(), 'archway-fs-store-'));
  const open = async () => {
    const store = new FsBlobStore({ dir, maxSize, logger: pino({ level: 'silent' }), onDamaged });
    await store.init();
    return store;
  };
  return {
    store: await open(),
    reopen: open,
    damage: async (digest) => writeFile(blobFilePath(dir, digest), flipped(await readFile(blobFilePath(dir, digest)))),
    stored: (digest) => access(blobFilePath(dir, digest)).then(
      () => true,
      () => false,
    ),
    cleanup: () => rm(dir, { recursive: true, force: true }),
  };
});
