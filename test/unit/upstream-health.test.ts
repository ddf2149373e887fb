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

describe('upstream health with timeouts.upstreamBackoff', () => {
  it('pauses for the configured first pause, doubling up to 12 times it', () => {
    let now = 0;
    const health = new UpstreamHealth(() => now, 200);
    health.failed('refused');
    now = 199;
    assert.equal(health.down, true);
    now = 201;
    assert.equal(health.down, false, 'the first pause is the configured 200 ms');
    health.failed('refused');
    now += 399;
    assert.equal(health.down, true, 'the second is 400 ms');
    now += 2;
    assert.equal(health.down, false);
    for (let i = 0; i < 10; i++) health.failed('refused');
    now += 2_399;
    assert.equal(health.down, true, 'capped at 12 × 200 ms');
    now += 2;
    assert.equal(health.down, false);
  });
});
