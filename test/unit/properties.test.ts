// Property-based tests (fast-check) for the parsers that read what clients
// and upstreams send: repository names, tags, digests and /v2 paths; Range;
// platforms; WWW-Authenticate challenges. Valid inputs are generated from
// the grammars and must parse and round-trip; arbitrary input must either
// parse or fail the documented way, never with another exception. A failure
// prints the seed and the shrunk counterexample; replay with
// `fc.assert(..., { seed, path })`.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import fc from 'fast-check';
import { RegistryError } from '../../src/errors.ts';
import { parseRange } from '../../src/http/range.ts';
import { parseV2Path } from '../../src/http/v2-path.ts';
import { digestAlgorithm, digestHex, digestOf, parseDigest } from '../../src/oci/digest.ts';
import { parseName, parseReference, parseTag } from '../../src/oci/reference.ts';
import { compatiblePlatforms } from '../../src/platform/match.ts';
import { formatPlatform, normalizePlatform, parsePlatform, samePlatform, type Platform } from '../../src/platform/platform.ts';
import { parseChallenges } from '../../src/upstream/challenge.ts';

const RUNS = { numRuns: 2000 };

/** The error code fn throws, undefined when it returns; any other exception fails the property. */
function outcome(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (err) {
    if (!(err instanceof RegistryError)) throw new Error(`expected a RegistryError, got ${String(err)}`, { cause: err });
    return err.code;
  }
}

const chars = (s: string) => fc.constantFrom(...s.split(''));
const LOWER_ALNUM = 'abcdefghijklmnopqrstuvwxyz0123456789';
const HEX = '0123456789abcdef';

// ---------------------------------------------------------------------------
// The spec's grammar, as generators (and, for arbitrary strings, as an oracle)

const alnum = fc.string({ unit: chars(LOWER_ALNUM), minLength: 1, maxLength: 6 });
const separator = fc.oneof(fc.constant('.'), fc.constant('_'), fc.constant('__'), fc.integer({ min: 1, max: 3 }).map((n) => '-'.repeat(n)));
const component = fc
  .tuple(alnum, fc.array(fc.tuple(separator, alnum), { maxLength: 3 }))
  .map(([head, rest]) => head + rest.map(([s, a]) => s + a).join(''));
const validName = fc.array(component, { minLength: 1, maxLength: 6 }).map((c) => c.join('/')).filter((n) => n.length <= 255);
const validTag = fc
  .tuple(chars(`${LOWER_ALNUM}ABCXYZ_`), fc.string({ unit: chars(`${LOWER_ALNUM}ABCXYZ._-`), maxLength: 127 }))
  .map(([a, b]) => a + b);
const validDigest = fc.oneof(
  fc.string({ unit: chars(HEX), minLength: 64, maxLength: 64 }).map((h) => `sha256:${h}`),
  fc.string({ unit: chars(HEX), minLength: 128, maxLength: 128 }).map((h) => `sha512:${h}`),
);

