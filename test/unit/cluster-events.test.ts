// The cluster-events bus: handlers by kind, this replica's events marked as its own,
// a failing handler isolated, and what arrives from other replicas parsed, never trusted.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CLUSTER_EVENT_SCHEMAS, isClusterEventKind } from '../../src/coordination/cluster-event-schemas.ts';
import type { Digest } from '../../src/oci/digest.ts';
import { LocalClusterEvents, type ClusterEventMap } from '../../src/store/cluster-events.ts';
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
