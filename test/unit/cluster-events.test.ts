// The cluster-events bus: handlers by kind, this replica's events marked as its own,
// a failing handler isolated, and what arrives from other replicas parsed, never trusted.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CLUSTER_EVENT_SCHEMAS, isClusterEventKind } from '../../src/coordination/cluster-event-schemas.ts';
import type { Digest } from '../../src/oci/digest.ts';
import { CacheInventory } from '../../src/admin/cache-inventory.ts';
import type { BlobStore } from '../../src/store/blob-store.ts';
import { ClusterEventHandlers, LocalClusterEvents, type ClusterEventHandler, type ClusterEventKind, type ClusterEventMap, type ClusterEvents } from '../../src/store/cluster-events.ts';
import type { ManifestStore } from '../../src/store/manifest-store.ts';
import type { TagStore } from '../../src/store/tag-store.ts';
import { clusterEventsContract } from '../store/cluster-events.contract.ts';

clusterEventsContract('in one process', async () => {
  const handlerErrors: unknown[] = [];
  return { buses: [new LocalClusterEvents((err) => handlerErrors.push(err))], handlerErrors };
});

const DIGEST = `sha256:${'a'.repeat(64)}` as Digest;
const purge: ClusterEventMap['purge'] = { upstream: 'docker.io', repository: 'library/alpine', tags: ['3'], manifests: [DIGEST] };

describe('cluster events', () => {
  it('parses events from other replicas: a known kind with the right shape, digests validated', () => {
    assert.ok(isClusterEventKind('purge'));
    assert.ok(!isClusterEventKind('reload-everything'), 'a kind from a newer archway is ignored');
    assert.ok(!isClusterEventKind('toString'), 'not a prototype key');
    assert.deepEqual(CLUSTER_EVENT_SCHEMAS.purge.parse(JSON.parse(JSON.stringify(purge))), purge);
    assert.equal(CLUSTER_EVENT_SCHEMAS.purge.safeParse({ ...purge, manifests: ['sha256:nothex'] }).success, false);
    assert.equal(CLUSTER_EVENT_SCHEMAS.purge.safeParse({ ...purge, tags: 'x' }).success, false);
    assert.equal(CLUSTER_EVENT_SCHEMAS.purge.safeParse(null).success, false);
  });
});

/** A bus whose deliveries and gaps the test makes happen, as Redis would from other replicas. */
class SteeredBus implements ClusterEvents {
  readonly shared = true;
  readonly handlers = new ClusterEventHandlers((err) => assert.fail(String(err)));
  async publish<K extends ClusterEventKind>(kind: K, event: ClusterEventMap[K]): Promise<void> {
    this.handlers.deliver(kind, event, { self: true });
  }
  subscribe<K extends ClusterEventKind>(kind: K, handler: ClusterEventHandler<K>): () => void {
    return this.handlers.add(kind, handler);
  }
  onGap(handler: () => void): () => void {
    return this.handlers.addGap(handler);
  }
  async close(): Promise<void> {}
}

describe('cache inventory following other replicas', () => {
  it('deletes what another replica purged, not its own purges again, and drops every copy in memory after a gap', async () => {
    const deleted: string[] = [];
    let forgotten = 0;
    const manifests: ManifestStore = {
      init: async () => {},
      get: async () => undefined,
      put: async () => {},
      delete: async (upstream, digest) => (deleted.push(`${upstream} ${digest}`), true),
      list: async function* () {},
      forgetCopies: () => void forgotten++,
    };
    const bus = new SteeredBus();
    // followPurges uses the manifests and the bus only.
    const inventory = new CacheInventory({} as BlobStore, manifests, {} as TagStore, bus);
    const stop = inventory.followPurges((err) => assert.fail(String(err)));
    bus.handlers.deliver('purge', purge, { self: true });
    bus.handlers.deliver('purge', purge, { self: false });
    await new Promise((resolve) => setImmediate(resolve));
    assert.deepEqual(deleted, [`docker.io ${DIGEST}`], 'only the other replica’s purge is applied here');
    assert.equal(forgotten, 0);
    bus.handlers.gap();
    assert.equal(forgotten, 1, 'a gap drops the copies a missed purge would have dropped');
    stop();
    bus.handlers.gap();
    bus.handlers.deliver('purge', purge, { self: false });
    await new Promise((resolve) => setImmediate(resolve));
    assert.equal(forgotten, 1, 'unsubscribed');
    assert.equal(deleted.length, 1);
  });
});
