// The redis section: one server by URL, or a primary found through Sentinel; exactly one of the two.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseConfig } from '../../src/config/load.ts';
import { redisTarget } from '../../src/coordination/redis.ts';

const minimal = { upstreams: { 'docker.io': { url: 'https://registry-1.docker.io' } }, defaultUpstream: 'docker.io' };

describe('redis configuration', () => {
  it('takes a URL, or sentinels with the master group name', () => {
    const url = parseConfig({ ...minimal, redis: { url: 'redis://redis:6379/0' } });
    assert.equal(redisTarget(url.redis ?? {}), 'redis://redis:6379/0');
    const sentinel = parseConfig({ ...minimal, redis: { sentinels: ['s1:26379', '10.0.0.2:26379'], name: 'archway', password: 'p', fillWait: '30s' } });
    assert.deepEqual(redisTarget(sentinel.redis ?? {}), { sentinels: ['s1:26379', '10.0.0.2:26379'], name: 'archway', password: 'p', sentinelPassword: undefined });
    assert.equal(sentinel.redis?.fillWait, 30_000);
  });

  it('refuses both or neither, sentinels without a name, and sentinel-only keys beside a URL, naming the field', () => {
    assert.throws(() => parseConfig({ ...minimal, redis: { url: 'redis://r:6379', sentinels: ['s:26379'], name: 'a' } }), /redis\.url: give exactly one of redis\.url and redis\.sentinels/);
    assert.throws(() => parseConfig({ ...minimal, redis: { fillWait: '1m' } }), /redis\.url: give exactly one/);
    assert.throws(() => parseConfig({ ...minimal, redis: { sentinels: ['s:26379'] } }), /redis\.name: redis\.sentinels needs redis\.name/);
    assert.throws(() => parseConfig({ ...minimal, redis: { url: 'redis://r:6379', name: 'a' } }), /redis\.name: redis\.name goes with redis\.sentinels/);
    assert.throws(() => parseConfig({ ...minimal, redis: { sentinels: ['s1'], name: 'a' } }), /redis\.sentinels\.0: a sentinel is host:port/);
    assert.throws(() => parseConfig({ ...minimal, redis: { sentinels: [], name: 'a' } }), /redis\.sentinels/);
  });

  it('never shows a password in the error', () => {
    assert.throws(
      () => parseConfig({ ...minimal, redis: { url: 'redis://r:6379', password: 'hunter2-secret' } }),
      (err: Error) => /redis\.password/.test(err.message) && !err.message.includes('hunter2-secret'),
    );
  });
});
