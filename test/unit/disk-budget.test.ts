// The one budget of the cache directory: reservations, eviction order across start-up scans, pins.
import assert from 'node:assert/strict';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import pino from 'pino';
import { DiskBudget } from '../../src/store/disk-budget.ts';
import { tempDir } from '../harness/tmp.ts';

const logger = pino({ level: 'silent' });

async function budgetOver(maxSize: number) {
  const dir = await tempDir('archway-budget-');
  const removed: string[] = [];
  const budget = new DiskBudget({
    dir,
    maxSize,
    logger,
    removeBlob: async (digest) => {
      removed.push(digest);
    },
  });
  return { dir, budget, removed };
}

const blob = (n: number) => `sha256:${String(n).padStart(64, '0')}`;

describe('disk budget', () => {
  it('merges what the start-up scans found by last use: the oldest goes first, whichever scan ended last', async () => {
    const { dir, budget, removed } = await budgetOver(3 * 4096);
    await mkdir(join(dir, 'tags'));
    for (const name of ['old', 'new']) await writeFile(join(dir, 'tags', name), 'x');
    budget.scanning(Promise.resolve());
    // The blob scan ends first with blobs used at t=20 and t=40, the record scan after with tags at t=10 and t=30.
    budget.offer([
      { key: blob(1), size: 4096, usedAt: 20 },
      { key: blob(2), size: 4096, usedAt: 40 },
    ]);
    budget.offer([
      { key: 'tags/old', size: 1, usedAt: 10 },
      { key: 'tags/new', size: 1, usedAt: 30 },
    ]);
    await budget.whenScanned();
    await budget.evict();
    // 16 KiB charged in a 12 KiB budget: the tag used at t=10 is the one to go.
    assert.deepEqual(removed, []);
    assert.deepEqual((await readdir(join(dir, 'tags'))).sort(), ['new']);
    assert.equal(budget.charged, 3 * 4096);
  });

  it('a reservation that cannot be met evicts nothing: what is pinned and reserved already leaves no room', async () => {
    const { budget, removed } = await budgetOver(10);
    budget.set(blob(1), 6);
    budget.pin(blob(1));
    budget.set(blob(2), 2);
    const r = budget.reserve();
    assert.equal(await r.ensure(5), false, '6 pinned + 5 > 10');
    assert.deepEqual(removed, [], 'the unpinned blob was not evicted for nothing');
    assert.equal(await r.ensure(4), true, 'room for 4 is made by evicting the unpinned blob');
    assert.deepEqual(removed, [blob(2)]);
    assert.equal(budget.charged, 10);
    r.release();
    assert.equal(budget.charged, 6);
  });

  it('two reservations never count on the same room', async () => {
    const { budget } = await budgetOver(10);
    const [a, b] = [budget.reserve(), budget.reserve()];
    const [okA, okB] = await Promise.all([a.ensure(6), b.ensure(6)]);
    assert.equal(Number(okA) + Number(okB), 1);
    assert.equal(budget.charged, 6);
  });
});
