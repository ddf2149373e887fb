// The contract every ClusterEvents bus keeps, written once and run against each
// implementation: in one process (test/unit/cluster-events.test.ts) and over
// Redis pub/sub between replicas (test/e2e/cluster-events.test.ts).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Digest } from '../../src/oci/digest.ts';
import type { ClusterEventMap, ClusterEvents } from '../../src/store/cluster-events.ts';
import { waitFor } from '../harness/process.ts';

export interface BusFixture {
  /** One bus per replica: all of them for a shared implementation, a single one otherwise. */
  buses: ClusterEvents[];
  /** Handler failures reported by the bus, from every replica. */
  handlerErrors: unknown[];
}

export const SAMPLE: ClusterEventMap['purge'] = {
  upstream: 'docker.io',
  repository: 'library/alpine',
  tags: ['3.20'],
  manifests: [`sha256:${'b'.repeat(64)}` as Digest],
};

export function clusterEventsContract(name: string, make: () => Promise<BusFixture>): void {
  describe(`ClusterEvents contract: ${name}`, () => {
    it('the publishing replica’s handlers run before publish resolves, marked as its own', async () => {
      const { buses } = await make();
      const [first] = buses;
      assert.ok(first);
      const heard: Array<{ event: ClusterEventMap['purge']; self: boolean }> = [];
      first.subscribe('purge', (event, origin) => heard.push({ event, self: origin.self }));
      await first.publish('purge', SAMPLE);
      assert.deepEqual(heard, [{ event: SAMPLE, self: true }]);
    });

    it('every other replica hears it once, as another’s, with the same content', async () => {
      const { buses } = await make();
      const heard = buses.map(() => [] as Array<{ event: ClusterEventMap['purge']; self: boolean }>);
      buses.forEach((bus, i) => bus.subscribe('purge', (event, origin) => heard[i]?.push({ event, self: origin.self })));
      await buses[0]?.publish('purge', SAMPLE);
      await waitFor(() => heard.every((h) => h.length >= 1), { timeoutMs: 5000, description: 'every replica hearing the event' });
      heard.forEach((h, i) => assert.deepEqual(h, [{ event: SAMPLE, self: i === 0 }], `replica ${i}`));
      assert.equal(buses[0]?.shared, buses.length > 1);
    });

    it('a handler that throws is reported and does not stop the others; unsubscribed handlers hear nothing', async () => {
      const { buses, handlerErrors } = await make();
      const last = buses.at(-1);
      assert.ok(last);
      let heard = 0;
      let dropped = 0;
      last.subscribe('purge', () => {
        throw new Error('broken handler');
      });
      last.subscribe('purge', () => heard++);
      const off = last.subscribe('purge', () => dropped++);
      off();
      await buses[0]?.publish('purge', SAMPLE);
      await waitFor(() => heard === 1, { timeoutMs: 5000, description: 'the handler after the broken one' });
      assert.equal(dropped, 0);
      assert.equal(handlerErrors.length, 1);
    });
  });
}
