import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LruIndex } from '../../src/store/lru-index.ts';

describe('LRU index', () => {
  it('evicts least recently used first, down to the limit', () => {
    const lru = new LruIndex<string>();
    lru.set('a', 10);
    lru.set('b', 10);
    lru.set('c', 10);
    lru.touch('a');
    assert.deepEqual(lru.evict(15).map((e) => e.key), ['b', 'c']);
    assert.equal(lru.bytes, 10);
    assert.ok(lru.has('a'));
  });

  it('never evicts a pinned entry, and evicts it once released', () => {
    const lru = new LruIndex<string>();
    lru.set('a', 10);
    lru.set('b', 10);
    lru.pin('a');
    lru.pin('a');
    assert.deepEqual(lru.evict(5).map((e) => e.key), ['b']);
    assert.equal(lru.bytes, 10, 'the pinned entry stays even above the limit');
    lru.unpin('a');
    assert.deepEqual(lru.evict(5), [], 'still pinned once');
    lru.unpin('a');
    assert.deepEqual(lru.evict(5).map((e) => e.key), ['a']);
    assert.equal(lru.bytes, 0);
  });

  it('replacing an entry keeps the total right', () => {
    const lru = new LruIndex<string>();
    lru.set('a', 10);
    lru.set('a', 4);
    assert.equal(lru.bytes, 4);
    assert.equal(lru.count, 1);
    assert.ok(lru.delete('a'));
    assert.equal(lru.bytes, 0);
  });
});
