import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseChallenges } from '../../src/upstream/challenge.ts';

describe('WWW-Authenticate parsing', () => {
  it('reads Docker Hub’s Bearer challenge', () => {
    const [c, ...rest] = parseChallenges(
      'Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/alpine:pull"',
    );
    assert.equal(rest.length, 0);
    assert.equal(c?.scheme, 'bearer');
    assert.deepEqual(c?.params, {
      realm: 'https://auth.docker.io/token',
      service: 'registry.docker.io',
      scope: 'repository:library/alpine:pull',
    });
  });

  it('keeps commas inside quoted values (multi-scope challenges)', () => {
    const [c] = parseChallenges('Bearer realm="https://a/token", scope="repository:a:pull,push"');
    assert.equal(c?.params.scope, 'repository:a:pull,push');
  });

  it('handles escaped quotes, token values and case', () => {
    const [c] = parseChallenges('BEARER Realm="x\\"y", error=invalid_token');
    assert.equal(c?.scheme, 'bearer');
    assert.equal(c?.params.realm, 'x"y');
    assert.equal(c?.params.error, 'invalid_token');
  });

  it('reads Basic, and several challenges in one header or many', () => {
    assert.deepEqual(
      parseChallenges('Basic realm="Registry Realm", Bearer realm="https://t",service="s"').map((c) => c.scheme),
      ['basic', 'bearer'],
    );
    assert.deepEqual(
      parseChallenges(['Basic realm="r"', 'Bearer realm="https://t"']).map((c) => [c.scheme, c.params.realm]),
      [
        ['basic', 'r'],
        ['bearer', 'https://t'],
      ],
    );
  });

  it('returns nothing for absent or junk headers', () => {
    assert.deepEqual(parseChallenges(undefined), []);
    assert.deepEqual(parseChallenges(''), []);
    assert.deepEqual(parseChallenges('==='), []);
  });
});
