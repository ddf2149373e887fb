// FileBody: a cached blob written to a real HTTP response through recycled
// buffers. Whole and ranged bytes exact, a file shorter than its recorded
// size cuts the answer, a client hanging up ends the work and closes the file.
// With a check (the first read of a cached blob in a process), a copy whose
// bytes do not hash to the digest is cut before its last byte and reported
// once; a copy condemned while a trusted read runs is cut too.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { createServer, get, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { digestOf, type Digest } from '../../src/oci/digest.ts';
import { BlobTrust } from '../../src/store/blob-trust.ts';
import { FileBody } from '../../src/store/file-body.ts';
import { DamagedBlobError, HashingCheck, TrustedCheck, type ReadCheck } from '../../src/store/read-check.ts';
import { BufferPool } from '../../src/util/buffer-pool.ts';

const CHUNK = 64 * 1024;

interface Served {
  status: number;
  bytes: Buffer;
  /** The response ended cleanly (not cut). */
  complete: boolean;
}

function fetchAll(port: number, path: string, opts: { abortAfter?: number } = {}): Promise<Served> {
  return new Promise((resolve, reject) => {
    const req = get({ host: '127.0.0.1', port, path }, (res) => {
      const chunks: Buffer[] = [];
      let got = 0;
      res.on('data', (c: Buffer) => {
        chunks.push(c);
        got += c.length;
        if (opts.abortAfter !== undefined && got >= opts.abortAfter) req.destroy();
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, bytes: Buffer.concat(chunks), complete: res.complete }));
      res.on('error', () => resolve({ status: res.statusCode ?? 0, bytes: Buffer.concat(chunks), complete: false }));
      res.on('aborted', () => resolve({ status: res.statusCode ?? 0, bytes: Buffer.concat(chunks), complete: false }));
    });
    req.on('error', (err) => (opts.abortAfter !== undefined ? resolve({ status: 0, bytes: Buffer.alloc(0), complete: false }) : reject(err)));
  });
}

/** Wait (up to 2 s) for something the server side does just after the client is done. */
async function eventually(check: () => boolean): Promise<void> {
  for (let i = 0; i < 100 && !check(); i++) await new Promise((r) => setTimeout(r, 20));
}

