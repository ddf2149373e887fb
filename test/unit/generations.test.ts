// The generation holder under a reload: a request keeps the generation it
// began with, a replaced generation is retired (its resources closed) once its
// last hold is released, or at the end of its grace period whatever holds it.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Generations } from '../../src/util/generations.ts';

function holder(graceMs = 60_000) {
  const retired: string[] = [];
  const generations = new Generations<string>(
    'g1',
    async (old) => {
      retired.push(old);
    },
    () => graceMs,
  );
  return { generations, retired };
}

describe('Generations', () => {
  it('gives new holds the new generation while an old hold keeps the old one alive', async () => {
    const { generations, retired } = holder();
    const inFlight = generations.hold();
    const swapped = generations.swap('g2');
    assert.equal(generations.current, 'g2');
    assert.equal(generations.hold().value, 'g2', 'a request after the swap runs under the new generation');
    assert.equal(inFlight.value, 'g1', 'the request in flight keeps its own');
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(retired, [], 'not retired while a request holds it');
    assert.equal(generations.draining, 1);
    inFlight.release();
    await swapped;
    assert.deepEqual(retired, ['g1']);
    assert.equal(generations.draining, 0);
  });

  it('retires a generation nobody holds at once, and only once', async () => {
    const { generations, retired } = holder();
    const h = generations.hold();
    h.release();
    h.release();
    await generations.swap('g2');
    assert.deepEqual(retired, ['g1']);
    await generations.swap('g3');
    assert.deepEqual(retired, ['g1', 'g2']);
  });

  it('keeps a generation for work a request started (retain) past the request', async () => {
    const { generations, retired } = holder();
    const request = generations.hold();
    const releaseJob = request.retain();
    request.release();
    const swapped = generations.swap('g2');
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(retired, [], 'the job still runs under g1');
    releaseJob();
    await swapped;
    assert.deepEqual(retired, ['g1']);
  });

  it('retires a generation still held once its grace period is over', async () => {
    const { generations, retired } = holder(50);
    generations.hold(); // a request that never ends
    const started = performance.now();
    await generations.swap('g2');
    assert.deepEqual(retired, ['g1']);
    assert.ok(performance.now() - started >= 45, 'not before the grace period');
  });

  it('on close retires the current generation and every one still draining', async () => {
    const { generations, retired } = holder(50);
    const old = generations.hold();
    void generations.swap('g2');
    const current = generations.hold();
    setTimeout(() => current.release(), 10);
    await generations.close();
    assert.deepEqual(retired.sort(), ['g1', 'g2'], 'g2 when released, g1 at its grace period');
    old.release();
    assert.throws(() => generations.swap('g3'), /closed/);
  });
});
