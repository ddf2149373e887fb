// ManifestService in-process: tags with a TTL on a test clock, HEAD
// revalidation, stale serving when the upstream fails, manifests by digest,
// and coalesced misses, against a ScriptedUpstream and temp-dir stores.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { RegistryError } from '../../src/errors.ts';
import { ACCEPT_ALL_MANIFESTS, AS_PUBLISHED, type ManifestAnswer } from '../../src/registry/manifest-service.ts';
import type { Digest } from '../../src/oci/digest.ts';
import { InProcessServices } from '../harness/in-process-services.ts';
import { waitFor } from '../harness/process.ts';
import { fetchedManifest, imageManifest, ScriptedUpstream } from '../harness/scripted-upstream.ts';

const TTL_MS = 60_000;
const REVALIDATE_MS = 100;
const REPOSITORY = 'team/app';

describe('manifests in-process', { timeout: 10_000 }, () => {
  let s: InProcessServices;
  let upstream: ScriptedUpstream;

  beforeEach(async () => {
    s = await InProcessServices.start({ tagTtlMs: TTL_MS, revalidateTimeoutMs: REVALIDATE_MS });
    upstream = new ScriptedUpstream();
  });
  afterEach(() => s.close());

  const byTag = (tag = 'latest'): Promise<ManifestAnswer> =>
    s.manifests.get(s.manifests.source(s.route(upstream, REPOSITORY)), { kind: 'tag', tag }, ACCEPT_ALL_MANIFESTS, AS_PUBLISHED);
  const byDigest = (digest: Digest): Promise<ManifestAnswer> =>
    s.manifests.get(s.manifests.source(s.route(upstream, REPOSITORY)), { kind: 'digest', digest }, ACCEPT_ALL_MANIFESTS, AS_PUBLISHED);

  /** A tag answered once and cached, then the clock moved past its TTL. */
  async function cachedThenExpired() {
    const v1 = upstream.tag(REPOSITORY, 'latest', imageManifest([], 'v1'));
    assert.equal((await byTag()).outcome, 'miss');
    s.clock.advance(TTL_MS + 1);
    return v1;
  }

  it('fetches a tag it does not know and stores the manifest and the tag', async () => {
    const v1 = upstream.tag(REPOSITORY, 'latest', imageManifest([], 'v1'));
    const answer = await byTag();
    assert.equal(answer.outcome, 'miss');
    assert.ok(answer.manifest.bytes.equals(v1.bytes));
    assert.equal(answer.manifest.digest, v1.digest);
    assert.equal(upstream.count('getManifest', 'latest'), 1);
    assert.equal((await s.tagStore.get(upstream.name, REPOSITORY, 'latest'))?.digest, v1.digest);
    assert.ok((await s.manifestStore.get(upstream.name, v1.digest))?.bytes.equals(v1.bytes));
  });

  it('answers a tag within its TTL without asking the upstream', async () => {
    const v1 = upstream.tag(REPOSITORY, 'latest', imageManifest([], 'v1'));
    await byTag();
    s.clock.advance(TTL_MS - 1);
    const answer = await byTag();
    assert.equal(answer.outcome, 'hit');
    assert.equal(answer.manifest.digest, v1.digest);
    assert.equal(upstream.calls.length, 1, 'only the first miss went upstream');
  });

  it('revalidates a tag past its TTL with a HEAD, and GETs nothing when the digest is the same', async () => {
    const v1 = await cachedThenExpired();
    const answer = await byTag();
    assert.equal(answer.outcome, 'revalidated');
    assert.equal(answer.manifest.digest, v1.digest);
    assert.equal(upstream.count('headManifest', 'latest'), 1);
    assert.equal(upstream.count('getManifest'), 1, 'no second GET');
    // Revalidated: trusted for another TTL from now.
    assert.equal((await byTag()).outcome, 'hit');
    assert.equal(upstream.calls.length, 2);
  });

  it('GETs the new manifest when the HEAD says the tag moved', async () => {
    await cachedThenExpired();
    const v2 = upstream.tag(REPOSITORY, 'latest', imageManifest([], 'v2'));
    const answer = await byTag();
    assert.equal(answer.outcome, 'miss');
    assert.equal(answer.manifest.digest, v2.digest);
    assert.equal(upstream.count('headManifest', 'latest'), 1);
    assert.equal(upstream.count('getManifest', 'latest'), 2);
    assert.equal((await s.tagStore.get(upstream.name, REPOSITORY, 'latest'))?.digest, v2.digest);
  });

  it('serves the cached tag stale when the upstream answers 503 past the TTL, and counts it', async () => {
    const v1 = await cachedThenExpired();
    upstream.next('headManifest', () => {
      throw upstream.status('headManifest', 503);
    });
    const answer = await byTag();
    assert.equal(answer.outcome, 'stale');
    assert.equal(answer.manifest.digest, v1.digest);
    assert.equal(await s.metric('archway_stale_served_total', { upstream: upstream.name }), 1);
  });

  it('serves the cached tag stale when the revalidation times out, within timeouts.revalidate', async () => {
    const v1 = await cachedThenExpired();
    upstream.next('headManifest', upstream.hang());
    const started = performance.now();
    const answer = await byTag();
    const tookMs = performance.now() - started;
    assert.equal(answer.outcome, 'stale');
    assert.equal(answer.manifest.digest, v1.digest);
    assert.ok(tookMs >= REVALIDATE_MS * 0.9 && tookMs < REVALIDATE_MS + 1000, `stale after the revalidation deadline (${Math.round(tookMs)} ms)`);
    assert.equal(await s.metric('archway_stale_served_total', { upstream: upstream.name }), 1);
  });

  it('serves stale at once, asking nothing, while the upstream is known to be down', async () => {
    const v1 = await cachedThenExpired();
    upstream.health.failed('upstream scripted.example timed out');
    const calls = upstream.calls.length;
    const answer = await byTag();
    assert.equal(answer.outcome, 'stale');
    assert.equal(answer.manifest.digest, v1.digest);
    assert.equal(upstream.calls.length, calls, 'no request to a known-down upstream');
    assert.equal(await s.metric('archway_stale_served_total', { upstream: upstream.name }), 1);
  });

  it('fails a tag it never cached when the upstream fails: nothing to serve stale', async () => {
    upstream.next('getManifest', () => {
      throw upstream.status('getManifest', 503);
    });
    const err = await byTag().then(
      () => assert.fail('expected a failure'),
      (e: unknown) => e,
    );
    assert.ok(err instanceof RegistryError);
    assert.equal(err.code, 'UNAVAILABLE');
    assert.equal(await s.metric('archway_stale_served_total', { upstream: upstream.name }), 0);
  });

  it('keeps a manifest by digest for ever', async () => {
    const m = upstream.tag(REPOSITORY, 'pinned', fetchedManifest({ schemaVersion: 2, note: 'by digest' }));
    assert.equal((await byDigest(m.digest)).outcome, 'miss');
    s.clock.advance(365 * 24 * 3600 * 1000);
    // Even an upstream that is gone does not matter for immutable content.
    upstream.whenever('getManifest', () => {
      throw upstream.status('getManifest', 503);
    });
    const answer = await byDigest(m.digest);
    assert.equal(answer.outcome, 'hit');
    assert.ok(answer.manifest.bytes.equals(m.bytes));
    assert.equal(upstream.count('getManifest'), 1);
    assert.equal(upstream.count('headManifest'), 0);
  });

  it('makes one upstream call for concurrent misses of a tag', async () => {
    const v1 = upstream.tag(REPOSITORY, 'latest', imageManifest([], 'v1'));
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    upstream.next('getManifest', async () => {
      await gate;
      return v1;
    });
    // Every request has looked the tag up (and, finding nothing, joined the flight) before the upstream answers.
    const lookup = s.tagStore.get.bind(s.tagStore);
    let looked = 0;
    s.tagStore.get = async (...args) => {
      const record = await lookup(...args);
      looked++;
      return record;
    };
    const answers = Array.from({ length: 5 }, () => byTag());
    await waitFor(() => looked === 5 && upstream.count('getManifest') === 1, { timeoutMs: 2000, intervalMs: 2, description: 'five lookups and one upstream call' });
    release();
    const outcomes = (await Promise.all(answers)).map((a) => {
      assert.equal(a.manifest.digest, v1.digest);
      return a.outcome;
    });
    assert.deepEqual(outcomes.sort(), ['coalesced', 'coalesced', 'coalesced', 'coalesced', 'miss']);
    assert.equal(upstream.count('getManifest'), 1);
  });

  it('learns the sizes a served manifest gives its blobs (the bound of their bodies), per upstream and repository', async () => {
    const layer = Buffer.from('layer bytes');
    const digest = upstream.blob(layer);
    upstream.tag(REPOSITORY, 'latest', imageManifest([{ digest, size: layer.length }]));
    assert.equal(s.sizes.sizeOf(upstream.name, REPOSITORY, digest), undefined);
    await byTag();
    assert.equal(s.sizes.sizeOf(upstream.name, REPOSITORY, digest), layer.length);
    assert.equal(s.sizes.sizeOf('another.example', REPOSITORY, digest), undefined, 'per upstream');
    // What one repository's manifest says binds no other repository's blobs (anyone may push a manifest).
    assert.equal(s.sizes.sizeOf(upstream.name, 'someone/else', digest), undefined, 'per repository');
  });
});
