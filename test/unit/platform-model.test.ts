// The whole platform model, table by table against containerd's documented
// rules (platforms.go Normalize and Parse, compare.go Only, the Windows
// os.version matcher): spellings, fallback orders of amd64 v1..v4 and arm64
// v8.x/v9.x, Windows builds, os.features, and what archway writes back.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { ConfigError, parseConfig } from '../../src/config/load.ts';
import type { Digest } from '../../src/oci/digest.ts';
import { parseIndex, platformJson, readPlatform, type Descriptor, type ManifestIndex } from '../../src/oci/manifest.ts';
import { filterIndex } from '../../src/platform/filter-index.ts';
import { topLevelArrayElements } from '../../src/platform/json-spans.ts';
import { bestMatch, compatiblePlatforms, platformMatches } from '../../src/platform/match.ts';
import { formatPlatform, normalizePlatform, parsePlatform, samePlatform, type Platform } from '../../src/platform/platform.ts';
import { PlatformPolicy } from '../../src/platform/policy.ts';
import { compareWindowsVersions, windowsCanRun } from '../../src/platform/windows-version.ts';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const digest = (n: number) => `sha256:${String(n).padStart(64, '0')}` as Digest;
const entry = (n: number, platform: Platform): Descriptor => ({ mediaType: OCI_MANIFEST, digest: digest(n), size: 100 + n, platform });
const index = (...manifests: Descriptor[]): ManifestIndex => ({ mediaType: OCI_INDEX, manifests });

describe('platform spellings (containerd Normalize/Parse, and the machines’ own names)', () => {
  const cases: Array<[string, string]> = [
    ['linux/amd64/v2', 'linux/amd64/v2'],
    ['linux/amd64/V3', 'linux/amd64/v3'],
    ['linux/x86_64/v4', 'linux/amd64/v4'],
    ['linux/arm64/v8.0', 'linux/arm64'],
    ['linux/arm64/v8.2', 'linux/arm64/v8.2'],
    ['linux/arm64/8.2', 'linux/arm64/v8.2'],
    ['linux/arm64/v9', 'linux/arm64/v9'],
    ['linux/arm64/v9.0', 'linux/arm64/v9'],
    ['linux/armv7l', 'linux/arm/v7'],
    ['linux/armv6l', 'linux/arm/v6'],
    ['linux/riscv64', 'linux/riscv64'],
    ['linux/loong64', 'linux/loong64'],
    ['linux/loongarch64', 'linux/loong64'],
    ['linux/mips64le', 'linux/mips64le'],
    ['linux/mips64el', 'linux/mips64le'],
    ['linux/ppc64el', 'linux/ppc64le'],
    ['linux/s390x', 'linux/s390x'],
    // Unknown architectures pass through: no alias, and a bare-number variant stays a number.
    ['linux/sparc64', 'linux/sparc64'],
    ['linux/wasm/7', 'linux/wasm/7'],
    ['plan9/vax/v11', 'plan9/vax/v11'],
    ['windows(10.0.17763)/amd64', 'windows(10.0.17763)/amd64'],
    ['Windows(10.0.20348.2113)/AMD64', 'windows(10.0.20348.2113)/amd64'],
    ['windows(10.0.17763+win32k)/amd64', 'windows(10.0.17763+win32k)/amd64'],
    // os.features are a set: sorted, each once (containerd sorts and compacts them).
    ['windows(10.0.17763+z+a+z)/amd64', 'windows(10.0.17763+a+z)/amd64'],
    ['windows(+win32k)/amd64', 'windows(+win32k)/amd64'],
  ];
  for (const [input, expected] of cases) it(`${input} → ${expected}`, () => assert.equal(formatPlatform(parsePlatform(input)), expected));

  it('escapes what an upstream may write into os.version or os.features, and parses it back', () => {
    const odd: Platform = { os: 'windows', architecture: 'amd64', osVersion: '10.0.17763.1', osFeatures: ['a b\n', 'é+(x)/%'] };
    const text = formatPlatform(odd);
    assert.match(text, /^[\x21-\x7e]+$/, text);
    assert.deepEqual(parsePlatform(text), normalizePlatform(odd));
  });

  it('parses os.version and os.features into the fields an index uses', () => {
    assert.deepEqual(parsePlatform('windows(10.0.17763.5122+win32k)/amd64'), { os: 'windows', architecture: 'amd64', osVersion: '10.0.17763.5122', osFeatures: ['win32k'] });
  });

  for (const bad of ['windows(10.0)/amd64', 'windows(abc)/amd64', 'windows(10.0.17763/amd64', 'linux(/amd64', '(10.0.17763)/amd64', 'windows(10.0.17763)']) {
    it(`refuses ${JSON.stringify(bad)}`, () => assert.throws(() => parsePlatform(bad), /invalid platform/));
  }

  it('normalising keeps os.version and features, and is idempotent', () => {
    const p: Platform = { os: 'Windows', architecture: 'x86_64', osVersion: '10.0.17763.5122', osFeatures: ['b', 'a', 'b'], features: ['sse4'] };
    const n = normalizePlatform(p);
    assert.deepEqual(n, { os: 'windows', architecture: 'amd64', osVersion: '10.0.17763.5122', osFeatures: ['a', 'b'], features: ['sse4'] });
    assert.deepEqual(normalizePlatform(n), n);
  });

  it('looks entries up by name: a shorter os.version names the longer one, a different build does not', () => {
    const win = (osVersion?: string): Platform => ({ os: 'windows', architecture: 'amd64', ...(osVersion ? { osVersion } : {}) });
    assert.equal(samePlatform(win('10.0.17763.5122'), win('10.0.17763')), true);
    assert.equal(samePlatform(win('10.0.17763'), win('10.0.17763.5122')), true);
    assert.equal(samePlatform(win('10.0.17763.5122'), win()), true);
    assert.equal(samePlatform(win('10.0.17763.5122'), win('10.0.1776')), false);
    assert.equal(samePlatform(win('10.0.20348.2113'), win('10.0.17763')), false);
    assert.equal(samePlatform(win(), { os: 'linux', architecture: 'amd64' }), false);
  });
});