const NAME_ORACLE = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:\/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$/;
const TAG_ORACLE = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
const DIGEST_ORACLE = /^(?:sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/;

/** Arbitrary text, weighted towards the characters these grammars care about, plus mutations of valid input. */
const anyText = fc.oneof(
  fc.string({ maxLength: 80 }),
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.string({ unit: chars(`${LOWER_ALNUM}AZ._-/:@%\\ +=\u0000\u00e9`), maxLength: 80 }),
);
const mutated = (valid: fc.Arbitrary<string>) =>
  fc.tuple(valid, fc.nat(), fc.constantFrom('', '.', '..', '/', '//', '_', '___', '-', ':', 'A', '%2e', '\\', '\u0000', ' ', '\u0130', 'sha256:'), fc.boolean()).map(([v, at, ins, replace]) => {
    const i = at % (v.length + 1);
    return v.slice(0, i) + ins + v.slice(replace ? i + 1 : i);
  });

describe('properties: repository names, tags, digests', () => {
  it('generated valid names, tags and digests parse to themselves', () => {
    fc.assert(fc.property(validName, (n) => parseName(n) === n), RUNS);
    fc.assert(fc.property(validTag, (t) => parseTag(t) === t), RUNS);
    fc.assert(
      fc.property(validDigest, (d) => {
        const parsed = parseDigest(d);
        return parsed === d && `${digestAlgorithm(parsed)}:${digestHex(parsed)}` === d;
      }),
      RUNS,
    );
  });

  it('a reference is a digest exactly when it has a colon, and round-trips either way', () => {
    fc.assert(fc.property(validTag, (t) => assert.deepEqual(parseReference(t), { kind: 'tag', tag: t })), RUNS);
    fc.assert(fc.property(validDigest, (d) => assert.deepEqual(parseReference(d), { kind: 'digest', digest: d })), RUNS);
  });

  it('digestOf(bytes) is the sha256/sha512 of the bytes and parses', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 512 }), fc.constantFrom('sha256' as const, 'sha512' as const), (bytes, alg) => {
        const d = digestOf(bytes, alg);
        assert.equal(d, `${alg}:${createHash(alg).update(bytes).digest('hex')}`);
        assert.equal(parseDigest(d), d);
      }),
      RUNS,
    );
  });

  it('arbitrary and mutated text: parsed exactly when the grammar says so, else the right RegistryError', () => {
    fc.assert(
      fc.property(fc.oneof(anyText, mutated(validName)), (s) => {
        const code = outcome(() => assert.equal(parseName(s), s));
        assert.equal(code, NAME_ORACLE.test(s) && s.length <= 255 ? undefined : 'NAME_INVALID', JSON.stringify(s));
      }),
      RUNS,
    );
    fc.assert(
      fc.property(fc.oneof(anyText, mutated(validTag)), (s) => {
        const code = outcome(() => assert.equal(parseTag(s), s));
        assert.equal(code, TAG_ORACLE.test(s) ? undefined : 'TAG_INVALID', JSON.stringify(s));
      }),
      RUNS,
    );
    fc.assert(
      fc.property(fc.oneof(anyText, mutated(validDigest)), (s) => {
        const code = outcome(() => assert.equal(parseDigest(s), s));
        assert.equal(code, DIGEST_ORACLE.test(s) ? undefined : 'DIGEST_INVALID', JSON.stringify(s));
      }),
      RUNS,
    );
    fc.assert(
      fc.property(fc.oneof(anyText, mutated(validTag), mutated(validDigest)), (s) => {
        const code = outcome(() => parseReference(s));
        const expected = s.includes(':') ? (DIGEST_ORACLE.test(s) ? undefined : 'DIGEST_INVALID') : TAG_ORACLE.test(s) ? undefined : 'TAG_INVALID';
        assert.equal(code, expected, JSON.stringify(s));
      }),
      RUNS,
    );
  });

  it('names are limited to 255 characters exactly', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 400 }), (n) => {
        const name = 'a'.repeat(n);
        assert.equal(outcome(() => parseName(name)), n <= 255 ? undefined : 'NAME_INVALID');
      }),
    );
  });
});

