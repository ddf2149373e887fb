// The blob fill machinery in-process: BlobService over a FillTable and a
// temp-dir FsBlobStore, against a ScriptedUpstream whose bodies the tests feed
// by hand. What the end-to-end suite proves with real clients, here in
// milliseconds and with every interleaving under the test's control.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { RegistryError } from '../../src/errors.ts';
import type { BlobAnswer } from '../../src/registry/blob-service.ts';
import { Collected, InProcessServices } from '../harness/in-process-services.ts';
import { waitFor } from '../harness/process.ts';
import { deterministicBytes } from '../harness/random.ts';
import { ControlledBody, imageManifest, ScriptedUpstream } from '../harness/scripted-upstream.ts';

const whole = () => undefined;
const soon = (description: string) => ({ timeoutMs: 2000, intervalMs: 2, description });

function body(answer: BlobAnswer): Collected {
  assert.equal(answer.kind, 'body');
  return new Collected(answer.stream);
}

async function failureOf(p: Promise<unknown>): Promise<RegistryError> {
  const err = await p.then(
    () => assert.fail('expected the answer to fail'),
    (e: unknown) => e,
  );
  assert.ok(err instanceof RegistryError, `a RegistryError, not ${String(err)}`);
  return err;
}

describe('blob fills in-process', { timeout: 10_000 }, () => {
  let s: InProcessServices;
  let upstream: ScriptedUpstream;

  beforeEach(async () => {
    s = await InProcessServices.start();
    upstream = new ScriptedUpstream();
  });
  afterEach(async () => {
    await s.close();
  });

  /** The next getBlob answers with a body the test feeds; `size` is its Content-Length (undefined: chunked). */
  function scriptBody(size: number | undefined): ControlledBody {
    const controlled = new ControlledBody();
    upstream.next('getBlob', () => ({ size, body: controlled }));
    return controlled;
  }

  it('coalesces N readers into one upstream download, and every one gets the exact bytes', async () => {
    const bytes = deterministicBytes('coalesce', 300_000);
    const digest = upstream.blob(bytes);
    const controlled = scriptBody(bytes.length);
    const route = s.route(upstream);
    const answers = await Promise.all(Array.from({ length: 6 }, () => s.blobs.get(route, digest, whole)));
    const readers = answers.map(body);
    controlled.send(bytes.subarray(0, 100_000));
    controlled.send(bytes.subarray(100_000));
    controlled.finish();
    for (const reader of readers) assert.ok((await reader.done).equals(bytes));
    assert.equal(upstream.count('getBlob'), 1, 'one download for all six');
    assert.deepEqual(answers.map((a) => a.outcome).sort(), ['coalesced', 'coalesced', 'coalesced', 'coalesced', 'coalesced', 'miss']);
    await s.fills.settled(upstream.name, digest);
    assert.equal((await s.blobStore.stat(digest))?.size, bytes.length, 'cached once verified');
    const again = await s.blobs.get(route, digest, whole);
    assert.equal(again.outcome, 'hit');
    assert.ok((await body(again).done).equals(bytes));
    assert.equal(upstream.count('getBlob'), 1);
  });

  it('gives a reader that joins mid-fill the whole blob from byte 0', async () => {
    const bytes = deterministicBytes('mid-fill', 200_000);
    const digest = upstream.blob(bytes);
    const controlled = scriptBody(bytes.length);
    const route = s.route(upstream);
    const first = body(await s.blobs.get(route, digest, whole));
    controlled.send(bytes.subarray(0, 120_000));
    // All but the last byte received so far: that one waits for more (see the hold test).
    await waitFor(() => first.received === 119_999, soon('the first reader to have what arrived'));
    const late = await s.blobs.get(route, digest, whole);
    assert.equal(late.outcome, 'coalesced');
    const second = body(late);
    await waitFor(() => second.received === 119_999, soon('the late reader to catch up from byte 0'));
    controlled.send(bytes.subarray(120_000));
    controlled.finish();
    assert.ok((await first.done).equals(bytes));
    assert.ok((await second.done).equals(bytes));
    assert.equal(upstream.count('getBlob'), 1);
  });

  it('holds the last byte until the digest is verified', async () => {
    const bytes = deterministicBytes('hold', 50_000);
    const digest = upstream.blob(bytes);
    const controlled = scriptBody(bytes.length);
    const reader = body(await s.blobs.get(s.route(upstream), digest, whole));
    // Every byte is in, but the body has not ended: the fill has not checked the digest yet.
    controlled.send(bytes);
    await waitFor(() => s.fills.get(upstream.name, digest)?.written === bytes.length, soon('the fill to have every byte'));
    await waitFor(() => reader.received >= bytes.length - 1, soon('the reader to have all but the last byte'));
    assert.equal(reader.received, bytes.length - 1, 'the last byte waits for the verdict');
    controlled.finish();
    assert.ok((await reader.done).equals(bytes));
  });

  for (const { name, reason, send } of [
    {
      name: 'a wrong digest',
      reason: 'digest',
      send: (c: ControlledBody, bytes: Buffer) => {
        const wrong = Buffer.from(bytes);
        wrong.writeUInt8(wrong.readUInt8(0) ^ 0xff, 0);
        c.send(wrong);
        c.finish();
      },
    },
    {
      name: 'a short body',
      reason: 'short',
      send: (c: ControlledBody, bytes: Buffer) => {
        c.send(bytes.subarray(0, bytes.length - 1000));
        c.finish();
      },
    },
  ]) {
    it(`fails every reader on ${name}: nothing cached, no temp file left, counted`, async () => {
      const bytes = deterministicBytes(`bad-${reason}`, 80_000);
      const digest = upstream.blob(bytes);
      const controlled = scriptBody(bytes.length);
      const route = s.route(upstream);
      const readers = (await Promise.all([1, 2, 3].map(() => s.blobs.get(route, digest, whole)))).map(body);
      send(controlled, bytes);
      for (const reader of readers) {
        const err = await failureOf(reader.done);
        assert.equal(err.code, 'UNAVAILABLE');
        assert.equal(err.status, 502);
        assert.ok(reader.received < bytes.length, 'no reader holds a complete body');
      }
      await s.fills.settled(upstream.name, digest);
      assert.equal(await s.blobStore.stat(digest), undefined, 'nothing cached');
      assert.deepEqual(await s.tempFiles(), [], 'temp file removed');
      assert.equal(await s.metric('archway_blob_fill_aborts_total', { reason }), 1);
      assert.equal(await s.metric('archway_digest_mismatches_total', { kind: 'blob' }), 1);
      // The next request fetches it again (the scripted blob is good this time).
      const retry = body(await s.blobs.get(route, digest, whole));
      assert.ok((await retry.done).equals(bytes));
      assert.equal(upstream.count('getBlob'), 2);
    });
  }

  it('fails every reader when the upstream resets mid-body, and leaves nothing behind', async () => {
    const bytes = deterministicBytes('reset', 60_000);
    const digest = upstream.blob(bytes);
    const controlled = scriptBody(bytes.length);
    const route = s.route(upstream);
    const readers = (await Promise.all([1, 2].map(() => s.blobs.get(route, digest, whole)))).map(body);
    controlled.send(bytes.subarray(0, 20_000));
    await waitFor(() => readers.every((r) => r.received === 19_999), soon('both readers to have what arrived'));
    controlled.fail();
    for (const reader of readers) {
      const err = await failureOf(reader.done);
      assert.equal(err.code, 'UNAVAILABLE');
      assert.match(err.message, /unreachable \(ECONNRESET\)/);
    }
    await s.fills.settled(upstream.name, digest);
    assert.equal(await s.blobStore.stat(digest), undefined);
    assert.deepEqual(await s.tempFiles(), []);
    assert.equal(s.fills.size, 0, 'no fill left running');
  });

  it('fails every waiting reader with the upstream’s 404, and asks again next time', async () => {
    const digest = upstream.blob(Buffer.from('not there yet'));
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    upstream.next('getBlob', async () => {
      await gate;
      throw upstream.status('getBlob', 404);
    });
    const route = s.route(upstream);
    // Each failure is caught from the start: they all reject at once.
    const failures = [1, 2, 3].map(() => failureOf(s.blobs.get(route, digest, whole)));
    await waitFor(() => upstream.count('getBlob') === 1, soon('the one download to start'));
    release();
    for (const err of await Promise.all(failures)) assert.equal(err.code, 'BLOB_UNKNOWN');
    assert.equal(upstream.count('getBlob'), 1, 'one upstream request for the three');
    assert.equal(s.fills.get(upstream.name, digest), undefined, 'the failed fill is not joinable');
    // The upstream has it now: the next request fetches it.
    assert.equal((await body(await s.blobs.get(route, digest, whole)).done).toString(), 'not there yet');
    assert.equal(upstream.count('getBlob'), 2);
  });

  it('answers a HEAD during a fill from the fill, without asking the upstream', async () => {
    const bytes = deterministicBytes('head-during-fill', 20_000);
    const digest = upstream.blob(bytes);
    const controlled = scriptBody(bytes.length);
    const route = s.route(upstream);
    const reader = body(await s.blobs.get(route, digest, whole));
    const head = await s.blobs.head(route, digest);
    assert.deepEqual(head, { size: bytes.length, outcome: 'coalesced' });
    assert.equal(upstream.count('headBlob'), 0);
    controlled.send(bytes);
    controlled.finish();
    await reader.done;
    await s.fills.settled(upstream.name, digest);
    assert.deepEqual(await s.blobs.head(route, digest), { size: bytes.length, outcome: 'hit' });
    assert.equal(upstream.count('headBlob'), 0);
  });

  it('lets a reader of another repository join a private fill only once the upstream confirms it there', async () => {
    const privateUpstream = new ScriptedUpstream({ name: 'private.example', isolated: true });
    const bytes = deterministicBytes('private', 30_000);
    const digest = privateUpstream.blob(bytes);
    const controlled = new ControlledBody();
    privateUpstream.next('getBlob', () => ({ size: bytes.length, body: controlled }));
    const owner = body(await s.blobs.get(s.route(privateUpstream, 'team/secret'), digest, whole));
    controlled.send(bytes.subarray(0, 10_000));
    await waitFor(() => owner.received === 9_999, soon('the first reader to read a part'));

    // Another repository whose upstream says it does not have the blob: refused, the fill goes on.
    privateUpstream.next('headBlob', () => {
      throw privateUpstream.status('headBlob', 404);
    });
    assert.equal((await failureOf(s.blobs.get(s.route(privateUpstream, 'other/repo'), digest, whole))).code, 'BLOB_UNKNOWN');
    // One that has it: confirmed with a HEAD in that repository, then it joins.
    const joined = await s.blobs.get(s.route(privateUpstream, 'team/also'), digest, whole);
    assert.equal(joined.outcome, 'coalesced');
    assert.deepEqual(
      privateUpstream.calls.filter((c) => c.method === 'headBlob').map((c) => c.repository),
      ['other/repo', 'team/also'],
    );
    const second = body(joined);
    controlled.send(bytes.subarray(10_000));
    controlled.finish();
    assert.ok((await owner.done).equals(bytes));
    assert.ok((await second.done).equals(bytes));
    assert.equal(privateUpstream.count('getBlob'), 1);
  });

  it('lets the others finish when a follower leaves', async () => {
    const bytes = deterministicBytes('leaver', 150_000);
    const digest = upstream.blob(bytes);
    const controlled = scriptBody(bytes.length);
    const route = s.route(upstream);
    const [stay1, leaver, stay2] = (await Promise.all([1, 2, 3].map(() => s.blobs.get(route, digest, whole)))).map(body);
    controlled.send(bytes.subarray(0, 50_000));
    await waitFor(() => leaver!.received === 49_999, soon('the leaver to have read a part'));
    leaver!.stream.destroy();
    controlled.send(bytes.subarray(50_000));
    controlled.finish();
    assert.ok((await stay1!.done).equals(bytes));
    assert.ok((await stay2!.done).equals(bytes));
    assert.ok(leaver!.received < bytes.length);
    await s.fills.settled(upstream.name, digest);
    assert.equal((await s.blobStore.stat(digest))?.size, bytes.length, 'cached all the same');
    assert.equal(await s.metric('archway_blob_fill_aborts_total', { reason: 'unread' }), 0);
  });

  it('never evicts a blob being read: a fill that needs its room is relayed uncached', async () => {
    await s.close();
    s = await InProcessServices.start({ maxSize: 100_000 });
    const route = s.route(upstream);
    const pinnedBytes = deterministicBytes('pinned', 60_000);
    const pinned = upstream.blob(pinnedBytes);
    await body(await s.blobs.get(route, pinned, whole)).done;
    await s.fills.settled(upstream.name, pinned);
    assert.ok(await s.blobStore.stat(pinned), 'the first blob is cached');

    // A hit being read (not read to the end yet) pins the blob.
    const hit = await s.blobs.get(route, pinned, whole);
    assert.equal(hit.outcome, 'hit');
    assert.equal(hit.kind, 'body');

    const newBytes = deterministicBytes('needs-room', 60_000);
    const newcomer = upstream.blob(newBytes);
    const relayed = await s.blobs.get(route, newcomer, whole);
    assert.equal(relayed.kind === 'body' && relayed.uncached, 'no-room');
    assert.ok((await body(relayed).done).equals(newBytes), 'relayed whole');
    await s.fills.settled(upstream.name, newcomer);
    assert.equal(await s.blobStore.stat(newcomer), undefined, 'not cached');
    assert.equal(await s.metric('archway_blob_uncached_relays_total', { reason: 'no-room' }), 1);

    // The pinned blob survived, and its reader gets every byte.
    assert.ok(await s.blobStore.stat(pinned));
    const hitReader = body(hit);
    assert.ok((await hitReader.done).equals(pinnedBytes));
    await waitFor(() => hitReader.stream.closed, soon('the hit to release its file'));

    // Unpinned now: the next fill may evict it.
    const cached = body(await s.blobs.get(route, newcomer, whole));
    assert.ok((await cached.done).equals(newBytes));
    await s.fills.settled(upstream.name, newcomer);
    assert.ok(await s.blobStore.stat(newcomer), 'cached once room could be made');
    assert.equal(await s.blobStore.stat(pinned), undefined, 'the old blob made the room');
  });

  it('cuts a body longer than the size the manifest gave the blob', async () => {
    const bytes = deterministicBytes('too-long', 40_000);
    const digest = upstream.blob(bytes);
    // The manifest archway served names the blob with its true size.
    s.sizes.learn(upstream.name, 'team/app', imageManifest([{ digest, size: bytes.length }]));
    // Chunked: only the descriptor bounds the body.
    const controlled = scriptBody(undefined);
    const reader = body(await s.blobs.get(s.route(upstream), digest, whole));
    controlled.send(bytes);
    controlled.send(Buffer.alloc(10_000));
    const err = await failureOf(reader.done);
    assert.equal(err.status, 502);
    assert.ok(reader.received < bytes.length);
    await waitFor(() => controlled.destroyed, soon('the upstream body to be let go'));
    await s.fills.settled(upstream.name, digest);
    assert.equal(await s.blobStore.stat(digest), undefined);
    assert.equal(await s.metric('archway_blob_fill_aborts_total', { reason: 'too-long' }), 1);
  });

  it('cuts a trickle at the body deadline (timeouts.body), and lets go of the upstream', async () => {
    await s.close();
    s = await InProcessServices.start({ limits: { bodyFloorMs: 150, bodyMinRate: 1024 ** 3 } });
    const bytes = deterministicBytes('trickle', 10_000);
    const digest = upstream.blob(bytes);
    const controlled = scriptBody(bytes.length);
    const reader = body(await s.blobs.get(s.route(upstream), digest, whole));
    controlled.send(bytes.subarray(0, 100));
    const err = await failureOf(reader.done);
    assert.equal(err.status, 502);
    assert.match(err.message, /body too slow/);
    await waitFor(() => controlled.destroyed, soon('the upstream body to be let go'));
    await s.fills.settled(upstream.name, digest);
    assert.equal(await s.metric('archway_blob_fill_aborts_total', { reason: 'deadline' }), 1);
    assert.deepEqual(await s.tempFiles(), []);
  });

  it('stops every fill at shutdown: its readers get UNAVAILABLE and nothing is cached', async () => {
    const bytes = deterministicBytes('shutdown', 10_000);
    const digest = upstream.blob(bytes);
    const controlled = scriptBody(bytes.length);
    const reader = body(await s.blobs.get(s.route(upstream), digest, whole));
    controlled.send(bytes.subarray(0, 5_000));
    await waitFor(() => reader.received === 4_999, soon('the reader to read a part'));
    await s.fills.cancelAll();
    const err = await failureOf(reader.done);
    assert.equal(err.code, 'UNAVAILABLE');
    assert.match(err.message, /shutting down/);
    assert.ok(controlled.destroyed, 'the upstream request was aborted');
    assert.equal(s.fills.size, 0);
    assert.equal(await s.blobStore.stat(digest), undefined);
    assert.deepEqual(await s.tempFiles(), []);
  });

  it('cancels a fill left by its last reader beyond limits.backgroundFills, and lets the one within it finish', async () => {
    await s.close();
    s = await InProcessServices.start({ limits: { backgroundFills: 1 } });
    const route = s.route(upstream);
    const keptBytes = deterministicBytes('background-kept', 30_000);
    const kept = upstream.blob(keptBytes);
    const keptBody = scriptBody(keptBytes.length);
    const keptReader = body(await s.blobs.get(route, kept, whole));
    keptBody.send(keptBytes.subarray(0, 10_000));
    await waitFor(() => keptReader.received === 9_999, soon('the first reader to read a part'));
    keptReader.stream.destroy();
    await waitFor(async () => (await s.metric('archway_blob_fills_background')) === 1, soon('the first fill to go on in the background'));

    const extraBytes = deterministicBytes('background-extra', 30_000);
    const extra = upstream.blob(extraBytes);
    const extraBody = scriptBody(extraBytes.length);
    const extraReader = body(await s.blobs.get(route, extra, whole));
    extraBody.send(extraBytes.subarray(0, 10_000));
    await waitFor(() => extraReader.received === 9_999, soon('the second reader to read a part'));
    extraReader.stream.destroy();
    await waitFor(() => extraBody.destroyed, soon('the extra fill to let go of its upstream body'));
    await s.fills.settled(upstream.name, extra);
    assert.equal(await s.metric('archway_blob_fill_aborts_total', { reason: 'unread' }), 1);
    assert.equal(await s.blobStore.stat(extra), undefined, 'the extra fill cached nothing');
    assert.equal((await s.tempFiles()).length, 1, "only the kept fill's temp file is left");

    keptBody.send(keptBytes.subarray(10_000));
    keptBody.finish();
    await s.fills.settled(upstream.name, kept);
    assert.equal((await s.blobStore.stat(kept))?.size, keptBytes.length, 'the background fill finished and cached the blob');
    assert.equal(await s.metric('archway_blob_fills_background'), 0);
  });
});
