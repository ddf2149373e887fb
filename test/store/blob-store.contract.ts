// The contract every BlobStore keeps, written once and run against each
// implementation (the filesystem store now; an object store later).
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { describe, it } from 'node:test';
import { digestOf, type Digest } from '../../src/oci/digest.ts';
import type { BlobStore } from '../../src/store/blob-store.ts';

export interface StoreFixture {
  store: BlobStore;
  /** Change one byte of the stored copy behind the store's back (disk rot, a hand edit); its size stays. */
  damage(digest: Digest): Promise<void>;
  /** Whether the stored copy is still there (asked of the storage, not the store). */
  stored(digest: Digest): Promise<boolean>;
  /** A new store over the same storage, as after a restart. */
  reopen(): Promise<BlobStore>;
  cleanup(): Promise<void>;
}

async function readAll(stream: NodeJS.ReadableStream): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

async function put(store: BlobStore, bytes: Buffer): Promise<Digest> {
  const digest = digestOf(bytes);
  const path = store.tempPath();
  await writeFile(path, bytes);
  await store.commitFile(path, { digest, size: bytes.length });
  return digest;
}

/** Flip one byte in the middle: what `damage` does to a stored copy. */
export function flipped(bytes: Buffer): Buffer {
  const copy = Buffer.from(bytes);
  const at = Math.floor(copy.length / 2);
  copy[at] = (copy[at] as number) ^ 0x01;
  return copy;
}

async function readChecked(stream: NodeJS.ReadableStream): Promise<{ bytes: number; error?: unknown }> {
  let bytes = 0;
  try {
    for await (const c of stream) bytes += (c as Buffer).length;
    return { bytes };
  } catch (error) {
    return { bytes, error };
  }
}

