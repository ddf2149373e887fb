import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Digest } from '../../src/oci/digest.ts';
import type { Descriptor, ManifestIndex } from '../../src/oci/manifest.ts';
import { detectPlatform } from '../../src/platform/detect.ts';
import { filterIndex } from '../../src/platform/filter-index.ts';
import { globToRegExp } from '../../src/platform/glob.ts';
import { availablePlatforms, bestMatch, compatiblePlatforms } from '../../src/platform/match.ts';
import { formatPlatform, parsePlatform } from '../../src/platform/platform.ts';

describe('platform normalisation', () => {
  const cases: Array<[string, string]> = [
    ['linux/amd64', 'linux/amd64'],
    ['linux/x86_64', 'linux/amd64'],
    ['linux/x86-64', 'linux/amd64'],
    ['Linux/AMD64', 'linux/amd64'],
    ['linux/amd64/v1', 'linux/amd64'],
    ['linux/amd64/v3', 'linux/amd64/v3'],
    ['linux/aarch64', 'linux/arm64'],
    ['linux/arm64/v8', 'linux/arm64'],
    ['linux/arm64/8', 'linux/arm64'],
    ['linux/i386', 'linux/386'],
    ['linux/i686', 'linux/386'],
    ['linux/armhf', 'linux/arm/v7'],
    ['linux/armel', 'linux/arm/v6'],
    ['linux/arm', 'linux/arm/v7'],
    ['linux/arm/7', 'linux/arm/v7'],
    ['linux/arm/v6', 'linux/arm/v6'],
    ['linux/ppc64le', 'linux/ppc64le'],
    ['linux/s390x', 'linux/s390x'],
    ['windows/amd64', 'windows/amd64'],
  ];
  for (const [input, expected] of cases) it(`${input} → ${expected}`, () => assert.equal(formatPlatform(parsePlatform(input)), expected));
  for (const bad of ['linux', 'linux/', '/amd64', 'linux/arm/v7/x', 'linux/a b']) {
    it(`refuses ${JSON.stringify(bad)}`, () => assert.throws(() => parsePlatform(bad), /invalid platform/));
  }
});

describe('fallback order', () => {
  const cases: Array<[string, string[]]> = [
    ['linux/amd64', ['linux/amd64', 'linux/386']],
    ['linux/amd64/v3', ['linux/amd64/v3', 'linux/amd64/v2', 'linux/amd64', 'linux/386']],
    ['linux/arm64', ['linux/arm64', 'linux/arm/v8', 'linux/arm/v7', 'linux/arm/v6', 'linux/arm/v5']],
    ['linux/arm64/v9', ['linux/arm64/v9', 'linux/arm64/v8.5', 'linux/arm64/v8.4', 'linux/arm64/v8.3', 'linux/arm64/v8.2', 'linux/arm64/v8.1', 'linux/arm64', 'linux/arm/v8', 'linux/arm/v7', 'linux/arm/v6', 'linux/arm/v5']],
    ['linux/arm/v7', ['linux/arm/v7', 'linux/arm/v6', 'linux/arm/v5']],
    ['linux/arm/v6', ['linux/arm/v6', 'linux/arm/v5']],
    ['linux/386', ['linux/386']],
    ['linux/ppc64le', ['linux/ppc64le']],
    ['linux/s390x', ['linux/s390x']],
  ];
  for (const [wanted, order] of cases) {
    it(`${wanted} runs ${order.join(' > ')}`, () => assert.deepEqual(compatiblePlatforms(parsePlatform(wanted)).map(formatPlatform), order));
  }
});

const d = (n: number, platform?: Descriptor['platform'], extra: Partial<Descriptor> = {}): Descriptor => ({
  mediaType: 'application/vnd.oci.image.manifest.v1+json',
  digest: `sha256:${String(n).padStart(64, '0')}` as Digest,
  size: 100 + n,
  ...(platform ? { platform } : {}),
  ...extra,
});
const index = (...manifests: Descriptor[]): ManifestIndex => ({ mediaType: 'application/vnd.oci.image.index.v1+json', manifests });

