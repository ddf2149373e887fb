import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { UpstreamHealth } from '../../src/upstream/health.ts';

describe('upstream health', () => {
  it('is down for a while after a failure, longer after each one, up again after a success', () => {
    let now = 0;
    const health = new UpstreamHealth(() => now);
    assert.equal(health.down, false);
    health.failed('refused');
    assert.equal(health.down, true);
    assert.equal(health.lastError, 'refused');
    now = 5_001;
    assert.equal(health.down, false, 'the first pause is 5 s');
    health.failed('refused');
    now += 9_000;
    assert.equal(health.down, true, 'the second pause is 10 s');
    now += 1_001;
    assert.equal(health.down, false);
    for (let i = 0; i < 10; i++) health.failed('refused');
    now += 60_001;
    assert.equal(health.down, false, 'pauses are capped at a minute');
    health.failed('x');
    health.succeeded();
    assert.equal(health.down, false);
  });
});
