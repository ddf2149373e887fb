// FileBody: a cached blob written to a real HTTP response through recycled
// buffers. Whole and ranged bytes exact, a file shorter than its recorded
// size cuts the answer, a client hanging up ends the work and closes the file.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { createServer, get, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FileBody } from '../../src/store/file-body.ts';
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
  /** Each request names the file, the range and the size the store believes in. */
  const outcomes: Array<{ error?: Error; closed: boolean }> = [];
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
      const body = new FileBody(await open(url.searchParams.get('file') ?? file, 'r'), start, end, pool);
      const outcome: { error?: Error; closed: boolean } = { closed: false };
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
});