describe('properties: platforms with os.version and os.features', () => {
  const build = fc.tuple(fc.nat(20), fc.nat(9), fc.nat(30_000), fc.option(fc.nat(99_999), { nil: undefined }));
  const version = build.map(([a, b, c, d]) => [a, b, c, ...(d === undefined ? [] : [d])].join('.'));
  // Characters containerd escapes in an os option (%, +, parentheses, slash) included.
  const feature = fc.string({ unit: fc.constantFrom(...'abcwin32k_.-%+()/'.split('')), minLength: 1, maxLength: 8 });
  const platform = fc
    .record({
      os: fc.constantFrom('windows', 'Windows', 'linux'),
      architecture: fc.constantFrom('amd64', 'x86_64', 'arm64', 'riscv64', 'weird'),
      variant: fc.option(fc.constantFrom('v2', 'v3', 'v8.2', 'v9', 'x'), { nil: undefined }),
      osVersion: fc.option(version, { nil: undefined }),
      osFeatures: fc.option(fc.array(feature, { minLength: 1, maxLength: 3 }), { nil: undefined }),
    })
    .map((r): Platform => Object.fromEntries(Object.entries(r).filter(([, v]) => v !== undefined)) as unknown as Platform);

  it('format then parse gives the normalised platform, os.version and os.features included', () => {
    fc.assert(
      fc.property(platform, (p) => {
        const n = normalizePlatform(p);
        assert.deepEqual(parsePlatform(formatPlatform(p)), n);
        assert.equal(formatPlatform(parsePlatform(formatPlatform(n))), formatPlatform(n));
      }),
      { numRuns: 1000 },
    );
  });

  it('every fallback keeps the os, os.version and os.features; a Windows host runs its own build', () => {
    fc.assert(
      fc.property(platform, (p) => {
        const n = normalizePlatform(p);
        for (const q of compatiblePlatforms(p)) {
          assert.equal(q.os, n.os);
          assert.equal(q.osVersion, n.osVersion);
          assert.deepEqual(q.osFeatures, n.osFeatures);
        }
        if (n.os === 'windows' && n.osVersion) assert.equal(bestMatch(index(entry(1, { ...n, osFeatures: [] })), n)?.digest, digest(1));
      }),
      { numRuns: 1000 },
    );
  });
});

