// A trickling upstream manifest (issue 13: "a slow trickle from an upstream is
// ended by an overall body deadline, and its coalesced followers are released
// with a 5xx, never hung"): a byte every 200 ms never trips timeouts.bodyIdle,
// but the whole answer is cut at timeouts.body. Three clients asking for the
// same tag at once share one upstream request and all get a spec error, and
// the upstream connection is closed. archway runs as its own process; the
// upstream is a small server here, since no real registry trickles on demand.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { startArchwayProcess, type ArchwayProcess } from '../harness/archway-process.ts';
import { ACCEPT, http } from '../harness/http.ts';
import { waitFor } from '../harness/process.ts';

const BODY_DEADLINE_MS = 1000;
const MANIFEST = Buffer.from(
  JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${'4'.repeat(64)}`, size: 2 },
    layers: [],
  }),
);

let server: Server;
let upstreamUrl: string;
const counts = { manifestRequests: 0, open: 0 };
let archway: ArchwayProcess;

before(async () => {
  server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0];
    if (path === '/v2/' || path === '/v2') return void res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
    if (path !== '/v2/team/slow/manifests/1') return void res.writeHead(404, { 'content-type': 'application/json' }).end('{"errors":[{"code":"MANIFEST_UNKNOWN"}]}');
    counts.manifestRequests++;
    counts.open++;
    res.once('close', () => counts.open--);
    res.writeHead(200, { 'content-type': 'application/vnd.oci.image.manifest.v1+json', 'content-length': MANIFEST.length });
    if (req.method === 'HEAD') return void res.end();
    let i = 0;
    const timer = setInterval(() => {
      if (res.destroyed || i >= MANIFEST.length) return void clearInterval(timer);
      res.write(MANIFEST.subarray(i, ++i));
      if (i === MANIFEST.length) res.end();
    }, 200);
    res.once('close', () => clearInterval(timer));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  upstreamUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  archway = await startArchwayProcess({
    upstreams: { 'docker.io': { url: upstreamUrl } },
    defaultUpstream: 'docker.io',
    timeouts: { body: `${BODY_DEADLINE_MS}ms` },
    log: { level: 'warn' },
  });
});

after(async () => {
  await archway?.kill();
  server?.closeAllConnections();
  await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
});

describe('a trickling upstream manifest', () => {
  it('is cut at timeouts.body: every coalesced client gets a 5xx spec error naming the upstream, and the upstream connection is closed', async () => {
    const started = performance.now();
    const answers = await Promise.all(
      [0, 1, 2].map(async () => {
        const r = await http(`${archway.url}/v2/team/slow/manifests/1`, { headers: { accept: ACCEPT.all } });
        return { r, ms: performance.now() - started };
      }),
    );
    for (const { r, ms } of answers) {
      assert.ok(r.status >= 500 && r.status < 600, `status ${r.status}: ${r.body.toString().slice(0, 200)}`);
      const error = r.json<{ errors: Array<{ code: string; detail?: { upstream?: string } }> }>().errors[0];
      assert.equal(error?.detail?.upstream, 'docker.io', r.body.toString());
      // At the deadline, not at the end of the trickle (the whole manifest would take ~40 s).
      assert.ok(ms >= BODY_DEADLINE_MS - 100 && ms < BODY_DEADLINE_MS + 4000, `answered after ${Math.round(ms)} ms`);
    }
    assert.equal(counts.manifestRequests, 1, 'the three clients shared one upstream request');
    await waitFor(() => counts.open === 0, { timeoutMs: 3000, description: 'the upstream response to be closed' });
    process.stdout.write(`trickling manifest: ${answers.map((a) => `${a.r.status} after ${Math.round(a.ms)} ms`).join(', ')}\n`);
  });
});
