import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RegistryError } from '../../src/errors.ts';
import { digestOf, parseDigest } from '../../src/oci/digest.ts';
import { parseName, parseReference, parseTag } from '../../src/oci/reference.ts';

const hex64 = 'a'.repeat(64);

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof RegistryError, `expected a RegistryError, got ${String(err)}`);
    return err.code;
  }
  return undefined;
}

describe('repository names', () => {
  for (const ok of ['alpine', 'library/alpine', 'a/b/c/d/e', 'my-org/my.app', 'a__b', 'x-----y', 'ghcr.io/org/app', '0/1']) {
    it(`accepts ${ok}`, () => assert.equal(parseName(ok), ok));
  }
  for (const bad of ['', 'Alpine', 'a//b', '/a', 'a/', 'a_', '-a', 'a..b', 'a___b', 'a b', 'a%2fb', 'a/../b', 'x'.repeat(256)]) {
    it(`refuses ${JSON.stringify(bad.slice(0, 40))}`, () => assert.equal(code(() => parseName(bad)), 'NAME_INVALID'));
  }
});

describe('tags', () => {
  for (const ok of ['latest', '1.0', 'v1.2.3-rc.1_build', '_x', 'A'.repeat(128)]) {
    it(`accepts ${ok.slice(0, 20)}`, () => assert.equal(parseTag(ok), ok));
  }
  for (const bad of ['', '.x', '-x', 'a/b', 'a+b', 'A'.repeat(129)]) {
    it(`refuses ${JSON.stringify(bad.slice(0, 20))}`, () => assert.equal(code(() => parseTag(bad)), 'TAG_INVALID'));
  }
});

describe('digests', () => {
  it('accepts sha256 and sha512', () => {
    assert.equal(parseDigest(`sha256:${hex64}`), `sha256:${hex64}`);
    assert.equal(parseDigest(`sha512:${'0'.repeat(128)}`), `sha512:${'0'.repeat(128)}`);
  });
  for (const bad of [`sha256:${'a'.repeat(63)}`, `sha256:${'A'.repeat(64)}`, `sha256:${'g'.repeat(64)}`, `sha512:${hex64}`, `md5:${'a'.repeat(32)}`, `sha384:${'a'.repeat(96)}`, 'sha256:', ':abc', 'sha256']) {
    it(`refuses ${bad.slice(0, 24)}…`, () => assert.equal(code(() => parseDigest(bad)), 'DIGEST_INVALID'));
  }
  it('computes digests of bytes', () => {
    assert.equal(digestOf(Buffer.from('')), 'sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  });
});

describe('manifest references', () => {
  it('a colon makes a digest', () => assert.deepEqual(parseReference(`sha256:${hex64}`), { kind: 'digest', digest: `sha256:${hex64}` }));
  it('otherwise a tag', () => assert.deepEqual(parseReference('1.0'), { kind: 'tag', tag: '1.0' }));
  it('a bad digest is DIGEST_INVALID, not TAG_INVALID', () => assert.equal(code(() => parseReference('sha256:xyz')), 'DIGEST_INVALID'));
});