describe('FileBody', () => {
  let dir: string;
  let file: string;
  const content = randomBytes(5 * CHUNK + 1234);
  const pool = new BufferPool(CHUNK, 8);
  const digest = digestOf(content);
  /** Each request names the file, the range and the size the store believes in, and the check (?check=hash|condemned). */
  const outcomes: Array<{ error?: Error; closed: boolean; verified: number; damaged: DamagedBlobError[] }> = [];
  let server: Server;
  let port: number;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'archway-file-body-'));
    file = join(dir, 'blob');
    await writeFile(file, content);
    server = createServer(async (req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      const start = Number(url.searchParams.get('start') ?? 0);
      const end = Number(url.searchParams.get('end') ?? content.length);
      const outcome: (typeof outcomes)[number] = { closed: false, verified: 0, damaged: [] };
      const onDamaged = (err: DamagedBlobError) => outcome.damaged.push(err);
      const kind = url.searchParams.get('check');
      const check: ReadCheck | undefined =
        kind === 'hash'
          ? new HashingCheck(digest, { condemned: false }, () => outcome.verified++, onDamaged)
          : kind === 'condemned'
            ? new TrustedCheck(digest, { condemned: true }, onDamaged)
            : undefined;
      const body = new FileBody(await open(url.searchParams.get('file') ?? file, 'r'), start, end, pool, check);
      outcomes.push(outcome);
      body.once('close', () => (outcome.closed = true));
      res.writeHead(200, { 'content-length': end - start });
      try {
        await body.writeTo(res);
      } catch (err) {
        outcome.error = err as Error;
        res.destroy();
      }
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as AddressInfo).port;
  });
  after(async () => {
    await new Promise((r) => server.close(r));
    await rm(dir, { recursive: true, force: true });
  });

  it('writes the whole file and a range byte for byte, and takes its buffers back', async () => {
    const whole = await fetchAll(port, '/');
    assert.equal(whole.complete, true);
    assert.ok(whole.bytes.equals(content));
    const ranged = await fetchAll(port, `/?start=${CHUNK - 3}&end=${3 * CHUNK + 5}`);
    assert.ok(ranged.bytes.equals(content.subarray(CHUNK - 3, 3 * CHUNK + 5)));
    assert.equal(pool.idle, 2, 'the two buffers of each answer went back to the pool and were reused');
    // The file handle closes just after the last byte went out: the client may be faster.
    await eventually(() => outcomes.every((o) => o.closed));
    assert.ok(outcomes.every((o) => o.closed && !o.error));
  });

  it('cuts the answer when the file is shorter than its recorded size', async () => {
    const short = join(dir, 'short');
    await writeFile(short, content.subarray(0, 2 * CHUNK + 10));
    const served = await fetchAll(port, `/?file=${encodeURIComponent(short)}&end=${content.length}`);
    assert.equal(served.complete, false, 'never passed off as a complete answer');
    assert.ok(served.bytes.length <= 2 * CHUNK + 10);
    const outcome = outcomes.at(-1)!;
    assert.match(String(outcome.error?.message), /ended at byte/);
    // The cut reaches the client before the handle's close is emitted.
    await eventually(() => outcome.closed);
    assert.equal(outcome.closed, true);
  });

  it('stops and closes the file when the client hangs up mid-body', async () => {
    const before = outcomes.length;
    await fetchAll(port, '/', { abortAfter: CHUNK });
    // The server learns of the hang-up asynchronously.
    await eventually(() => outcomes[before]?.closed === true);
    assert.equal(outcomes[before]?.closed, true, 'file handle closed after the client left');
    assert.equal(outcomes[before]?.error, undefined);
  });

  it('reads as an ordinary stream too', async () => {
    const body = new FileBody(await open(file, 'r'), 10, 3 * CHUNK, pool);
    const chunks: Buffer[] = [];
    for await (const c of body) chunks.push(c as Buffer);
    assert.ok(Buffer.concat(chunks).equals(content.subarray(10, 3 * CHUNK)));
    assert.equal(body.bytesRead, 3 * CHUNK - 10);
  });

  it('with a hashing check: an intact copy is served whole and trusted', async () => {
    const served = await fetchAll(port, '/?check=hash');
    assert.equal(served.complete, true);
    assert.ok(served.bytes.equals(content));
    const outcome = outcomes.at(-1)!;
    await eventually(() => outcome.closed);
    assert.equal(outcome.verified, 1);
    assert.deepEqual(outcome.damaged, []);
  });

  it('with a hashing check: a copy with one byte changed is cut before its last chunk and reported once', async () => {
    const rotten = join(dir, 'rotten');
    const bytes = Buffer.from(content);
    bytes[3 * CHUNK] = (bytes[3 * CHUNK] as number) ^ 0x80;
    await writeFile(rotten, bytes);
    const served = await fetchAll(port, `/?check=hash&file=${encodeURIComponent(rotten)}`);
    assert.equal(served.complete, false, 'never passed off as a complete answer');
    // The last chunk (1234 bytes past the last whole one) is what is held back.
    assert.ok(served.bytes.length <= 5 * CHUNK, `held back the last chunk: got ${served.bytes.length} of ${content.length}`);
    const outcome = outcomes.at(-1)!;
    await eventually(() => outcome.closed);
    assert.ok(outcome.error instanceof DamagedBlobError);
    assert.equal(outcome.damaged.length, 1);
    assert.match(outcome.damaged[0]!.reason, /hash to sha256:/);
    assert.equal(outcome.verified, 0);
  });

  it('with a check, a file shorter than its size is reported as damaged too', async () => {
    const short = join(dir, 'short-checked');
    await writeFile(short, content.subarray(0, CHUNK));
    const served = await fetchAll(port, `/?check=hash&file=${encodeURIComponent(short)}`);
    assert.equal(served.complete, false);
    const outcome = outcomes.at(-1)!;
    await eventually(() => outcome.closed);
    assert.equal(outcome.damaged.length, 1);
    assert.match(outcome.damaged[0]!.reason, /ended at byte/);
  });

  it('a trusted read of a copy found damaged meanwhile is cut, whole or by range', async () => {
    for (const query of ['/?check=condemned', `/?check=condemned&start=${CHUNK}&end=${2 * CHUNK + 7}`]) {
      const served = await fetchAll(port, query);
      assert.equal(served.complete, false, query);
      const outcome = outcomes.at(-1)!;
      await eventually(() => outcome.closed);
      assert.ok(outcome.error instanceof DamagedBlobError, query);
    }
  });

  it('as a stream, a damaged copy ends in an error, never in a clean end', async () => {
    const rotten = join(dir, 'rotten-stream');
    const bytes = Buffer.from(content);
    bytes[10] = (bytes[10] as number) ^ 0x01;
    await writeFile(rotten, bytes);
    const damaged: DamagedBlobError[] = [];
    const body = new FileBody(await open(rotten, 'r'), 0, content.length, pool, new HashingCheck(digest, { condemned: false }, () => {}, (e) => damaged.push(e)));
    let got = 0;
    await assert.rejects(
      (async () => {
        for await (const c of body) got += (c as Buffer).length;
      })(),
      DamagedBlobError,
    );
    assert.ok(got < content.length);
    assert.equal(damaged.length, 1);
  });
});

