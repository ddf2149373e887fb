// cache.scrub on a real filesystem store: a pass re-hashes every blob at no
// more than its rate, removes the damaged one and keeps the rest; stopping
// does not wait for the pass (or the period) to end.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { access, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import pino from 'pino';
import { digestOf, type Digest } from '../../src/oci/digest.ts';
import { BlobScrubber } from '../../src/store/blob-scrubber.ts';
import { blobFilePath, FsBlobStore } from '../../src/store/fs-blob-store.ts';

const KiB = 1024;
const MiB = 1024 * KiB;

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

async function waitFor(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('BlobScrubber', () => {
  let dir: string;
  let store: FsBlobStore;
  const digests: Digest[] = [];
  const lines: Array<{ msg: string; [k: string]: unknown }> = [];
  const logger = pino(
    { level: 'info' },
    new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const line of chunk.toString().split('\n')) if (line) lines.push(JSON.parse(line) as { msg: string });
        done();
      },
    }),
  );
  const damaged: Digest[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'archway-scrub-'));
    store = new FsBlobStore({ dir, maxSize: 2 ** 40, logger, onDamaged: (d) => damaged.push(d) });
    await store.init();
    for (let i = 0; i < 3; i++) {
      const bytes = randomBytes(512 * KiB);
      const digest = digestOf(bytes);
      const path = store.tempPath();
      await writeFile(path, bytes);
      await store.commitFile(path, { digest, size: bytes.length });
      digests.push(digest);
    }
    await store.whenIndexed();
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('re-hashes every blob at no more than its rate and removes the damaged one', async () => {
    const rotten = digests[1] as Digest;
    const file = blobFilePath(dir, rotten);
    const bytes = await readFile(file);
    bytes[7] = (bytes[7] as number) ^ 0x10;
    await writeFile(file, bytes);
    const reads: Array<{ at: number; n: number }> = [];
    const scrubber = new BlobScrubber({ store, periodMs: 1000, bytesPerSecond: 1 * MiB, logger, onBytes: (n) => reads.push({ at: performance.now(), n }) });
    scrubber.start();
    try {
      await waitFor('a pass is done', () => lines.some((l) => l.msg === 'cache scrub pass done'));
    } finally {
      await scrubber.stop();
    }
    const done = lines.find((l) => l.msg === 'cache scrub pass done')!;
    assert.equal(done.checked, 3);
    assert.equal(done.damaged, 1);
    assert.deepEqual(damaged, [rotten]);
    assert.equal(await exists(file), false, 'the damaged file is removed');
    for (const d of [digests[0], digests[2]] as Digest[]) assert.ok(await exists(blobFilePath(dir, d)), 'intact blobs kept');
    const total = reads.reduce((sum, r) => sum + r.n, 0);
    // The two intact blobs whole (the damaged one may be cut before its last chunk is counted).
    assert.ok(total >= 1 * MiB, `${total} bytes read`);
    // At 1 MiB/s, what came after the first chunk cannot have arrived faster than the rate allows
    // (less 20 ms for timer granularity): about a second here, unbounded it takes milliseconds.
    const span = (reads.at(-1)!.at - reads[0]!.at) / 1000;
    const least = (total - reads[0]!.n) / MiB;
    assert.ok(span >= least - 0.02, `read at the rate: ${total} bytes in ${span.toFixed(3)} s (at least ${least.toFixed(3)} s)`);
  });

  it('stops at once, in the middle of a pass', async () => {
    let reading = false;
    const scrubber = new BlobScrubber({ store, periodMs: 1000, bytesPerSecond: 64 * KiB, logger, onBytes: () => (reading = true) });
    scrubber.start();
    await waitFor('the pass reads', () => reading);
    const t = performance.now();
    await scrubber.stop();
    assert.ok(performance.now() - t < 1000, 'stop does not wait for the pass');
  });
});
