// Self-test of the harness's metric reader: a check that a counter "did not move" must not pass on a typo.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { startArchway, type ArchwayHandle } from '../harness/archway.ts';
import { freePort } from '../harness/ports.ts';

describe('scrapeMetric', () => {
  let archway: ArchwayHandle;
  before(async () => {
    // Nothing is pulled: the upstream (a closed loopback port) is never contacted.
    archway = await startArchway({ upstreams: { 'up.test': { url: `http://127.0.0.1:${await freePort()}` } } });
  });
  after(() => archway.stop());

  it('throws on a name /metrics does not declare', async () => {
    await assert.rejects(archway.metric('archway_stale_serve_total'), /no metric archway_stale_serve_total/);
  });

  it('a declared counter nobody incremented is 0; histogram samples are found by their suffix', async () => {
    assert.equal(await archway.metric('archway_stale_served_total'), 0);
    assert.equal(await archway.metric('archway_upstream_request_seconds_count'), 0);
    assert.ok((await archway.metric('archway_http_requests_total')) > 0, 'the scrapes themselves are counted');
  });
});