describe('properties: /v2 paths', () => {
  const hostPrefix = fc.option(
    fc.tuple(fc.constantFrom('registry.local', 'ghcr.io', 'localhost', 'a-b.c'), fc.integer({ min: 1, max: 65535 })).map(([h, p]) => `${h}:${p}`),
    { nil: undefined },
  );

  it('generated requests parse to exactly their endpoint, name and reference (colon encoded or not)', () => {
    fc.assert(
      fc.property(hostPrefix, validName, fc.oneof(validTag, validDigest), fc.boolean(), (host, name, ref, encode) => {
        const full = host ? `${host}/${name}` : name;
        const wireRef = encode ? ref.replace(':', '%3A') : ref;
        const reference = ref.includes(':') ? { kind: 'digest', digest: ref } : { kind: 'tag', tag: ref };
        assert.deepEqual(parseV2Path(`/v2/${full}/manifests/${wireRef}`), { endpoint: 'manifest', name: full, reference });
        assert.deepEqual(parseV2Path(`/v2/${full}/tags/list`), { endpoint: 'tags', name: full });
        if (ref.includes(':')) {
          assert.deepEqual(parseV2Path(`/v2/${full}/blobs/${wireRef}`), { endpoint: 'blob', name: full, digest: ref });
          assert.deepEqual(parseV2Path(`/v2/${full}/referrers/${wireRef}`), { endpoint: 'referrers', name: full, digest: ref });
        }
      }),
      RUNS,
    );
  });

  it('any path either parses to grammar-clean parts or is a RegistryError; a name never carries .., %, \\ or NUL', () => {
    const segment = fc.oneof(
      anyText,
      fc.constantFrom('..', '.', '%2e%2e', '%2f', '%00', '\\', 'manifests', 'blobs', 'tags', 'list', 'referrers', 'library', 'app', 'ghcr.io:443', `sha256:${'a'.repeat(64)}`),
    );
    fc.assert(
      fc.property(fc.array(segment, { maxLength: 8 }), (segments) => {
        const path = `/v2/${segments.join('/')}`;
        let parsed: ReturnType<typeof parseV2Path>;
        try {
          parsed = parseV2Path(path);
        } catch (err) {
          assert.ok(err instanceof RegistryError, `${JSON.stringify(path)} threw ${String(err)}`);
          assert.ok(['NAME_INVALID', 'MANIFEST_UNKNOWN', 'DIGEST_INVALID', 'NAME_UNKNOWN'].includes(err.code), err.code);
          return;
        }
        if (parsed.endpoint === 'base') return;
        const slash = parsed.name.indexOf('/');
        const first = parsed.name.slice(0, slash);
        const repository = /^[a-z0-9.-]+:\d{1,5}$/.test(first) ? parsed.name.slice(slash + 1) : parsed.name;
        assert.ok(NAME_ORACLE.test(repository) && repository.length <= 255, `${JSON.stringify(path)} → name ${JSON.stringify(parsed.name)}`);
        if (parsed.endpoint === 'manifest' && parsed.reference.kind === 'tag') assert.match(parsed.reference.tag, TAG_ORACLE);
        if (parsed.endpoint === 'manifest' && parsed.reference.kind === 'digest') assert.match(parsed.reference.digest, DIGEST_ORACLE);
        if (parsed.endpoint === 'blob' || parsed.endpoint === 'referrers') assert.match(parsed.digest, DIGEST_ORACLE);
      }),
      { numRuns: 5000 },
    );
  });
});

describe('properties: Range', () => {
  const size = fc.oneof(fc.integer({ min: 0, max: 5000 }), fc.maxSafeNat());
  const digits = fc.oneof(fc.constant(''), fc.nat().map(String), fc.maxSafeNat().map(String), fc.string({ unit: chars('0123456789'), maxLength: 30 }));
  const ws = fc.constantFrom('', ' ', '  ', '\t');
  const shaped = fc
    .tuple(ws, fc.constantFrom('bytes', 'BYTES', 'Bytes', 'items', 'byte'), ws, fc.constantFrom('=', '==', ':'), ws, digits, ws, fc.constantFrom('-', '--', ''), ws, digits, ws, fc.constantFrom('', ',', ',0-1', ';', ' x'))
    .map((parts) => parts.join(''));
  const header = fc.option(fc.oneof(shaped, fc.string({ maxLength: 40 }), fc.string({ unit: chars('bytes=0123456789-, '), maxLength: 40 })), { nil: undefined });

  it('for any size and header: undefined, unsatisfiable, or 0 <= start <= end < size', () => {
    fc.assert(
      fc.property(size, header, (n, h) => {
        const r = parseRange(h, n);
        if (r === undefined || r === 'unsatisfiable') return;
        assert.ok(Number.isSafeInteger(r.start) && Number.isSafeInteger(r.end), JSON.stringify({ h, n, r }));
        assert.ok(0 <= r.start && r.start <= r.end && r.end < n, JSON.stringify({ h, n, r }));
      }),
      { numRuns: 10_000 },
    );
  });

  it('generated valid ranges give exactly the expected slice', () => {
    const body = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 31 + 7) & 0xff));
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 4096 }), fc.nat(), fc.nat(), fc.boolean(), ws, (n, a, b, openEnded, pad) => {
        const start = a % n;
        const end = start + (b % (2 * n));
        const h = openEnded ? `bytes=${pad}${start}-` : `bytes=${start}${pad}-${pad}${end}`;
        const r = parseRange(h, n);
        const last = openEnded ? n - 1 : Math.min(end, n - 1);
        assert.deepEqual(r, { start, end: last }, h);
        const slice = body.subarray(0, n).subarray(r.start, r.end + 1);
        assert.ok(slice.equals(body.subarray(start, last + 1)));
        assert.equal(slice.length, last - start + 1);
      }),
      RUNS,
    );
  });

  it('suffix ranges are the last N bytes; starts at or past the end are unsatisfiable', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: 10_000 }), fc.integer({ min: 1, max: 20_000 }), (n, k) => {
        assert.deepEqual(parseRange(`bytes=-${k}`, n), { start: Math.max(0, n - k), end: n - 1 });
        assert.equal(parseRange(`bytes=${n + (k % 7)}-`, n), 'unsatisfiable');
        assert.equal(parseRange(`bytes=${n + (k % 7)}-${n + k}`, n), 'unsatisfiable');
      }),
      RUNS,
    );
  });

  it('several ranges, or a backwards one, are ignored (the whole body)', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(100), fc.nat(100)), { minLength: 2, maxLength: 5 }), (ranges) => {
        assert.equal(parseRange(`bytes=${ranges.map(([a, b]) => `${a}-${a + b}`).join(',')}`, 1000), undefined);
      }),
    );
    fc.assert(fc.property(fc.nat(1000), fc.integer({ min: 1, max: 1000 }), (a, d) => assert.equal(parseRange(`bytes=${a + d}-${a}`, 5000), undefined)));
  });
});

