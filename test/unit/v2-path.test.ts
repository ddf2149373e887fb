import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RegistryError } from '../../src/errors.ts';
import { parseV2Path } from '../../src/http/v2-path.ts';

const D = `sha256:${'a'.repeat(64)}`;

describe('/v2 paths', () => {
  const ok: Array<[string, unknown]> = [
    ['/v2/', { endpoint: 'base' }],
    ['/v2/alpine/manifests/3.19', { endpoint: 'manifest', name: 'alpine', reference: { kind: 'tag', tag: '3.19' } }],
    [`/v2/a/b/c/manifests/${D}`, { endpoint: 'manifest', name: 'a/b/c', reference: { kind: 'digest', digest: D } }],
    [`/v2/a/manifests/x/manifests/1`, { endpoint: 'manifest', name: 'a/manifests/x', reference: { kind: 'tag', tag: '1' } }],
    [`/v2/a/blobs/${D.replace(':', '%3A')}`, { endpoint: 'blob', name: 'a', digest: D }],
    ['/v2/ghcr.io/org/app/tags/list', { endpoint: 'tags', name: 'ghcr.io/org/app' }],
    // Parsed so a local repository can answer a mount; the route refuses every other use of it.
    ['/v2/team/app/blobs/uploads/', { endpoint: 'upload', name: 'team/app' }],
    ['/v2/team/app/blobs/uploads/some-session', { endpoint: 'upload', name: 'team/app' }],
    [`/v2/registry.local:5001/app/referrers/${D}`, { endpoint: 'referrers', name: 'registry.local:5001/app', digest: D }],
  ];
  for (const [path, expected] of ok) it(path.slice(0, 50), () => assert.deepEqual(parseV2Path(path), expected));

  const bad: Array<[string, string]> = [
    ['/v2/A/manifests/1', 'NAME_INVALID'],
    ['/v2/registry.local:5001/manifests/1', 'NAME_INVALID'],
    ['/v2/registry.local:99999999/app/manifests/1', 'NAME_INVALID'],
    // Conformance (pull): a reference that is not a tag names nothing.
    ['/v2/a/manifests/.x', 'MANIFEST_UNKNOWN'],
    ['/v2/a/manifests/.INVALID_MANIFEST_NAME', 'MANIFEST_UNKNOWN'],
    [`/v2/a/manifests/${'t'.repeat(129)}`, 'MANIFEST_UNKNOWN'],
    ['/v2/A/manifests/.x', 'NAME_INVALID'],
    ['/v2/a/manifests/sha256:xyz', 'DIGEST_INVALID'],
    ['/v2/a/blobs/sha256:xyz', 'DIGEST_INVALID'],
    ['/v2/_catalog', 'NAME_UNKNOWN'],
  ];
  for (const [path, code] of bad) {
    it(`${path} → ${code}`, () => assert.throws(() => parseV2Path(path), (e: unknown) => e instanceof RegistryError && e.code === code));
  }
});