describe('fallback order (containerd platforms.Only)', () => {
  const cases: Array<[string, string[]]> = [
    ['linux/amd64/v4', ['linux/amd64/v4', 'linux/amd64/v3', 'linux/amd64/v2', 'linux/amd64', 'linux/386']],
    ['linux/amd64/v3', ['linux/amd64/v3', 'linux/amd64/v2', 'linux/amd64', 'linux/386']],
    ['linux/amd64/v2', ['linux/amd64/v2', 'linux/amd64', 'linux/386']],
    ['linux/amd64', ['linux/amd64', 'linux/386']],
    ['linux/arm64/v8.2', ['linux/arm64/v8.2', 'linux/arm64/v8.1', 'linux/arm64', 'linux/arm/v8', 'linux/arm/v7', 'linux/arm/v6', 'linux/arm/v5']],
    [
      'linux/arm64/v9.1',
      ['linux/arm64/v9.1', 'linux/arm64/v9', 'linux/arm64/v8.6', 'linux/arm64/v8.5', 'linux/arm64/v8.4', 'linux/arm64/v8.3', 'linux/arm64/v8.2', 'linux/arm64/v8.1', 'linux/arm64', 'linux/arm/v8', 'linux/arm/v7', 'linux/arm/v6', 'linux/arm/v5'],
    ],
    ['linux/arm/v8', ['linux/arm/v8', 'linux/arm/v7', 'linux/arm/v6', 'linux/arm/v5']],
    ['linux/arm/v5', ['linux/arm/v5']],
    ['linux/riscv64', ['linux/riscv64']],
    ['linux/loong64', ['linux/loong64']],
    ['linux/mips64le', ['linux/mips64le']],
    ['linux/ppc64le', ['linux/ppc64le']],
    ['linux/sparc64/x', ['linux/sparc64/x']],
    // os.version and os.features travel with every fallback, as in containerd.
    ['windows(10.0.17763)/amd64', ['windows(10.0.17763)/amd64', 'windows(10.0.17763)/386']],
  ];
  for (const [wanted, order] of cases) {
    it(`${wanted} runs ${order.join(' > ')}`, () => assert.deepEqual(compatiblePlatforms(parsePlatform(wanted)).map(formatPlatform), order));
  }
});

describe('Windows builds (containerd’s os.version matcher)', () => {
  const cases: Array<[string, string, boolean]> = [
    ['10.0.17763', '10.0.17763.5122', true],
    ['10.0.17763.5122', '10.0.17763.6054', true],
    ['10.0.17763', '10.0.20348.2113', false],
    ['10.0.17763', '10.0.14393.6452', false],
    ['10.0.20348', '10.0.17763.5122', false],
    ['10.0.20348', '10.0.20348.2113', true],
    // From Windows Server 2022 on, the stable ABI: a newer host runs 20348 images, never newer ones than itself.
    ['10.0.26100', '10.0.20348.2113', true],
    ['10.0.26100', '10.0.26100.1', true],
    ['10.0.20348', '10.0.26100.1', false],
    ['10.0.22621', '10.0.17763.5122', false],
    ['6.3.17763', '10.0.17763.5122', false],
    ['10.0.17763', 'junk', false],
  ];
  for (const [host, container, ok] of cases) it(`a ${host} host ${ok ? 'runs' : 'does not run'} ${container}`, () => assert.equal(windowsCanRun(host, container), ok));

  it('orders builds numerically, not as strings', () => {
    assert.ok(compareWindowsVersions('10.0.17763.10000', '10.0.17763.9999') > 0);
    assert.ok(compareWindowsVersions('10.0.20348.1', '10.0.17763.6054') > 0);
    assert.ok(compareWindowsVersions(undefined, '10.0.17763.1') < 0);
    assert.equal(compareWindowsVersions('10.0.17763', '10.0.17763.0'), 0);
  });
});