describe('best match in an index', () => {
  const full = index(
    d(1, { os: 'linux', architecture: 'amd64' }),
    d(2, { os: 'linux', architecture: 'arm64', variant: 'v8' }),
    d(3, { os: 'linux', architecture: 'arm', variant: 'v7' }),
    d(4, { os: 'linux', architecture: 'arm', variant: 'v6' }),
    d(5, { os: 'linux', architecture: '386' }),
    d(6, { os: 'unknown', architecture: 'unknown' }),
  );
  const cases: Array<[string, number | undefined]> = [
    ['linux/amd64', 1],
    ['linux/arm64', 2],
    ['linux/aarch64', 2],
    ['linux/arm/v7', 3],
    ['linux/arm', 3],
    ['linux/arm/v6', 4],
    ['linux/386', 5],
    ['linux/s390x', undefined],
    ['windows/amd64', undefined],
  ];
  for (const [wanted, n] of cases) {
    it(`${wanted} → ${n ?? 'nothing'}`, () => assert.equal(bestMatch(full, parsePlatform(wanted))?.digest, n === undefined ? undefined : d(n).digest));
  }

  it('falls back: arm64 on an index with only arm/v7 gets arm/v7; amd64 without amd64 gets 386', () => {
    const armOnly = index(d(3, { os: 'linux', architecture: 'arm', variant: 'v7' }), d(9, { os: 'linux', architecture: 'ppc64le' }));
    assert.equal(bestMatch(armOnly, parsePlatform('linux/arm64'))?.digest, d(3).digest);
    assert.equal(bestMatch(index(d(5, { os: 'linux', architecture: '386' })), parsePlatform('linux/amd64'))?.digest, d(5).digest);
    assert.equal(bestMatch(armOnly, parsePlatform('linux/arm/v6')), undefined, 'v6 cannot run v7');
  });

  it('never matches attestation entries, and does not list them', () => {
    const onlyAttestation = index(d(6, { os: 'unknown', architecture: 'unknown' }));
    assert.equal(bestMatch(onlyAttestation, { os: 'unknown', architecture: 'unknown' }), undefined);
    assert.deepEqual(availablePlatforms(full).map(formatPlatform), ['linux/amd64', 'linux/arm64/v8', 'linux/arm/v7', 'linux/arm/v6', 'linux/386']);
  });
});

describe('User-Agent detection', () => {
  const cases: Array<[string | undefined, string | undefined]> = [
    ['docker/20.10.24+dfsg1 go/go1.19.8 git-commit/5d6db84 kernel/6.1.0-18-amd64 os/linux arch/amd64 UpstreamClient(Docker-Client/28.2.2 \\(linux\\))', 'linux/amd64'],
    ['docker/24.0.7 go/go1.20.10 git-commit/311b9ff kernel/6.1.21-v8+ os/linux arch/arm64 UpstreamClient(Docker-Client/24.0.7 \\(linux\\))', 'linux/arm64'],
    ['docker/24.0.7 go/go1.20.10 kernel/6.1.21-v7+ os/linux arch/arm UpstreamClient(Go-http-client/1.1)', 'linux/arm/v7'],
    ['cri-o/1.28.1 go/go1.20.10 os/linux arch/s390x', 'linux/s390x'],
    ['containerd/1.6.20~ds1', undefined],
    ['skopeo/1.9.3', undefined],
    ['Go-http-client/1.1', undefined],
    [undefined, undefined],
  ];
  for (const [ua, expected] of cases) {
    it(`${(ua ?? '(none)').slice(0, 40)} → ${expected ?? 'nothing'}`, () => {
      const p = detectPlatform(ua);
      assert.equal(p && formatPlatform(p), expected);
    });
  }
});

describe('repository globs', () => {
  const cases: Array<[string, string, boolean]> = [
    ['library/*', 'library/alpine', true],
    ['library/*', 'library/a/b', false],
    ['library/*', 'other/alpine', false],
    ['ghcr.io/org/**', 'ghcr.io/org/app', true],
    ['ghcr.io/org/**', 'ghcr.io/org/team/app', true],
    ['ghcr.io/org/**', 'ghcr.io/other/app', false],
    ['library/pi-?', 'library/pi-1', true],
    ['a.b', 'aXb', false],
  ];
  for (const [glob, name, expected] of cases) it(`${glob} ${expected ? 'matches' : 'does not match'} ${name}`, () => assert.equal(globToRegExp(glob).test(name), expected));
});

describe('filtered index', () => {
  it('keeps the chosen entry, its attestation, and every other field', () => {
    const keep = d(2, { os: 'linux', architecture: 'arm64' });
    const doc = {
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.index.v1+json',
      manifests: [
        { mediaType: keep.mediaType, digest: d(1).digest, size: 1, platform: { os: 'linux', architecture: 'amd64' } },
        { mediaType: keep.mediaType, digest: keep.digest, size: 2, platform: { os: 'linux', architecture: 'arm64' }, annotations: { x: 'y' } },
        { mediaType: keep.mediaType, digest: d(7).digest, size: 7, platform: { os: 'unknown', architecture: 'unknown' }, annotations: { 'vnd.docker.reference.digest': d(1).digest, 'vnd.docker.reference.type': 'attestation-manifest' } },
        { mediaType: keep.mediaType, digest: d(8).digest, size: 8, platform: { os: 'unknown', architecture: 'unknown' }, annotations: { 'vnd.docker.reference.digest': keep.digest, 'vnd.docker.reference.type': 'attestation-manifest' } },
      ],
      annotations: { 'org.opencontainers.image.created': 'now' },
    };
    const out = JSON.parse(filterIndex(Buffer.from(JSON.stringify(doc, null, 2)), keep).toString()) as typeof doc;
    assert.deepEqual(out.manifests.map((m) => m.digest), [keep.digest, d(8).digest]);
    assert.deepEqual(out.manifests[0], doc.manifests[1]);
    assert.equal(out.schemaVersion, 2);
    assert.deepEqual(out.annotations, doc.annotations);
  });
});