async function eventually(check: () => Promise<boolean>): Promise<boolean> {
  for (let i = 0; i < 100; i++) {
    if (await check()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return check();
}

export function blobStoreContract(name: string, make: (opts: { maxSize: number; onDamaged?: (digest: Digest) => void }) => Promise<StoreFixture>): void {
  describe(`BlobStore contract: ${name}`, () => {
    it('a committed blob can be stated, read whole and read by range', async () => {
      const f = await make({ maxSize: 1 << 30 });
      try {
        const bytes = Buffer.from('0123456789abcdef');
        const digest = await put(f.store, bytes);
        assert.deepEqual(await f.store.stat(digest), { digest, size: 16 });
        const whole = await f.store.open(digest);
        assert.equal(whole?.size, 16);
        assert.ok((await readAll(whole!.stream)).equals(bytes));
        const part = await f.store.open(digest, { start: 4, end: 7 });
        assert.equal((await readAll(part!.stream)).toString(), '4567');
      } finally {
        await f.cleanup();
      }
    });

    it('an unknown blob is undefined, not an error', async () => {
      const f = await make({ maxSize: 1 << 30 });
      try {
        const digest = digestOf(Buffer.from('nope'));
        assert.equal(await f.store.stat(digest), undefined);
        assert.equal(await f.store.open(digest), undefined);
        assert.equal(await f.store.delete(digest), false);
      } finally {
        await f.cleanup();
      }
    });

    it('lists, counts, deletes, and keeps its content across a reopen', async () => {
      const f = await make({ maxSize: 1 << 30 });
      try {
        const a = await put(f.store, Buffer.from('a'.repeat(100)));
        const b = await put(f.store, Buffer.from('b'.repeat(50)));
        assert.deepEqual(f.store.usage(), { bytes: 150, count: 2 });
        const listed: string[] = [];
        for await (const info of f.store.list()) listed.push(info.digest);
        assert.deepEqual(listed.sort(), [a, b].sort());
        assert.equal(await f.store.delete(a), true);
        assert.equal(await f.store.stat(a), undefined);
        const again = await f.reopen();
        // Lookups answer at once after a reopen; the listing waits for the whole index.
        assert.deepEqual(await again.stat(b), { digest: b, size: 50 });
        assert.equal(await again.stat(a), undefined);
        const relisted: string[] = [];
        for await (const info of again.list()) relisted.push(info.digest);
        assert.deepEqual(relisted, [b]);
        assert.deepEqual(again.usage(), { bytes: 50, count: 1 });
      } finally {
        await f.cleanup();
      }
    });

    it('evicts least recently used blobs above maxSize, never one that is open, and never goes above it', async () => {
      const f = await make({ maxSize: 250 });
      try {
        const a = await put(f.store, Buffer.alloc(100, 1));
        const b = await put(f.store, Buffer.alloc(100, 2));
        const reading = await f.store.open(a); // a is in use from now on
        await readAll((await f.store.open(b))!.stream); // b is used after a: a is the least recently used
        const c = await put(f.store, Buffer.alloc(100, 3));
        assert.ok(await f.store.stat(a), 'the least recently used blob is kept while it is open');
        assert.equal(await f.store.stat(b), undefined, 'the least recently used one not open is evicted instead');
        assert.ok(await f.store.stat(c));
        assert.equal(await f.store.delete(a), false, 'an open blob is not deleted');
        const alsoReading = await f.store.open(c);
        // a and c are open: the only blob that can make room is the one just committed.
        await put(f.store, Buffer.alloc(100, 4));
        assert.ok(f.store.usage().bytes <= 250, `never above the budget: ${f.store.usage().bytes}`);
        assert.ok(await f.store.stat(a), 'still open, still kept');
        assert.ok(await f.store.stat(c), 'still open, still kept');
        await readAll(reading!.stream);
        await readAll(alsoReading!.stream);
        // Closed, a is the least recently used again: the next commit evicts it.
        const e = await put(f.store, Buffer.alloc(100, 5));
        assert.ok(await eventually(async () => (await f.store.stat(a)) === undefined), 'a evicted once its read is over');
        assert.ok(await f.store.stat(c));
        assert.ok(await f.store.stat(e));
        assert.ok(f.store.usage().bytes <= 250);
      } finally {
        await f.cleanup();
      }
    });

    it('a damaged copy is cut before its last byte, every read of it too, and removed; then it is a miss', async () => {
      const damaged: Digest[] = [];
      const f = await make({ maxSize: 1 << 30, onDamaged: (d) => damaged.push(d) });
      try {
        const bytes = Buffer.alloc(700_000, 7);
        const digest = await put(f.store, bytes);
        await f.damage(digest);
        // Two reads at once, both not verified in this process: neither ends cleanly.
        const [a, b] = await Promise.all([f.store.open(digest), f.store.open(digest)]);
        const [ra, rb] = await Promise.all([readChecked(a!.stream), readChecked(b!.stream)]);
        for (const r of [ra, rb]) {
          assert.ok(r.error, 'ends in an error, never a clean end');
          assert.ok(r.bytes < bytes.length, `short: ${r.bytes} of ${bytes.length}`);
        }
        assert.deepEqual(damaged, [digest], 'reported once');
        assert.ok(await eventually(async () => !(await f.stored(digest))), 'the copy is removed');
        assert.equal(await f.store.stat(digest), undefined);
        assert.equal(await f.store.open(digest), undefined);
      } finally {
        await f.cleanup();
      }
    });

    it('a range of a copy not verified yet is checked whole first: damaged, it is a miss and removed', async () => {
      const damaged: Digest[] = [];
      const f = await make({ maxSize: 1 << 30, onDamaged: (d) => damaged.push(d) });
      try {
        const digest = await put(f.store, Buffer.from('0123456789abcdef'.repeat(1000)));
        await f.damage(digest);
        assert.equal(await f.store.open(digest, { start: 0, end: 9 }), undefined);
        assert.deepEqual(damaged, [digest]);
        assert.ok(await eventually(async () => !(await f.stored(digest))));
        // An intact one: the range is served.
        const good = await put(f.store, Buffer.from('fedcba9876543210'.repeat(1000)));
        const part = await f.store.open(good, { start: 2, end: 5 });
        assert.equal((await readAll(part!.stream)).toString(), 'dcba');
      } finally {
        await f.cleanup();
      }
    });

    it('verify finds intact and damaged copies, removes the damaged, and leaves the LRU order alone', async () => {
      const f = await make({ maxSize: 250 });
      try {
        const a = await put(f.store, Buffer.alloc(100, 1));
        const b = await put(f.store, Buffer.alloc(100, 2));
        assert.equal(await f.store.verify(a), 'intact');
        // Verifying a is no use of it: a is still the least recently used.
        await put(f.store, Buffer.alloc(100, 3));
        assert.equal(await f.store.stat(a), undefined, 'a evicted, verify did not count as a use');
        assert.ok(await f.store.stat(b));
        await f.damage(b);
        assert.equal(await f.store.verify(b), 'damaged');
        assert.ok(await eventually(async () => !(await f.stored(b))));
        assert.equal(await f.store.verify(b), 'gone');
      } finally {
        await f.cleanup();
      }
    });
  });
}