describe('best match in an index with linux and windows entries, amd64 levels and os.features', () => {
  const full = index(
    entry(1, { os: 'linux', architecture: 'amd64' }),
    entry(2, { os: 'linux', architecture: 'amd64', variant: 'v3' }),
    entry(3, { os: 'linux', architecture: 'amd64', variant: 'v2' }),
    entry(4, { os: 'windows', architecture: 'amd64', osVersion: '10.0.17763.5122' }),
    entry(5, { os: 'windows', architecture: 'amd64', osVersion: '10.0.20348.2113' }),
    entry(6, { os: 'windows', architecture: 'amd64', osVersion: '10.0.17763.6054' }),
    entry(7, { os: 'windows', architecture: 'amd64', osVersion: '10.0.17763.9999', osFeatures: ['win32k'] }),
    entry(8, { os: 'linux', architecture: 'arm64', variant: 'v8.2' }),
    entry(9, { os: 'linux', architecture: 'riscv64' }),
    entry(10, { os: 'linux', architecture: 'loong64' }),
    entry(11, { os: 'unknown', architecture: 'unknown' }),
  );
  const cases: Array<[string, number | undefined]> = [
    ['linux/amd64', 1],
    ['linux/amd64/v2', 3],
    ['linux/amd64/v3', 2],
    // A v4 machine runs the v3 image, the best it can.
    ['linux/amd64/v4', 2],
    ['linux/386', undefined],
    // Without a build: the first Windows entry, as the publisher ordered them.
    ['windows/amd64', 4],
    // With one: the newest revision of that build, never one needing a feature the host lacks.
    ['windows(10.0.17763)/amd64', 6],
    ['windows(10.0.17763.5122)/amd64', 6],
    ['windows(10.0.17763+win32k)/amd64', 7],
    ['windows(10.0.20348)/amd64', 5],
    ['windows(10.0.26100)/amd64', 5],
    ['windows(10.0.14393)/amd64', undefined],
    ['windows/arm64', undefined],
    ['linux/arm64', undefined],
    ['linux/arm64/v8.2', 8],
    ['linux/arm64/v8.5', 8],
    ['linux/arm64/v9', 8],
    ['linux/riscv64', 9],
    ['linux/loong64', 10],
    ['linux/mips64le', undefined],
  ];
  for (const [wanted, n] of cases) {
    it(`${wanted} → ${n ?? 'nothing'}`, () => assert.equal(bestMatch(full, parsePlatform(wanted))?.digest, n === undefined ? undefined : digest(n)));
  }

  it('never hands a Windows image to a Linux machine, nor a Linux one to Windows', () => {
    const windowsOnly = index(entry(4, { os: 'windows', architecture: 'amd64', osVersion: '10.0.17763.5122' }));
    const linuxOnly = index(entry(1, { os: 'linux', architecture: 'amd64' }));
    assert.equal(bestMatch(windowsOnly, parsePlatform('linux/amd64')), undefined);
    assert.equal(bestMatch(windowsOnly, parsePlatform('linux/amd64/v3')), undefined);
    assert.equal(bestMatch(linuxOnly, parsePlatform('windows/amd64')), undefined);
    assert.equal(bestMatch(linuxOnly, parsePlatform('windows(10.0.17763)/amd64')), undefined);
  });

  it('an entry without os.version suits any build; an unknown architecture matches only itself, variant and all', () => {
    const loose = index(entry(12, { os: 'windows', architecture: 'amd64' }), entry(13, { os: 'linux', architecture: 'sparc64', variant: 'Weird' }));
    assert.equal(bestMatch(loose, parsePlatform('windows(10.0.17763)/amd64'))?.digest, digest(12));
    assert.equal(bestMatch(loose, parsePlatform('linux/sparc64/weird'))?.digest, digest(13));
    assert.equal(bestMatch(loose, parsePlatform('linux/sparc64')), undefined);
    assert.equal(platformMatches(parsePlatform('linux/amd64'), { os: 'linux', architecture: 'amd64', features: ['sse4'] }), true, 'features are never matched');
  });
});

describe('parseIndex reads the whole platform object', () => {
  it('os.version, os.features and features; fields of the wrong type are left out', () => {
    const doc = {
      schemaVersion: 2,
      mediaType: OCI_INDEX,
      manifests: [
        { mediaType: OCI_MANIFEST, digest: digest(1), size: 1, platform: { os: 'windows', architecture: 'amd64', 'os.version': '10.0.17763.5122', 'os.features': ['win32k'], features: ['sse4'] } },
        { mediaType: OCI_MANIFEST, digest: digest(2), size: 2, platform: { os: 'linux', architecture: 'amd64', 'os.version': 7, 'os.features': 'x', features: [1] } },
      ],
    };
    const parsed = parseIndex(Buffer.from(JSON.stringify(doc)), OCI_INDEX);
    assert.deepEqual(parsed.manifests[0]?.platform, { os: 'windows', architecture: 'amd64', osVersion: '10.0.17763.5122', osFeatures: ['win32k'], features: ['sse4'] });
    assert.deepEqual(parsed.manifests[1]?.platform, { os: 'linux', architecture: 'amd64' });
  });

  it('platformJson writes back what readPlatform read, with the OCI field names', () => {
    const p: Platform = { os: 'windows', architecture: 'amd64', variant: 'x', osVersion: '10.0.17763.5122', osFeatures: ['win32k'], features: ['sse4'] };
    assert.deepEqual(platformJson(p), { architecture: 'amd64', os: 'windows', 'os.version': '10.0.17763.5122', 'os.features': ['win32k'], variant: 'x', features: ['sse4'] });
    assert.deepEqual(readPlatform(platformJson(p)), p);
    assert.deepEqual(platformJson({ os: 'linux', architecture: 'arm64' }), { architecture: 'arm64', os: 'linux' });
  });
});

