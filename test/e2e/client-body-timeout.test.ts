// timeouts.clientBody (issue 13, "request-body timeouts are set explicitly"):
// a client that sends a request's headers and then only part of the body it
// announced is closed once clientHeaders + clientBody have passed (Node's
// requestTimeout runs from the first byte to the end of the body), not left
// holding its connection. archway runs as its own process; the tiny upstream
// only lets it start (nothing is fetched).
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { startArchwayProcess, type ArchwayProcess } from '../harness/archway-process.ts';
import { waitFor } from '../harness/process.ts';
import { startRunawayUpstream, type RunawayUpstream } from '../harness/runaway-upstream.ts';

const CLIENT_HEADERS_MS = 1000;
const CLIENT_BODY_MS = 2000;

let upstream: RunawayUpstream;
let archway: ArchwayProcess;

before(async () => {
  upstream = await startRunawayUpstream();
  archway = await startArchwayProcess({
    upstreams: { 'docker.io': { url: upstream.url } },
    defaultUpstream: 'docker.io',
    timeouts: { clientHeaders: `${CLIENT_HEADERS_MS}ms`, clientBody: `${CLIENT_BODY_MS}ms`, clientKeepAlive: '60s' },
    log: { level: 'warn' },
  });
});

after(async () => {
  await archway?.kill();
  await upstream?.stop();
});

/** Sends `bytes` on a new connection and resolves when archway closes it, with how long that took. */
function sendAndTimeClose(bytes: string): Promise<{ ms: number; received: string; socket: Socket }> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port: archway.port });
    let received = '';
    let sentAt = 0;
    socket.setEncoding('latin1');
    socket.on('data', (d: string) => (received += d));
    socket.on('error', () => undefined);
    socket.once('connect', () => {
      sentAt = performance.now();
      socket.write(bytes);
    });
    socket.once('close', () => resolve({ ms: performance.now() - sentAt, received, socket }));
    setTimeout(() => reject(new Error(`still open after 20 s; received: ${received.slice(0, 200)}`)), 20_000).unref();
  });
}

describe('timeouts.clientBody', () => {
  it('a request whose body stops arriving is closed after clientHeaders + clientBody, not before', async () => {
    // Headers complete at once; 10 of the 1000 announced body bytes, then nothing.
    const head = 'POST /v2/team/app/blobs/uploads/ HTTP/1.1\r\nHost: archway\r\nContent-Type: application/octet-stream\r\nContent-Length: 1000\r\n\r\n';
    const { ms, received, socket } = await sendAndTimeClose(`${head}0123456789`);
    socket.destroy();
    // archway refuses the write at once (no route takes a body), and then waits for the rest of it.
    assert.match(received, /^HTTP\/1\.1 405 /);
    // Node checks the deadline once a second (connectionsCheckingInterval), so up to 1 s late.
    assert.ok(ms >= CLIENT_HEADERS_MS + CLIENT_BODY_MS - 100, `closed after only ${Math.round(ms)} ms`);
    assert.ok(ms <= CLIENT_HEADERS_MS + CLIENT_BODY_MS + 2000, `closed after ${Math.round(ms)} ms`);
    process.stdout.write(`half-sent body: connection closed ${(ms / 1000).toFixed(2)} s after the headers (clientHeaders ${CLIENT_HEADERS_MS / 1000} s + clientBody ${CLIENT_BODY_MS / 1000} s)\n`);
  });

  it('archway still serves new connections afterwards', async () => {
    await waitFor(
      async () => {
        const res = await fetch(`${archway.url}/v2/`);
        await res.arrayBuffer();
        return res.status === 200;
      },
      { timeoutMs: 5000, description: 'GET /v2/ to answer 200' },
    );
  });
});