describe('BlobTrust', () => {
  let dir: string;
  const pool = new BufferPool(CHUNK, 8);
  const content = randomBytes(4 * CHUNK + 99);
  const digest: Digest = digestOf(content);

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'archway-blob-trust-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function read(trust: BlobTrust, path: string, hash: boolean, range?: [number, number]): Promise<{ bytes: number; error?: unknown }> {
    const { check, done } = trust.begin(digest, hash);
    const body = new FileBody(await open(path, 'r'), range?.[0] ?? 0, range?.[1] ?? content.length, pool, check);
    body.once('close', done);
    let bytes = 0;
    try {
      for await (const c of body) bytes += (c as Buffer).length;
      return { bytes };
    } catch (error) {
      return { bytes, error };
    }
  }

  it('trusts a digest after one whole read matched, and forgets it when the copy is replaced', async () => {
    const path = join(dir, 'good');
    await writeFile(path, content);
    const trust = new BlobTrust(() => assert.fail('nothing is damaged'));
    assert.equal(trust.isTrusted(digest), false);
    assert.equal((await read(trust, path, true)).bytes, content.length);
    assert.equal(trust.isTrusted(digest), true);
    trust.forget(digest);
    assert.equal(trust.isTrusted(digest), false);
  });

  it('reports a damaged copy once, however many reads find it, and cuts a trusted read of it that is still running', async () => {
    const path = join(dir, 'bad');
    const bytes = Buffer.from(content);
    bytes[CHUNK + 1] = (bytes[CHUNK + 1] as number) ^ 0xff;
    await writeFile(path, bytes);
    const reports: DamagedBlobError[] = [];
    const trust = new BlobTrust((err) => {
      reports.push(err);
      trust.condemn(err.digest);
    });
    // A trusted read (a range: never hashed) opened before the damage is known...
    const { check, done } = trust.begin(digest, false);
    const trustedBody = new FileBody(await open(path, 'r'), 0, 2 * CHUNK, pool, check);
    trustedBody.once('close', done);
    // ...then two hashing reads of the same copy find it bad.
    const [a, b] = await Promise.all([read(trust, path, true), read(trust, path, true)]);
    assert.ok(a.error instanceof DamagedBlobError && b.error instanceof DamagedBlobError);
    assert.equal(reports.length, 1, 'one report: one removal, one count');
    assert.equal(trust.isTrusted(digest), false);
    let got = 0;
    await assert.rejects(
      (async () => {
        for await (const c of trustedBody) got += (c as Buffer).length;
      })(),
      DamagedBlobError,
    );
    assert.ok(got < 2 * CHUNK, 'the trusted read lost its last chunk');
  });
});