describe('properties: platforms', () => {
  const token = fc.string({ unit: chars('abcdefghijklmnopqrstuvwxyzABCXYZ0123456789_.-'), minLength: 1, maxLength: 10 });
  const os = fc.oneof(fc.constantFrom('linux', 'Linux', 'LINUX', 'windows', 'darwin', 'freebsd'), token);
  const arch = fc.oneof(
    fc.constantFrom('amd64', 'AMD64', 'x86_64', 'x86-64', 'aarch64', 'arm64', 'ARM64', 'arm', 'armhf', 'armel', 'i386', 'i486', 'i586', 'i686', '386', 'ppc64le', 's390x', 'riscv64', 'mips64le'),
    fc.constantFrom('constructor', '__proto__', 'toString', 'hasOwnProperty', 'valueOf'),
    token,
  );
  const variant = fc.option(fc.oneof(fc.constantFrom('v5', 'v6', 'v7', 'v8', 'v9', 'V7', 'V8', '5', '6', '7', '8', '1', 'v1', 'v2', 'v3', 'v4', '08'), token), { nil: undefined });
  const platform = fc.tuple(os, arch, variant).map(([o, a, v]): Platform => (v === undefined ? { os: o, architecture: a } : { os: o, architecture: a, variant: v }));

  it('normalise is idempotent', () => {
    fc.assert(fc.property(platform, (p) => assert.deepEqual(normalizePlatform(normalizePlatform(p)), normalizePlatform(p))), RUNS);
  });

  it('format then parse gives the normalised platform; parse then format is stable', () => {
    fc.assert(
      fc.property(platform, (p) => {
        const n = normalizePlatform(p);
        assert.deepEqual(parsePlatform(formatPlatform(p)), n);
        assert.deepEqual(parsePlatform(formatPlatform(n)), n);
        assert.equal(formatPlatform(parsePlatform(formatPlatform(n))), formatPlatform(n));
      }),
      RUNS,
    );
  });

  it('compatiblePlatforms(p) starts with normalise(p), holds normalised entries of the same OS, without repeats', () => {
    fc.assert(
      fc.property(platform, (p) => {
        const list = compatiblePlatforms(p);
        assert.deepEqual(list[0], normalizePlatform(p));
        for (const q of list) {
          assert.deepEqual(normalizePlatform(q), q);
          assert.equal(q.os, list[0]!.os);
        }
        const keys = list.map(formatPlatform);
        assert.equal(new Set(keys).size, keys.length, keys.join(' '));
      }),
      RUNS,
    );
  });

  it('samePlatform is reflexive through normalisation and symmetric', () => {
    fc.assert(
      fc.property(platform, platform, (p, q) => {
        assert.ok(samePlatform(p, normalizePlatform(p)));
        assert.equal(samePlatform(p, q), samePlatform(q, p));
      }),
      RUNS,
    );
  });

  it('an empty variant means no variant (an index may carry "variant": "")', () => {
    fc.assert(
      fc.property(os, arch, (o, a) => {
        assert.deepEqual(normalizePlatform({ os: o, architecture: a, variant: '' }), normalizePlatform({ os: o, architecture: a }), `${o}/${a}`);
      }),
      RUNS,
    );
  });

  it('parsePlatform on arbitrary text returns a normalised platform or throws its readable Error', () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ maxLength: 40 }), fc.tuple(os, arch, variant).map(([o, a, v]) => [o, a, v].filter((x) => x !== undefined).join('/'))), (s) => {
        let p: Platform;
        try {
          p = parsePlatform(s);
        } catch (err) {
          assert.ok(err instanceof Error && /^invalid platform/.test(err.message), String(err));
          return;
        }
        assert.deepEqual(normalizePlatform(p), p);
      }),
      RUNS,
    );
  });
});

