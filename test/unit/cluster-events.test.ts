// The cluster-events bus: handlers by kind, this replica's events marked as its own,
// a failing handler isolated, and what arrives from other replicas parsed, never trusted.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CLUSTER_EVENT_SCHEMAS, isClusterEventKind } from '../../src/coordination/cluster-event-schemas.ts';
import type { Digest } from '../../src/oci/digest.ts';
import { LocalClusterEvents, type ClusterEventMap } from '../../src/store/cluster-events.ts';

const DIGEST = `sha256:${'a'.repeat(64)}` as Digest;
const purge: ClusterEventMap['purge'] = { upstream: 'docker.io', repository: 'library/alpine', tags: ['3'], manifests: [DIGEST] };

describe('cluster events', () => {
  it('in one process: every subscriber of the kind hears it at once, as its own; unsubscribing stops it', async () => {
    const errors: unknown[] = [];
    const bus = new LocalClusterEvents((err) => errors.push(err));
    const heard: Array<[string, boolean]> = [];
    const off = bus.subscribe('purge', (e, origin) => heard.push([e.repository, origin.self]));
    bus.subscribe('purge', () => {
      throw new Error('a broken handler');
    });
    bus.subscribe('purge', (e) => heard.push([`second ${e.tags.join()}`, true]));
    await bus.publish('purge', purge);
    assert.deepEqual(heard, [['library/alpine', true], ['second 3', true]], 'the broken handler did not stop the next');
    assert.equal(errors.length, 1);
    off();
    await bus.publish('purge', purge);
    assert.equal(heard.length, 3);
    assert.equal(bus.shared, false);
  });

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
