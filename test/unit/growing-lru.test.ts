import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { growingLru } from '../../src/util/growing-lru.ts';

describe('growingLru', () => {
  it('holds at most `entries` entries, evicting the least recently used', () => {
    const cache = growingLru<string, number>(3);
    for (const [k, v] of [['a', 1], ['b', 2], ['c', 3]] as const) cache.set(k, v);
    cache.get('a');
    cache.set('d', 4);
    assert.deepEqual([...cache.keys()].sort(), ['a', 'c', 'd']);
    for (let i = 0; i < 1000; i++) cache.set(`k${i}`, i);
    assert.equal(cache.size, 3);
    assert.deepEqual([...cache.keys()], ['k999', 'k998', 'k997']);
  });

  it('keeps the options it is given (ttl)', async () => {
    const cache = growingLru<string, true>(10, { ttl: 20 });
    cache.set('a', true);
    assert.equal(cache.get('a'), true);
    const deadline = Date.now() + 2000;
    while (cache.get('a') !== undefined) {
      assert.ok(Date.now() < deadline, 'the entry expires');
      await new Promise((r) => setTimeout(r, 10));
    }
  });

  it('allocates nothing up front: a million-entry bound costs no memory before use', () => {
    const before = process.memoryUsage();
    const caches = Array.from({ length: 10 }, () => growingLru<string, number>(1_000_000, { ttl: 60_000 }));
    const after = process.memoryUsage();
    // Preallocated (lru-cache's `max`), these would be hundreds of MiB.
    assert.ok(after.heapUsed + after.arrayBuffers - before.heapUsed - before.arrayBuffers < 16 * 1024 * 1024);
    assert.equal(caches.length, 10);
  });
});
