// The filesystem store indexes a big cache in the background: lookups work
// from the moment init() returns, and the scan never overrides what happened
// while it ran (a delete, a lookup, a commit).
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { digestOf, type Digest } from '../../src/oci/digest.ts';
import { FsBlobStore } from '../../src/store/fs-blob-store.ts';

const BLOBS = 2000;
const logger = pino({ level: 'silent' });

async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

describe('FsBlobStore start-up scan', () => {
  let dir: string;
  const blobs: Array<{ digest: Digest; bytes: Buffer }> = [];
  let totalBytes = 0;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'archway-scan-'));
    const store = new FsBlobStore({ dir, maxSize: Number.MAX_SAFE_INTEGER, logger });
    await store.init();
    for (let i = 0; i < BLOBS; i++) {
      const bytes = Buffer.from(`blob ${i} `.repeat(1 + (i % 7)));
      const digest = digestOf(bytes);
      const path = store.tempPath();
      await writeFile(path, bytes);
      await store.commitFile(path, { digest, size: bytes.length });
      blobs.push({ digest, bytes });
      totalBytes += bytes.length;
    }
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const reopen = async (maxSize = Number.MAX_SAFE_INTEGER) => {
    const store = new FsBlobStore({ dir, maxSize, logger });
    await store.init();
    return store;
  };

  it('answers lookups and reads before the index is built, without counting anything twice', async () => {
    const store = await reopen();
    assert.equal(store.usage().count, 0, 'init returned before the scan indexed anything');
    const probe = blobs[BLOBS - 1]!;
    assert.deepEqual(await store.stat(probe.digest), { digest: probe.digest, size: probe.bytes.length });
    const read = await store.open(blobs[0]!.digest);
    assert.ok(read && (await readAll(read.stream)).equals(blobs[0]!.bytes));
    assert.equal(await store.stat(digestOf(Buffer.from('never stored'))), undefined);
    await store.whenIndexed();
    assert.deepEqual(store.usage(), { bytes: totalBytes, count: BLOBS });
  });

  it('does not bring back a blob deleted while the scan ran', async () => {
    const store = await reopen();
    const victim = blobs[7]!;
    assert.equal(await store.delete(victim.digest), true);
    const listed = new Set<string>();
    for await (const info of store.list()) listed.add(info.digest);
    assert.equal(listed.size, BLOBS - 1);
    assert.ok(!listed.has(victim.digest));
    assert.equal(await store.stat(victim.digest), undefined);
    // Put it back for the other tests.
    const path = store.tempPath();
    await writeFile(path, victim.bytes);
    await store.commitFile(path, { digest: victim.digest, size: victim.bytes.length });
  });

  it('shrinks to maxSize once indexed, keeping the blobs looked up during the scan', async () => {
    const store = await reopen(totalBytes);
    const looked = blobs.slice(0, 20).map((b) => b.digest);
    for (const d of looked) assert.ok(await store.stat(d));
    await store.whenIndexed();
    assert.equal(store.usage().count, BLOBS, 'at the limit exactly: nothing evicted');

    const small = await reopen(1000);
    for (const d of looked) assert.ok(await small.stat(d));
    await small.whenIndexed();
    assert.ok(small.usage().bytes <= 1000, `usage ${small.usage().bytes} ≤ 1000`);
    for (const d of looked) assert.ok(await small.stat(d), 'looked up during the scan: most recently used, kept');
  });
});

describe('FsBlobStore start-up scan with strays', () => {
  it('indexes and evicts around files that are not blobs (a .keep in a directory of directories)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'archway-scan-stray-'));
    try {
      const first = new FsBlobStore({ dir, maxSize: Number.MAX_SAFE_INTEGER, logger });
      await first.init();
      for (let i = 0; i < 5; i++) {
        const bytes = Buffer.alloc(60, i);
        const path = first.tempPath();
        await writeFile(path, bytes);
        await first.commitFile(path, { digest: digestOf(bytes), size: 60 });
      }
      await writeFile(join(dir, 'blobs', '.keep'), '');
      await writeFile(join(dir, 'blobs', 'sha256', '.keep'), '');
      const second = new FsBlobStore({ dir, maxSize: 100, logger });
      await second.init();
      await second.whenIndexed();
      assert.ok(second.usage().bytes <= 100, `evicted down to maxSize (${second.usage().bytes})`);
      assert.equal(second.usage().count, 1);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
