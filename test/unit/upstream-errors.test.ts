import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { errors as undiciErrors } from 'undici';
import { upstreamStatusError, upstreamTransportError, isUpstreamOutage } from '../../src/upstream/errors.ts';

describe('upstream status mapping', () => {
  const cases: Array<[Parameters<typeof upstreamStatusError>[1], number, string | undefined, string, number]> = [
    ['manifest', 404, undefined, 'MANIFEST_UNKNOWN', 404],
    ['blob', 404, undefined, 'BLOB_UNKNOWN', 404],
    ['tags', 404, undefined, 'NAME_UNKNOWN', 404],
    ['manifest', 404, 'NAME_UNKNOWN', 'NAME_UNKNOWN', 404],
    ['manifest', 404, 'SOMETHING_ELSE', 'MANIFEST_UNKNOWN', 404],
    ['manifest', 401, undefined, 'UNAUTHORIZED', 401],
    ['blob', 403, undefined, 'DENIED', 403],
    ['manifest', 500, undefined, 'UNAVAILABLE', 502],
    ['blob', 503, undefined, 'UNAVAILABLE', 502],
    ['manifest', 400, undefined, 'UNAVAILABLE', 502],
  ];
  for (const [kind, status, upstreamCode, code, answered] of cases) {
    it(`${kind} ${status}${upstreamCode ? ` ${upstreamCode}` : ''} → ${answered} ${code}`, () => {
      const err = upstreamStatusError('docker.io', kind, status, {}, upstreamCode);
      assert.equal(err.code, code);
      assert.equal(err.status, answered);
    });
  }

  it('429 passes Retry-After on and counts as an outage (serve stale)', () => {
    const err = upstreamStatusError('ghcr.io', 'manifest', 429, { 'retry-after': '17' });
    assert.equal(err.code, 'TOOMANYREQUESTS');
    assert.equal(err.status, 429);
    assert.deepEqual(err.headers, { 'retry-after': '17' });
    assert.ok(isUpstreamOutage(err));
    assert.ok(!isUpstreamOutage(upstreamStatusError('ghcr.io', 'manifest', 404, {})));
  });

  it('names the upstream by its key, never its URL', () => {
    const err = upstreamStatusError('quay.io', 'blob', 502, {});
    assert.match(err.message, /upstream quay\.io/);
  });
});

describe('upstream transport failures', () => {
  it('timeouts are 504, other failures 502', () => {
    assert.equal(upstreamTransportError('docker.io', new undiciErrors.HeadersTimeoutError()).status, 504);
    assert.equal(upstreamTransportError('docker.io', new undiciErrors.BodyTimeoutError()).status, 504);
    assert.equal(upstreamTransportError('docker.io', new undiciErrors.ConnectTimeoutError()).status, 504);
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' });
    const err = upstreamTransportError('docker.io', refused);
    assert.equal(err.status, 502);
    assert.equal(err.code, 'UNAVAILABLE');
    assert.match(err.message, /docker\.io is unreachable \(ECONNREFUSED\)/);
    assert.doesNotMatch(err.message, /127\.0\.0\.1/);
  });
});
