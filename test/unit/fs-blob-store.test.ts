import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { FsBlobStore } from '../../src/store/fs-blob-store.ts';
import { blobStoreContract } from '../store/blob-store.contract.ts';

blobStoreContract('filesystem', async ({ maxSize }) => {
  const dir = await mkdtemp(join(tmpdir(), 'archway-fs-store-'));
  const open = async () => {
    const store = new FsBlobStore({ dir, maxSize, logger: pino({ level: 'silent' }) });
    await store.init();
    return store;
  };
  return { store: await open(), reopen: open, cleanup: () => rm(dir, { recursive: true, force: true }) };
});
