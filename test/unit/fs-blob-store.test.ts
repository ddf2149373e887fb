import assert from 'node:assert/strict';
import { once } from 'node:events';
import { access, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import pino from 'pino';
import { digestOf } from '../../src/oci/digest.ts';
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

describe('filesystem store: room for a fill is made before it writes', () => {
  it('while what is cached is being read there is no room; once the read is over, room is made by evicting it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'archway-fs-store-'));
    try {
      const store = new FsBlobStore({ dir, maxSize: 250, logger: pino({ level: 'silent' }) });
      await store.init();
      const bytes = Buffer.alloc(200, 1);
      const a = digestOf(bytes);
      const path = store.tempPath();
      await writeFile(path, bytes);
      await store.commitFile(path, { digest: a, size: bytes.length });
      const reading = await store.open(a);
      const room = store.reserve();
      assert.equal(await room.ensure(100), false, 'a is open: evicting it is not allowed, so 100 more do not fit');
      assert.equal(room.bytes, 0);
      assert.ok(await store.stat(a), 'the open blob is kept');
      assert.equal(await room.ensure(50), true, '50 fit beside it');
      for await (const _ of reading!.stream);
      // The pin goes when the stream closes, just after its end.
      if (!reading!.stream.closed) await once(reading!.stream, 'close');
      const later = store.reserve();
      assert.equal(await later.ensure(100), true, 'closed, a can go');
      assert.equal(await store.stat(a), undefined, 'a was evicted to make the room');
      later.release();
      room.release();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