describe('filtered index: whole entries cut out of the upstream bytes', () => {
  // Pretty-printed, keys in an unusual order, escapes JSON.stringify would not write.
  const kept = `{
      "platform": { "os.version": "10.0.17763.5122", "architecture": "amd64", "os": "windows", "os.features": ["win32k"], "features": ["sse4"] },
      "size": 2,
      "digest": "${digest(2)}",
      "mediaType": "${OCI_MANIFEST}",
      "annotations": { "note": "caf\\u00e9 }]\\" \u00e9" }
    }`;
  const attestation = `{"mediaType":"${OCI_MANIFEST}","digest":"${digest(8)}","size":8,"platform":{"os":"unknown","architecture":"unknown"},"annotations":{"vnd.docker.reference.digest":"${digest(2)}"}}`;
  const other = (n: number) => `{ "mediaType": "${OCI_MANIFEST}", "digest": "${digest(n)}", "size": ${n}, "platform": { "os": "linux", "architecture": "amd64" } }`;
  const doc = (entries: string[]) => `{
  "schemaVersion": 2,
  "mediaType": "${OCI_INDEX}",
  "manifests": [
    ${entries.join(',\n    ')}
  ],
  "annotations": { "org.opencontainers.image.created": "2024-01-01T00:00:00Z" }
}
`;
  const keep: Descriptor = { mediaType: OCI_MANIFEST, digest: digest(2), size: 2 };

  it('keeps the chosen entry and its attestation byte for byte, and everything around them', () => {
    const out = filterIndex(Buffer.from(doc([other(1), kept, other(3), attestation, other(4)])), keep).toString('utf8');
    assert.equal(out, doc([kept, attestation]));
    const platform = (JSON.parse(out) as { manifests: Array<{ platform: unknown }> }).manifests[0]?.platform;
    assert.deepEqual(platform, { 'os.version': '10.0.17763.5122', architecture: 'amd64', os: 'windows', 'os.features': ['win32k'], features: ['sse4'] });
  });

  it('a first, last or only entry', () => {
    assert.equal(filterIndex(Buffer.from(doc([kept, other(1)])), keep).toString(), doc([kept]));
    assert.equal(filterIndex(Buffer.from(doc([other(1), kept])), keep).toString(), doc([kept]));
    assert.equal(filterIndex(Buffer.from(doc([kept])), keep).toString(), doc([kept]));
  });

  it('finds the array JSON.parse would: the last "manifests" key, not one inside a string or a nested object', () => {
    const tricky = Buffer.from(`{"a":"\\"manifests\\": [1]","nested":{"manifests":[9]},"manifests":[1,2],"manifests": [ {"x":[3]} , "]" ]}`);
    const spans = topLevelArrayElements(tricky, 'manifests') ?? [];
    assert.deepEqual(spans.map((s) => tricky.subarray(s.start, s.end).toString()), ['{"x":[3]}', '"]"']);
    assert.equal(topLevelArrayElements(Buffer.from('{"manifests":{}}'), 'manifests'), undefined);
  });
});

describe('a rule for a Windows build', () => {
  it('is read from the config, normalised, and decides with its os.version', () => {
    const config = parseConfig({
      upstreams: { 'docker.io': { url: 'https://registry-1.docker.io' } },
      defaultUpstream: 'docker.io',
      platform: { rules: [{ match: { clientCidr: '10.1.0.0/16' }, platform: 'Windows(10.0.17763)/AMD64', mode: 'resolve' }] },
    });
    assert.equal(config.platform.rules[0]?.platform, 'windows(10.0.17763)/amd64');
    const decision = new PlatformPolicy(config.platform).decide({ port: 5000, host: undefined, address: '10.1.2.3', userAgent: undefined, repositories: ['x'] });
    assert.deepEqual(decision.platform, { os: 'windows', architecture: 'amd64', osVersion: '10.0.17763' });
  });

  it('with a build that is not major.minor.build is refused, naming the field', () => {
    assert.throws(
      () => parseConfig({ upstreams: { 'docker.io': { url: 'https://x' } }, defaultUpstream: 'docker.io', platform: { rules: [{ platform: 'windows(10.0)/amd64', mode: 'resolve' }] } }),
      (err: unknown) => err instanceof ConfigError && /platform\.rules\.0\.platform: invalid platform "windows\(10\.0\)\/amd64" \(a Windows os\.version/.test(err.message),
    );
  });
});
