// The cluster-events bus over a real redis-server: the contract every bus
// keeps, run between three "replicas" (each its own connections, as three
// archway processes have); what another publisher puts on the channel is
// parsed, not trusted; a restart of Redis is a gap each subscriber is told
// of, and events flow again after it; publishing while Redis is away still
// runs this replica's handlers and throws nothing.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import type { Redis } from 'ioredis';
import pino from 'pino';
import { connectRedis, keyPrefix } from '../../src/coordination/redis.ts';
import { RedisClusterEvents } from '../../src/coordination/redis-events.ts';
import type { ClusterEventMap } from '../../src/store/cluster-events.ts';
import { waitFor } from '../harness/process.ts';
import { startRedis, type RedisHandle } from '../harness/redis.ts';
import { clusterEventsContract, SAMPLE } from '../store/cluster-events.contract.ts';

const logger = pino({ level: 'silent' });
let server: RedisHandle;
const opened: Array<{ redis: Redis; bus: RedisClusterEvents }> = [];
let namespaces = 0;

/**
 * `count` replicas' buses on one fresh channel (each test its own, so no test hears
 * another's events), their handler failures counted from what they log.
 */
async function replicas(count: number, onError: () => void = () => {}): Promise<{ buses: RedisClusterEvents[]; channel: string; raw: Redis }> {
  const namespace = `events-${namespaces++}`;
  const channel = `${keyPrefix(namespace)}events`;
  const errorLog = pino({ level: 'error' }, { write: (line: string) => void (/cluster event handler failed/.test(line) && onError()) });
  const buses: RedisClusterEvents[] = [];
  let raw: Redis | undefined;
  for (let i = 0; i < count; i++) {
    const redis = await connectRedis(server.url, logger, namespace);
    const bus = new RedisClusterEvents(redis, channel, errorLog);
    opened.push({ redis, bus });
    buses.push(bus);
    raw = redis;
  }
  assert.ok(raw);
  const probe = raw;
  // Each subscriber connection subscribes once ready: wait until Redis counts them all.
  await waitFor(
    async () => {
      const [, n] = (await probe.call('PUBSUB', 'NUMSUB', channel)) as [string, number];
      return n === count;
    },
    { timeoutMs: 5000, description: 'every bus subscribed' },
  );
  return { buses, channel, raw };
}

before(async () => {
  server = await startRedis();
});

after(async () => {
  for (const { redis, bus } of opened) {
    await bus.close();
    redis.disconnect();
  }
  await server?.stop();
});

clusterEventsContract('Redis pub/sub between three replicas', async () => {
  const handlerErrors: unknown[] = [];
  const { buses } = await replicas(3, () => handlerErrors.push('logged'));
  return { buses, handlerErrors };
});

describe('cluster events over Redis', () => {
  it('ignores what does not fit on the channel: garbage, unknown kinds, bad shapes', async () => {
    const { buses: [a, b], channel, raw } = await replicas(2);
    assert.ok(a && b);
    const heard: Array<ClusterEventMap['purge']> = [];
    b.subscribe('purge', (e) => heard.push(e));
    for (const message of ['not json', 'null', '{"from":"x","kind":"reboot","event":{}}', JSON.stringify({ from: 'x', kind: 'purge', event: { ...SAMPLE, manifests: ['sha256:zz'] } })]) {
      await raw.publish(channel, message);
    }
    // Then a good one: once it is heard, the bad ones before it were handled (in order) and dropped.
    await a.publish('purge', SAMPLE);
    await waitFor(() => heard.length >= 1, { timeoutMs: 5000, description: 'the good event' });
    assert.deepEqual(heard, [SAMPLE]);
  });

  it('a Redis restart is a gap each subscriber is told of; events flow again after it; publishing meanwhile throws nothing', async () => {
    const {
      buses: [a, b],
    } = await replicas(2);
    assert.ok(a && b);
    let gaps = 0;
    b.onGap(() => gaps++);
    const heardA: boolean[] = [];
    const heardB: Array<ClusterEventMap['purge']> = [];
    a.subscribe('purge', (_e, origin) => heardA.push(origin.self));
    b.subscribe('purge', (e) => heardB.push(e));
    await server.stop();
    await a.publish('purge', SAMPLE); // Redis away: logged, not thrown; a's own handlers still ran
    assert.deepEqual(heardA, [true]);
    await server.start();
    await waitFor(() => gaps === 1, { timeoutMs: 10_000, description: 'B told of the gap once subscribed again' });
    assert.deepEqual(heardB, [], 'what was published while Redis was away is not delivered later');
    await waitFor(async () => {
      await a.publish('purge', SAMPLE);
      return heardB.length > 0;
    }, { timeoutMs: 10_000, description: 'events flowing again' });
    assert.equal(gaps, 1);
  });
});
