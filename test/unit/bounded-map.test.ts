import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, it } from 'node:test';
import { mapLimit, mapLimitSettled } from '../../src/util/bounded-map.ts';

/** A task that records how many run at once. */
function tracker() {
  const t = {
    active: 0,
    peak: 0,
    started: 0,
    async run<R>(value: R, ms: number): Promise<R> {
      t.active++;
      t.started++;
      t.peak = Math.max(t.peak, t.active);
      try {
        await sleep(ms);
        return value;
      } finally {
        t.active--;
      }
    },
  };
  return t;
}

describe('mapLimit', () => {
  it('never runs more than the limit at once, and keeps the order of results', async () => {
    const t = tracker();
    const items = Array.from({ length: 40 }, (_, i) => i);
    const out = await mapLimit(items, 8, (i) => t.run(i * 2, 1 + (i % 5)));
    assert.deepEqual(out, items.map((i) => i * 2));
    assert.equal(t.peak, 8);
  });

  it('uses the limit: 8 tasks of 30 ms in 5 rounds, not 40 of them in sequence nor all at once', async () => {
    const t = tracker();
    const started = performance.now();
    await mapLimit(Array.from({ length: 40 }), 8, () => t.run(undefined, 30));
    const took = performance.now() - started;
    assert.ok(took >= 140 && took < 1000, `${took.toFixed(0)} ms`);
  });

  it('rejects with the first failure, starts nothing after it, and waits for what was running', async () => {
    const t = tracker();
    const err = new Error('boom');
    await assert.rejects(
      mapLimit(Array.from({ length: 40 }, (_, i) => i), 4, async (i) => {
        if (i === 5) throw err;
        return t.run(i, 10);
      }),
      (e: unknown) => e === err,
    );
    assert.equal(t.active, 0, 'nothing still running after the rejection');
    assert.ok(t.started < 10, `${t.started} started`);
  });

  it('an empty list is an empty answer', async () => {
    assert.deepEqual(await mapLimit([], 8, async () => 1), []);
    assert.deepEqual(await mapLimitSettled([], 8, async () => 1), []);
  });
});

describe('mapLimitSettled', () => {
  it('settles every item, as Promise.allSettled does, within the limit', async () => {
    const t = tracker();
    const out = await mapLimitSettled([1, 2, 3, 4, 5], 2, async (i) => {
      if (i % 2 === 0) throw new Error(`no ${i}`);
      return t.run(i, 5);
    });
    assert.deepEqual(
      out.map((r) => (r.status === 'fulfilled' ? r.value : (r.reason as Error).message)),
      [1, 'no 2', 3, 'no 4', 5],
    );
    assert.ok(t.peak <= 2);
  });
});