describe('properties: WWW-Authenticate challenges', () => {
  const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
  const tokenChars = "!#$%&'*+.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-";
  const tokenArb = fc.string({ unit: chars(tokenChars), minLength: 1, maxLength: 12 });
  const value = fc.oneof(
    fc.string({ maxLength: 40 }),
    fc.string({ unit: chars('ab ,="\\\t=:/;'), maxLength: 30 }),
    fc.constantFrom('https://auth.docker.io/token', 'repository:library/alpine:pull,push', 'registry.docker.io', ''),
  );
  const ows = fc.constantFrom('', ' ', '  ', '\t');
  const quote = (v: string) => `"${v.replace(/[\\"]/g, (c) => `\\${c}`)}"`;

  /** A challenge: scheme, distinct (case-insensitively) param names and values, and how to spell it. */
  const challenge = (names: fc.Arbitrary<string>) =>
    fc
      .tuple(
        tokenArb,
        fc.uniqueArray(fc.tuple(names, value, fc.boolean(), ows, ows), { maxLength: 5, selector: ([n]) => n.toLowerCase() }),
        ows,
      )
      .map(([scheme, params, sep]) => ({
        scheme,
        params,
        text: `${scheme}${params.length ? ' ' : ''}${params
          .map(([n, v, bare, a, b]) => `${n}${a}=${b}${bare && TOKEN.test(v) ? v : quote(v)}`)
          .join(`${sep},${sep}`)}`,
      }));

  const expected = (cs: Array<{ scheme: string; params: Array<[string, string, ...unknown[]]> }>) =>
    cs.map((c) => ({ scheme: c.scheme.toLowerCase(), params: Object.fromEntries(c.params.map(([n, v]) => [n.toLowerCase(), v])) }));

  it('generated challenges with quoted and escaped values parse back to the same schemes and params', () => {
    fc.assert(
      fc.property(fc.array(challenge(tokenArb), { minLength: 1, maxLength: 3 }), ows, (cs, sep) => {
        const header = cs.map((c) => c.text).join(`${sep}, `);
        assert.deepEqual(parseChallenges(header), expected(cs), header);
        // The same challenges as separate header lines.
        assert.deepEqual(parseChallenges(cs.map((c) => c.text)), expected(cs));
      }),
      RUNS,
    );
  });

  it('param names that are Object.prototype keys are kept like any other', () => {
    fc.assert(
      fc.property(challenge(fc.constantFrom('__proto__', 'constructor', 'toString', 'hasOwnProperty', 'realm', 'service', 'scope')), (c) => {
        assert.deepEqual(parseChallenges(c.text), expected([c]), c.text);
      }),
      RUNS,
    );
  });

  it('arbitrary headers never throw and give lower-case token schemes with string params', () => {
    const noisy = fc.oneof(
      fc.string({ maxLength: 120 }),
      fc.string({ unit: chars('Bearer Basic realm="\\,= \t'), maxLength: 120 }),
      fc.string({ unit: 'binary', maxLength: 60 }),
    );
    fc.assert(
      fc.property(fc.oneof(noisy, fc.array(noisy, { maxLength: 3 })), (h) => {
        for (const c of parseChallenges(h)) {
          assert.ok(TOKEN.test(c.scheme) && c.scheme === c.scheme.toLowerCase(), c.scheme);
          for (const [k, v] of Object.entries(c.params)) {
            assert.ok(TOKEN.test(k) && k === k.toLowerCase(), k);
            assert.equal(typeof v, 'string');
          }
        }
      }),
      { numRuns: 5000 },
    );
  });
});
