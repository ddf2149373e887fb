// Platform awareness over plain HTTP: which platform each request gets
// (rules by port, Host, client address, X-Forwarded-For, User-Agent,
// repository glob; detected; default), what resolve and filter answer for
// every platform in both manifest families, fallbacks, the no-match error,
// by-digest requests left untouched, headers and metrics.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { Agent } from 'undici';
import { startArchway, type ArchwayHandle } from '../harness/archway.ts';
import { sha256Digest as sha256 } from '../harness/digest.ts';
import { ACCEPT, http, type HttpAnswer } from '../harness/http.ts';
import { ALL_PLATFORMS, buildImage, platformString, type BuiltImage, type Platform } from '../harness/images.ts';
import { DOCKER, OCI } from '../harness/media-types.ts';
import { attestationFor, canonicalPlatform, dockerUserAgent, manifestFor } from '../harness/platforms.ts';
import { freePort } from '../harness/ports.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

/** linux/amd64, linux/arm64/v8, linux/arm/v7, linux/arm/v6, linux/386, linux/ppc64le, linux/s390x */
const ALL = ALL_PLATFORMS.map(platformString);
const p = (os: string, architecture: string, variant?: string): Platform => (variant ? { os, architecture, variant } : { os, architecture });

let work: string;
let registry: RegistryHandle;
/** Every rule below; trusts X-Forwarded-For from 127.0.0.1. */
let archway: ArchwayHandle;
/** The same CIDR rule, no trusted proxies, another default platform. */
let untrusting: ArchwayHandle;
let armPort: number;
let filterPort: number;
let from2: Agent;
let from3: Agent;
let from4: Agent;

let oci: BuiltImage;
let ociAtt: BuiltImage;
let docker: BuiltImage;
/** linux/amd64 and linux/arm/v7 only. */
let armV7Only: BuiltImage;
/** linux/386 and linux/arm64/v8 only (Docker media types). */
let i386Only: BuiltImage;
/** linux/amd64 and linux/arm/v6 only, with attestations. */
let armV6Only: BuiltImage;

const images = () => [
  { label: 'OCI index', image: oci, repo: 'all-oci' },
  { label: 'OCI index with attestations', image: ociAtt, repo: 'all-att' },
  { label: 'Docker manifest list', image: docker, repo: 'all-docker' },
];

before(async () => {
  work = await tempDir('archway-platform-api-');
  registry = await startRegistry();
  const small = { layerSizes: [700] };
  oci = await buildImage({ dir: join(work, 'oci'), tag: '1', platforms: ALL_PLATFORMS, format: 'oci', seed: 'pa-oci', ...small });
  ociAtt = await buildImage({ dir: join(work, 'att'), tag: '1', platforms: ALL_PLATFORMS, format: 'oci', attestation: true, seed: 'pa-att', ...small });
  docker = await buildImage({ dir: join(work, 'docker'), tag: '1', platforms: ALL_PLATFORMS, format: 'docker', seed: 'pa-docker', ...small });
  armV7Only = await buildImage({ dir: join(work, 'v7'), tag: '1', platforms: [p('linux', 'amd64'), p('linux', 'arm', 'v7')], format: 'oci', seed: 'pa-v7', ...small });
  i386Only = await buildImage({ dir: join(work, '386'), tag: '1', platforms: [p('linux', '386'), p('linux', 'arm64', 'v8')], format: 'docker', seed: 'pa-386', ...small });
  armV6Only = await buildImage({
    dir: join(work, 'v6'),
    tag: '1',
    platforms: [p('linux', 'amd64'), p('linux', 'arm', 'v6')],
    format: 'oci',
    attestation: true,
    seed: 'pa-v6',
    ...small,
  });
  const push = (image: BuiltImage, name: string, tag?: string) => pushLayout(image, { hostPort: registry.hostPort, name, ...(tag ? { tag } : {}) });
  await push(oci, 'library/all-oci');
  await push(ociAtt, 'library/all-att');
  await push(docker, 'library/all-docker');
  await push(armV7Only, 'library/armv7-only');
  await push(i386Only, 'library/i386-only');
  await push(armV6Only, 'library/armv6-only');
  // The same index under names that repository globs select (or must not).
  await push(oci, 'library/pi-img');
  await push(oci, 'library/pi-img/nested');
  await push(oci, 'org/team/deep');
  await push(oci, 'library/combo-yes');
  await push(oci, 'library/all-oci', 'cold');

  armPort = await freePort();
  filterPort = await freePort();
  const perPlatform = ALL.flatMap((platform) => [
    { match: { userAgent: `^want:${platform}$` }, platform, mode: 'resolve' as const },
    { match: { userAgent: `^filter:${platform}$` }, platform, mode: 'filter' as const },
  ]);
  archway = await startArchway({
    upstreams: { 'docker.io': { url: registry.url } },
    ports: [armPort, filterPort],
    trustedProxies: ['127.0.0.1'],
    platform: {
      default: 'linux/amd64',
      rules: [
        { match: { port: armPort }, platform: 'linux/arm64', mode: 'resolve' },
        { match: { port: filterPort }, platform: 'linux/arm/v7', mode: 'filter' },
        // Two rules for one User-Agent: the first one wins.
        { match: { userAgent: '^first$' }, platform: 'linux/arm/v6', mode: 'resolve' },
        { match: { userAgent: '^(first|second)$' }, platform: 'linux/s390x', mode: 'resolve' },
        { match: { userAgent: '^pass:arm64$' }, platform: 'linux/arm64', mode: 'passthrough' },
        // All conditions of a rule must hold.
        { match: { userAgent: '^combo$', repository: 'library/combo-yes' }, platform: 'linux/ppc64le', mode: 'resolve' },
        ...perPlatform,
        { match: { host: 'arm.mirror.test' }, platform: 'linux/arm/v7', mode: 'resolve' },
        { match: { clientCidr: '127.0.0.2/32' }, platform: 'linux/ppc64le', mode: 'resolve' },
        { match: { clientCidr: ['192.0.2.0/24', '127.0.0.3'] }, platform: 'detected', mode: 'resolve' },
        { match: { clientCidr: '10.9.0.0/16' }, platform: 'linux/s390x', mode: 'resolve' },
        { match: { repository: 'library/pi-*' }, platform: 'linux/arm/v6', mode: 'resolve' },
        { match: { repository: 'docker.io/org/**' }, platform: 'linux/386', mode: 'filter' },
      ],
    },
  });
  untrusting = await startArchway({
    upstreams: { 'docker.io': { url: registry.url } },
    platform: {
      default: 'linux/ppc64le',
      rules: [{ match: { clientCidr: '10.9.0.0/16' }, platform: 'linux/s390x', mode: 'resolve' }],
    },
  });
  from2 = new Agent({ localAddress: '127.0.0.2' });
  from3 = new Agent({ localAddress: '127.0.0.3' });
  from4 = new Agent({ localAddress: '127.0.0.4' });
});

after(async () => {
  await Promise.all([from2?.close(), from3?.close(), from4?.close()]);
  await untrusting?.stop();
  await archway?.stop();
  await registry?.stop();
  await removeDir(work);
});

interface Ask {
  ua?: string;
  accept?: string;
  method?: 'GET' | 'HEAD';
  headers?: Record<string, string>;
  dispatcher?: Agent;
  /** Base URL; default the main listener. */
  base?: string;
}

function manifest(repo: string, reference: string, ask: Ask = {}): Promise<HttpAnswer> {
  const headers: Record<string, string> = { accept: ask.accept ?? ACCEPT.all, ...ask.headers };
  if (ask.ua !== undefined) headers['user-agent'] = ask.ua;
  return http(`${ask.base ?? archway.url}/v2/${repo}/manifests/${reference}`, {
    method: ask.method ?? 'GET',
    headers,
    ...(ask.dispatcher ? { dispatcher: ask.dispatcher } : {}),
  });
}

const listener = (port: number) => `http://127.0.0.1:${port}`;

function describeAnswer(r: HttpAnswer): string {
  const text = r.body.length < 600 ? r.body.toString('utf8') : `${r.body.length} bytes`;
  return `${r.status} type=${r.headers['content-type']} digest=${r.headers['docker-content-digest']} platform=${r.headers['x-archway-platform']} body=${text}`;
}

/** The answer is this built image manifest, byte for byte, with its real digest; rewritten from `source`. */
function assertResolved(r: HttpAnswer, image: BuiltImage, platform: string, what: string): void {
  const want = manifestFor(image, platform);
  assert.equal(r.status, 200, `${what}: ${describeAnswer(r)}`);
  assert.equal(r.headers['docker-content-digest'], want.digest, `${what}: digest of the ${platform} manifest (${describeAnswer(r)})`);
  assert.ok(r.body.equals(want.bytes), `${what}: the ${platform} manifest bytes`);
  assert.equal(sha256(r.body), want.digest, `${what}: the digest is the body's`);
  assert.equal(r.headers['content-type'], want.mediaType, `${what}: content type`);
  assert.equal(Number(r.headers['content-length']), want.bytes.length, `${what}: content length`);
  assert.equal(r.headers['x-archway-source-digest'], image.topDigest, `${what}: x-archway-source-digest`);
  assert.ok(r.headers['x-archway-platform'], `${what}: x-archway-platform present`);
  assert.equal(canonicalPlatform(r.headers['x-archway-platform'] ?? ''), canonicalPlatform(platform), `${what}: x-archway-platform names ${platform}`);
}

/** The answer is the upstream index exactly, with no rewrite headers. */
function assertPassthrough(r: HttpAnswer, image: BuiltImage, what: string): void {
  assert.equal(r.status, 200, `${what}: ${describeAnswer(r)}`);
  assert.equal(r.headers['docker-content-digest'], image.topDigest, `${what}: the index digest (${describeAnswer(r)})`);
  assert.ok(r.body.equals(image.topBytes), `${what}: index bytes unchanged`);
  assert.equal(r.headers['content-type'], image.topMediaType, `${what}: content type`);
  assert.equal(r.headers['x-archway-platform'], undefined, `${what}: no x-archway-platform`);
  assert.equal(r.headers['x-archway-source-digest'], undefined, `${what}: no x-archway-source-digest`);
}

interface IndexDoc {
  schemaVersion: number;
  mediaType?: string;
  manifests: Array<{ mediaType: string; digest: string; size: number; platform?: Platform; annotations?: Record<string, string> }>;
}

/**
 * The answer is the index narrowed to the platform's entry (plus its
 * attestation): entries carried over unchanged, same media type, a digest
 * that is the body's. Returns the narrowed digest.
 */
function assertFiltered(r: HttpAnswer, image: BuiltImage, platform: string, what: string): string {
  assert.equal(r.status, 200, `${what}: ${describeAnswer(r)}`);
  const want = manifestFor(image, platform);
  const attestation = attestationFor(image, want.digest);
  const original = JSON.parse(image.topBytes.toString('utf8')) as IndexDoc;
  const doc = JSON.parse(r.body.toString('utf8')) as IndexDoc;
  assert.equal(r.headers['content-type'], image.topMediaType, `${what}: media type unchanged`);
  assert.equal(doc.mediaType, original.mediaType, `${what}: mediaType field unchanged`);
  assert.equal(doc.schemaVersion, 2);
  const images = doc.manifests.filter((m) => m.platform?.os !== 'unknown');
  assert.equal(images.length, 1, `${what}: one image entry (${describeAnswer(r)})`);
  assert.equal(images[0]?.digest, want.digest, `${what}: the ${platform} entry`);
  const expectedEntries = original.manifests.filter((m) => m.digest === want.digest || m.digest === attestation?.digest);
  assert.deepEqual(doc.manifests, expectedEntries, `${what}: the kept entries, as the upstream wrote them`);
  assert.equal(doc.manifests.length, attestation ? 2 : 1, `${what}: ${attestation ? 'with' : 'no'} attestation entry`);
  if (attestation) {
    const a = doc.manifests.find((m) => m.digest === attestation.digest);
    assert.equal(a?.annotations?.['vnd.docker.reference.digest'], want.digest, `${what}: attestation names the kept entry`);
  }
  const digest = r.headers['docker-content-digest'] ?? '';
  assert.equal(digest, sha256(r.body), `${what}: Docker-Content-Digest is the sha256 of the body`);
  assert.notEqual(digest, image.topDigest, `${what}: a new digest`);
  assert.equal(Number(r.headers['content-length']), r.body.length);
  assert.equal(r.headers['x-archway-source-digest'], image.topDigest, `${what}: x-archway-source-digest`);
  assert.equal(canonicalPlatform(r.headers['x-archway-platform'] ?? ''), canonicalPlatform(platform), `${what}: x-archway-platform`);
  return digest;
}

function assertManifestUnknown(r: HttpAnswer, wanted: string, available: string[], what: string): void {
  assert.equal(r.status, 404, `${what}: ${describeAnswer(r)}`);
  const body = r.json<{ errors: Array<{ code: string; message: string }> }>();
  assert.equal(body.errors[0]?.code, 'MANIFEST_UNKNOWN', what);
  const message = body.errors[0]?.message ?? '';
  assert.ok(message.includes(wanted), `${what}: the message names ${wanted}: ${message}`);
  for (const a of available) assert.ok(message.includes(a), `${what}: the message lists ${a}: ${message}`);
}

describe('resolve: every platform from an index that has it', () => {
  for (const { label, repo, image } of [
    { label: 'OCI index', repo: 'all-oci', image: () => oci },
    { label: 'OCI index with attestations', repo: 'all-att', image: () => ociAtt },
    { label: 'Docker manifest list', repo: 'all-docker', image: () => docker },
  ]) {
    for (const platform of ALL) {
      it(`${label}: ${platform}`, async () => {
        const get = await manifest(repo, '1', { ua: `want:${platform}` });
        assertResolved(get, image(), platform, 'GET');
        const head = await manifest(repo, '1', { ua: `want:${platform}`, method: 'HEAD' });
        assert.equal(head.status, 200);
        assert.equal(head.body.length, 0);
        assert.equal(head.headers['docker-content-digest'], get.headers['docker-content-digest'], 'HEAD names the same digest');
        assert.equal(head.headers['content-length'], get.headers['content-length']);
        assert.equal(head.headers['content-type'], get.headers['content-type']);
      });
    }
  }
});

describe('filter: every platform narrowed out of an index that has it', () => {
  for (const { label, repo, image } of [
    { label: 'OCI index', repo: 'all-oci', image: () => oci },
    { label: 'OCI index with attestations', repo: 'all-att', image: () => ociAtt },
    { label: 'Docker manifest list', repo: 'all-docker', image: () => docker },
  ]) {
    for (const platform of ALL) {
      it(`${label}: ${platform}; GET and HEAD by the new digest answer the same`, async () => {
        const get = await manifest(repo, '1', { ua: `filter:${platform}` });
        const digest = assertFiltered(get, image(), platform, 'GET by tag');
        const headTag = await manifest(repo, '1', { ua: `filter:${platform}`, method: 'HEAD' });
        assert.equal(headTag.headers['docker-content-digest'], digest, 'HEAD by tag names the narrowed digest');
        assert.equal(headTag.headers['content-length'], get.headers['content-length']);

        // By digest, from a client no rule matches: stored bytes, not a rewrite.
        const byDigest = await manifest(repo, digest);
        assert.equal(byDigest.status, 200, describeAnswer(byDigest));
        assert.ok(byDigest.body.equals(get.body), 'GET by the narrowed digest: identical bytes');
        const headDigest = await manifest(repo, digest, { method: 'HEAD' });
        assert.equal(headDigest.status, 200);
        assert.equal(headDigest.body.length, 0);
        for (const h of ['docker-content-digest', 'content-type', 'content-length', 'etag']) {
          assert.equal(byDigest.headers[h], get.headers[h], `GET by digest: ${h}`);
          assert.equal(headDigest.headers[h], get.headers[h], `HEAD by digest: ${h}`);
        }
        assert.equal(byDigest.headers['x-archway-platform'], undefined, 'a by-digest answer is not a rewrite');
      });
    }
  }

  it('a narrowed index is stable: another archway with an empty cache narrows it to the same bytes and digest', async () => {
    const a = await manifest('all-att', '1', { ua: 'filter:linux/ppc64le' });
    const digest = assertFiltered(a, ociAtt, 'linux/ppc64le', 'this archway');
    // A second answer from this archway would come from its cache; a fresh one has to narrow the index again.
    const fresh = await startArchway({
      upstreams: { 'docker.io': { url: registry.url } },
      platform: { rules: [{ match: { userAgent: '^filter:linux/ppc64le$' }, platform: 'linux/ppc64le', mode: 'filter' }] },
    });
    try {
      const b = await manifest('all-att', '1', { ua: 'filter:linux/ppc64le', base: fresh.url });
      assert.equal(assertFiltered(b, ociAtt, 'linux/ppc64le', 'a fresh archway'), digest);
      assert.ok(a.body.equals(b.body));
    } finally {
      await fresh.stop();
    }
  });
});

describe('fallbacks and the no-match error', () => {
  it('a linux/arm64 resolve rule on an index with only arm/v7 (and amd64) gets arm/v7', async () => {
    const r = await manifest('armv7-only', '1', { base: listener(armPort) });
    assertResolved(r, armV7Only, 'linux/arm/v7', 'arm64 listener');
    assert.equal(r.headers['x-archway-platform'], 'linux/arm/v7');
  });

  it('a linux/arm64 filter rule on that index keeps the arm/v7 entry', async () => {
    const r = await manifest('armv7-only', '1', { ua: 'filter:linux/arm64/v8' });
    assertFiltered(r, armV7Only, 'linux/arm/v7', 'arm64 filter');
    assert.equal(r.headers['x-archway-platform'], 'linux/arm/v7');
  });

  it('a docker daemon reporting arch/arm64 that cannot read indexes gets arm/v7 too', async () => {
    const r = await manifest('armv7-only', '1', { ua: dockerUserAgent('arm64'), accept: OCI.manifest });
    assertResolved(r, armV7Only, 'linux/arm/v7', 'detected arm64, images-only Accept');
  });

  it('linux/amd64 falls back to linux/386', async () => {
    const r = await manifest('i386-only', '1', { ua: 'want:linux/amd64' });
    assertResolved(r, i386Only, 'linux/386', 'amd64 rule');
    assert.equal(r.headers['x-archway-platform'], 'linux/386');
    const old = await manifest('i386-only', '1', { accept: DOCKER.manifest });
    assertResolved(old, i386Only, 'linux/386', 'images-only client, default linux/amd64');
  });

  it('linux/arm/v7 falls back to arm/v6, and a daemon reporting plain arch/arm is arm/v7', async () => {
    const r = await manifest('armv6-only', '1', { ua: 'want:linux/arm/v7' });
    assertResolved(r, armV6Only, 'linux/arm/v6', 'arm/v7 rule');
    const f = await manifest('armv6-only', '1', { ua: 'filter:linux/arm/v7' });
    assertFiltered(f, armV6Only, 'linux/arm/v6', 'arm/v7 filter, with attestation');
    const d = await manifest('armv6-only', '1', { ua: dockerUserAgent('arm'), accept: OCI.manifest });
    assertResolved(d, armV6Only, 'linux/arm/v6', 'detected arm');
  });

  it('an exact match beats a fallback: arm64 on the full index is arm64, not arm/v7', async () => {
    const r = await manifest('all-oci', '1', { base: listener(armPort) });
    assertResolved(r, oci, 'linux/arm64/v8', 'arm64 listener');
  });

  it('a platform the index lacks is 404 MANIFEST_UNKNOWN naming it and listing what exists (resolve, filter, images-only)', async () => {
    const available = ['linux/amd64', 'linux/arm/v7'];
    assertManifestUnknown(await manifest('armv7-only', '1', { ua: 'want:linux/s390x' }), 'linux/s390x', available, 'resolve');
    assertManifestUnknown(await manifest('armv7-only', '1', { ua: 'filter:linux/ppc64le' }), 'linux/ppc64le', available, 'filter');
    assertManifestUnknown(await manifest('armv7-only', '1', { ua: 'want:linux/386' }), 'linux/386', available, '386 does not run amd64');
    assertManifestUnknown(await manifest('i386-only', '1', { ua: 'want:linux/arm/v7' }), 'linux/arm/v7', ['linux/386', 'linux/arm64'], 'arm/v7 does not run arm64');
    assertManifestUnknown(
      await manifest('armv7-only', '1', { ua: dockerUserAgent('s390x'), accept: OCI.manifest }),
      'linux/s390x',
      available,
      'images-only client, detected s390x',
    );
    const head = await manifest('armv7-only', '1', { ua: 'want:linux/s390x', method: 'HEAD' });
    assert.equal(head.status, 404, 'HEAD too');
  });

  it('attestation entries never count as a platform in the error', async () => {
    const r = await manifest('armv6-only', '1', { ua: 'want:linux/s390x' });
    assertManifestUnknown(r, 'linux/s390x', ['linux/amd64', 'linux/arm/v6'], 'with attestations');
    const message = r.json<{ errors: Array<{ message: string }> }>().errors[0]?.message ?? '';
    assert.ok(!message.includes('unknown'), `no unknown/unknown in: ${message}`);
  });
});

describe('clients that cannot read indexes', () => {
  const cases: Array<{ family: string; repo: string; image: () => BuiltImage; accept: string }> = [
    { family: 'OCI index, Accept only the OCI manifest type', repo: 'all-oci', image: () => oci, accept: OCI.manifest },
    { family: 'Docker manifest list, Accept only the Docker manifest type', repo: 'all-docker', image: () => docker, accept: DOCKER.manifest },
  ];
  for (const { family, repo, image, accept } of cases) {
    describe(family, () => {
      it('get the rule’s platform when a resolve rule matches', async () => {
        assertResolved(await manifest(repo, '1', { ua: 'want:linux/s390x', accept }), image(), 'linux/s390x', 'resolve rule');
        assertResolved(await manifest(repo, '1', { base: listener(armPort), accept }), image(), 'linux/arm64/v8', 'port rule');
      });

      it('get the rule’s platform as an image manifest when a filter or passthrough rule matches', async () => {
        assertResolved(await manifest(repo, '1', { ua: 'filter:linux/arm/v6', accept }), image(), 'linux/arm/v6', 'filter rule');
        assertResolved(await manifest(repo, '1', { ua: 'pass:arm64', accept }), image(), 'linux/arm64/v8', 'passthrough rule');
      });

      it('get the detected platform from a docker-like User-Agent', async () => {
        const r = await manifest(repo, '1', { ua: 'docker/20.10 go/go1.19 os/linux arch/arm64', accept });
        assertResolved(r, image(), 'linux/arm64/v8', 'detected arm64');
        assertResolved(await manifest(repo, '1', { ua: dockerUserAgent('ppc64le'), accept }), image(), 'linux/ppc64le', 'detected ppc64le');
        assertResolved(await manifest(repo, '1', { ua: dockerUserAgent('386'), accept }), image(), 'linux/386', 'detected 386');
      });

      it('else platform.default: linux/amd64 here, linux/ppc64le on an archway configured so', async () => {
        assertResolved(await manifest(repo, '1', { accept }), image(), 'linux/amd64', 'no rule, no detected platform');
        assertResolved(await manifest(repo, '1', { ua: 'skopeo/1.13', accept }), image(), 'linux/amd64', 'a User-Agent without os/arch');
        assertResolved(await manifest(repo, '1', { accept, base: untrusting.url }), image(), 'linux/ppc64le', 'default linux/ppc64le');
      });

      it('HEAD answers the same digest as GET', async () => {
        const get = await manifest(repo, '1', { ua: dockerUserAgent('s390x'), accept });
        const head = await manifest(repo, '1', { ua: dockerUserAgent('s390x'), accept, method: 'HEAD' });
        assert.equal(head.headers['docker-content-digest'], manifestFor(image(), 'linux/s390x').digest);
        assert.equal(head.headers['docker-content-digest'], get.headers['docker-content-digest']);
      });
    });
  }

  it('a client that accepts both image types but no index gets the default platform too', async () => {
    assertResolved(await manifest('all-att', '1', { accept: ACCEPT.imagesOnly }), ociAtt, 'linux/amd64', 'images-only');
  });
});

describe('requests by digest are never rewritten', () => {
  const ways = (): Array<[string, Ask]> => [
    ['main listener, no rule', {}],
    ['main listener, images-only Accept', { accept: ACCEPT.imagesOnly }],
    ['resolve rule by User-Agent', { ua: 'want:linux/s390x' }],
    ['filter rule by User-Agent', { ua: 'filter:linux/arm/v6' }],
    ['passthrough rule', { ua: 'pass:arm64' }],
    ['detected platform', { ua: dockerUserAgent('arm64'), accept: OCI.manifest }],
    ['resolve listener', { base: listener(armPort) }],
    ['filter listener', { base: listener(filterPort) }],
    ['filter listener, images-only Accept', { base: listener(filterPort), accept: ACCEPT.imagesOnly }],
    ['Host rule', { headers: { host: 'arm.mirror.test' } }],
    ['client CIDR rule', { dispatcher: from2 }],
    ['trusted X-Forwarded-For', { headers: { 'x-forwarded-for': '10.9.1.1' } }],
  ];
  for (const { label, repo, image } of [
    { label: 'OCI index with attestations', repo: 'all-att', image: () => ociAtt },
    { label: 'Docker manifest list', repo: 'all-docker', image: () => docker },
  ]) {
    it(`${label}: the index and every child, byte for byte, through every listener and mode`, async () => {
      const img = image();
      const contents = [
        { digest: img.topDigest, bytes: img.topBytes, mediaType: img.topMediaType },
        ...img.manifests.map((m) => ({ digest: m.digest, bytes: m.bytes, mediaType: m.mediaType })),
        ...img.attestations.map((a) => ({ digest: a.digest, bytes: a.bytes, mediaType: a.mediaType })),
      ];
      for (const [way, ask] of ways()) {
        for (const c of contents) {
          const what = `${way}: ${c.digest.slice(0, 19)}`;
          for (const method of ['GET', 'HEAD'] as const) {
            const r = await manifest(repo, c.digest, { ...ask, method });
            assert.equal(r.status, 200, `${what} ${method}: ${describeAnswer(r)}`);
            assert.equal(r.headers['docker-content-digest'], c.digest, `${what} ${method}: digest`);
            assert.equal(r.headers['content-type'], c.mediaType, `${what} ${method}: type`);
            assert.equal(Number(r.headers['content-length']), c.bytes.length, `${what} ${method}: length`);
            assert.equal(r.headers['x-archway-platform'], undefined, `${what} ${method}: not rewritten`);
            if (method === 'GET') assert.ok(r.body.equals(c.bytes), `${what}: identical bytes`);
          }
        }
      }
    });
  }
});

describe('rule matching', () => {
  it('by listener port: the extra listener resolves, the main one passes the index through', async () => {
    assertResolved(await manifest('all-oci', '1', { base: listener(armPort) }), oci, 'linux/arm64/v8', 'arm64 listener');
    assertFiltered(await manifest('all-att', '1', { base: listener(filterPort) }), ociAtt, 'linux/arm/v7', 'arm/v7 filter listener');
    assertPassthrough(await manifest('all-oci', '1'), oci, 'main listener');
  });

  it('by Host header (without its port)', async () => {
    assertResolved(await manifest('all-oci', '1', { headers: { host: 'arm.mirror.test' } }), oci, 'linux/arm/v7', 'Host arm.mirror.test');
    assertResolved(await manifest('all-oci', '1', { headers: { host: 'ARM.mirror.test:5000' } }), oci, 'linux/arm/v7', 'Host with port, other case');
    assertPassthrough(await manifest('all-oci', '1', { headers: { host: 'other.mirror.test' } }), oci, 'another Host');
  });

  it('by client CIDR: 127.0.0.2 gets ppc64le, 127.0.0.1 and 127.0.0.4 pass through', async () => {
    assertResolved(await manifest('all-oci', '1', { dispatcher: from2 }), oci, 'linux/ppc64le', 'from 127.0.0.2');
    assertResolved(await manifest('all-docker', '1', { dispatcher: from2 }), docker, 'linux/ppc64le', 'from 127.0.0.2, Docker list');
    assertPassthrough(await manifest('all-oci', '1'), oci, 'from 127.0.0.1');
    assertPassthrough(await manifest('all-oci', '1', { dispatcher: from4 }), oci, 'from 127.0.0.4');
  });

  it('a CIDR list entry with platform "detected": the client’s own platform; none reported → passthrough', async () => {
    assertResolved(await manifest('all-oci', '1', { dispatcher: from3, ua: dockerUserAgent('s390x') }), oci, 'linux/s390x', 'detected s390x from 127.0.0.3');
    assertResolved(await manifest('all-oci', '1', { dispatcher: from3, ua: dockerUserAgent('arm') }), oci, 'linux/arm/v7', 'detected arm from 127.0.0.3');
    assertPassthrough(await manifest('all-oci', '1', { dispatcher: from3, ua: 'containerd/1.6.20' }), oci, 'no platform in the User-Agent');
    // The same docker User-Agent from an address no rule names: passthrough.
    assertPassthrough(await manifest('all-oci', '1', { ua: dockerUserAgent('s390x') }), oci, 'detected s390x from 127.0.0.1');
  });

  it('X-Forwarded-For is honoured from a trusted proxy', async () => {
    assertResolved(await manifest('all-oci', '1', { headers: { 'x-forwarded-for': '10.9.1.1' } }), oci, 'linux/s390x', 'XFF 10.9.1.1 via 127.0.0.1');
    assertResolved(
      await manifest('all-oci', '1', { headers: { 'x-forwarded-for': '10.9.1.1, 127.0.0.1' } }),
      oci,
      'linux/s390x',
      'XFF chain through the trusted proxy',
    );
    assertPassthrough(await manifest('all-oci', '1', { headers: { 'x-forwarded-for': '10.8.1.1' } }), oci, 'XFF outside the range');
  });

  it('X-Forwarded-For is ignored from an untrusted client and by an archway without trusted proxies', async () => {
    assertPassthrough(await manifest('all-oci', '1', { dispatcher: from4, headers: { 'x-forwarded-for': '10.9.1.1' } }), oci, 'XFF from untrusted 127.0.0.4');
    assertPassthrough(await manifest('all-oci', '1', { base: untrusting.url, headers: { 'x-forwarded-for': '10.9.1.1' } }), oci, 'archway without trustedProxies');
  });

  it('by User-Agent regex (anchored as written)', async () => {
    assertResolved(await manifest('all-oci', '1', { ua: 'want:linux/386' }), oci, 'linux/386', 'want:linux/386');
    assertPassthrough(await manifest('all-oci', '1', { ua: 'xwant:linux/386' }), oci, 'the regex is anchored by ^');
    assertPassthrough(await manifest('all-oci', '1', { ua: 'want:linux/386 extra' }), oci, 'the regex is anchored by $');
  });

  it('by repository glob: * is one segment, matched on the client’s name, the upstream name and the qualified name', async () => {
    assertResolved(await manifest('pi-img', '1'), oci, 'linux/arm/v6', 'pi-img (library/ implied)');
    assertResolved(await manifest('library/pi-img', '1'), oci, 'linux/arm/v6', 'library/pi-img');
    assertPassthrough(await manifest('library/pi-img/nested', '1'), oci, '* does not cross a /');
    assertFiltered(await manifest('org/team/deep', '1'), oci, 'linux/386', 'docker.io/org/** on org/team/deep');
    assertPassthrough(await manifest('all-oci', '1'), oci, 'no glob matches');
  });

  it('all conditions of a rule must hold', async () => {
    assertResolved(await manifest('combo-yes', '1', { ua: 'combo' }), oci, 'linux/ppc64le', 'User-Agent and repository');
    assertPassthrough(await manifest('all-oci', '1', { ua: 'combo' }), oci, 'User-Agent only');
    assertPassthrough(await manifest('combo-yes', '1'), oci, 'repository only');
  });

  it('first match wins', async () => {
    assertResolved(await manifest('all-oci', '1', { ua: 'first' }), oci, 'linux/arm/v6', 'rule 2 before rule 3');
    assertResolved(await manifest('all-oci', '1', { ua: 'second' }), oci, 'linux/s390x', 'only rule 3');
    // The port rule comes before every User-Agent rule.
    assertResolved(await manifest('all-oci', '1', { base: listener(armPort), ua: 'want:linux/s390x' }), oci, 'linux/arm64/v8', 'port before User-Agent');
    // The User-Agent rules come before the Host, CIDR and repository rules.
    assertResolved(await manifest('pi-img', '1', { ua: 'want:linux/ppc64le', dispatcher: from2 }), oci, 'linux/ppc64le', 'User-Agent before repository');
    assertResolved(await manifest('pi-img', '1', { headers: { host: 'arm.mirror.test' } }), oci, 'linux/arm/v7', 'Host before repository');
    assertResolved(await manifest('pi-img', '1', { dispatcher: from2 }), oci, 'linux/ppc64le', 'CIDR before repository');
  });

  it('no match → passthrough: index bytes unchanged, no x-archway headers, HEAD too', async () => {
    for (const { image, repo } of images()) {
      assertPassthrough(await manifest(repo, '1'), image, `${repo} GET`);
      assertPassthrough(await manifest(repo, '1', { ua: 'skopeo/1.13.3' }), image, `${repo} skopeo`);
      const head = await manifest(repo, '1', { method: 'HEAD' });
      assert.equal(head.headers['docker-content-digest'], image.topDigest);
      assert.equal(head.headers['x-archway-platform'], undefined);
    }
  });

  it('a passthrough rule passes the index through', async () => {
    assertPassthrough(await manifest('all-att', '1', { ua: 'pass:arm64' }), ociAtt, 'passthrough rule');
  });
});

describe('one tag, many platforms at once', () => {
  it('concurrent cold requests each get the answer made for their own platform', async () => {
    registry.clearRequests();
    const asks = [
      ...ALL.map((platform) => ({ kind: 'resolve' as const, platform, ask: { ua: `want:${platform}` } })),
      ...ALL.map((platform) => ({ kind: 'filter' as const, platform, ask: { ua: `filter:${platform}` } })),
      { kind: 'passthrough' as const, platform: '', ask: {} },
      { kind: 'resolve' as const, platform: 'linux/amd64', ask: { accept: OCI.manifest } },
    ];
    const answers = await Promise.all(asks.map((a) => manifest('all-oci', 'cold', a.ask)));
    for (const [i, a] of asks.entries()) {
      const r = answers[i] as HttpAnswer;
      if (a.kind === 'resolve') assertResolved(r, oci, a.platform, `resolve ${a.platform}`);
      else if (a.kind === 'filter') assertFiltered(r, oci, a.platform, `filter ${a.platform}`);
      else assertPassthrough(r, oci, 'passthrough');
    }
    const tagGets = (await registry.requests()).filter((q) => q.method === 'GET' && q.path.endsWith('/manifests/cold'));
    assert.equal(tagGets.length, 1, 'one upstream GET of the tag for all of them');
  });
});

describe('headers and metrics', () => {
  const rewrites = (labels: Record<string, string> = {}) => archway.metric('archway_platform_rewrites_total', labels);

  it('resolve answers count by mode and platform', async () => {
    const before = await rewrites({ mode: 'resolve', platform: 'linux/s390x' });
    for (let i = 0; i < 3; i++) assertResolved(await manifest('all-oci', '1', { ua: 'want:linux/s390x' }), oci, 'linux/s390x', 'resolve');
    assert.equal(await rewrites({ mode: 'resolve', platform: 'linux/s390x' }), before + 3);
  });

  it('filter answers count by mode and platform', async () => {
    const before = await rewrites({ mode: 'filter', platform: 'linux/ppc64le' });
    for (let i = 0; i < 2; i++) assertFiltered(await manifest('all-docker', '1', { ua: 'filter:linux/ppc64le' }), docker, 'linux/ppc64le', 'filter');
    assert.equal(await rewrites({ mode: 'filter', platform: 'linux/ppc64le' }), before + 2);
  });

  it('the platform label is the one served after a fallback', async () => {
    const before = await rewrites({ mode: 'resolve', platform: 'linux/386' });
    assertResolved(await manifest('i386-only', '1', { ua: 'want:linux/amd64' }), i386Only, 'linux/386', 'fallback');
    assert.equal(await rewrites({ mode: 'resolve', platform: 'linux/386' }), before + 1);
  });

  it('passthrough, by-digest and failed requests count nothing', async () => {
    const before = await rewrites();
    assertPassthrough(await manifest('all-oci', '1'), oci, 'passthrough');
    await manifest('all-oci', oci.topDigest, { ua: 'want:linux/s390x' });
    await manifest('all-oci', manifestFor(oci, 'linux/s390x').digest, { ua: 'want:linux/s390x', accept: OCI.manifest });
    await manifest('armv7-only', '1', { ua: 'want:linux/s390x' });
    assert.equal(await rewrites(), before);
  });

  it('the request log line names the mode and platform of a rewrite', async () => {
    await manifest('all-oci', '1?probe=log', { ua: 'want:linux/ppc64le' });
    const line = archway.logs().find((l) => l.msg === 'request' && String(l.url).includes('probe=log'));
    assert.ok(line, 'a request line');
    assert.equal(typeof line.platform, 'string');
    assert.ok(String(line.platform).startsWith('resolve:'), `platform field: ${String(line.platform)}`);
    assert.equal(canonicalPlatform(String(line.platform).slice('resolve:'.length)), 'linux/ppc64le');
  });
});

describe('tags that are not indexes, and tags that move', () => {
  let moving: ArchwayHandle;
  let first: BuiltImage;
  let second: BuiltImage;
  let single: BuiltImage;

  before(async () => {
    const two = [p('linux', 'amd64'), p('linux', 'arm64', 'v8')];
    first = await buildImage({ dir: join(work, 'move-1'), tag: '1', platforms: two, format: 'oci', attestation: true, seed: 'pa-move-1', layerSizes: [600] });
    second = await buildImage({ dir: join(work, 'move-2'), tag: '1', platforms: two, format: 'oci', attestation: true, seed: 'pa-move-2', layerSizes: [600] });
    single = await buildImage({ dir: join(work, 'single'), tag: '1', platforms: [p('linux', 's390x')], format: 'oci', index: false, seed: 'pa-single', layerSizes: [600] });
    await pushLayout(first, { hostPort: registry.hostPort, name: 'library/moving' });
    await pushLayout(single, { hostPort: registry.hostPort, name: 'library/single' });
    moving = await startArchway({
      upstreams: { 'docker.io': { url: registry.url } },
      // Short: the test waits past it once, after the tag moved (nothing here needs a tag to stay fresh).
      cache: { tagTtl: '300ms' },
      platform: {
        rules: [
          { match: { userAgent: '^resolve$' }, platform: 'linux/arm64', mode: 'resolve' },
          { match: { userAgent: '^filter$' }, platform: 'linux/arm64', mode: 'filter' },
        ],
      },
    });
  });
  after(async () => {
    await moving?.stop();
  });

  const ask = (repo: string, ua?: string, accept?: string) =>
    http(`${moving.url}/v2/${repo}/manifests/1`, { headers: { accept: accept ?? ACCEPT.all, ...(ua ? { 'user-agent': ua } : {}) } });

  it('a tag that is a single image manifest is served as it is, whatever the rule', async () => {
    for (const [ua, accept] of [['resolve', ACCEPT.all], ['filter', ACCEPT.all], [undefined, OCI.manifest]] as const) {
      const r = await ask('single', ua, accept);
      assert.equal(r.status, 200, describeAnswer(r));
      assert.ok(r.body.equals(single.topBytes), `${ua ?? 'images-only'}: the image manifest unchanged`);
      assert.equal(r.headers['docker-content-digest'], single.topDigest);
      assert.equal(r.headers['x-archway-platform'], undefined, 'not a rewrite');
    }
  });

  it('rewritten answers follow the tag when it moves upstream (after the TTL)', async () => {
    assertResolved(await ask('moving', 'resolve'), first, 'linux/arm64/v8', 'resolve, first image');
    const oldFiltered = await ask('moving', 'filter');
    const oldDigest = assertFiltered(oldFiltered, first, 'linux/arm64/v8', 'filter, first image');
    assertResolved(await ask('moving', undefined, OCI.manifest), first, 'linux/amd64', 'images-only, first image');

    await pushLayout(second, { hostPort: registry.hostPort, name: 'library/moving' });
    await sleep(400); // past the tag TTL
    assertResolved(await ask('moving', 'resolve'), second, 'linux/arm64/v8', 'resolve, after the move');
    const newDigest = assertFiltered(await ask('moving', 'filter'), second, 'linux/arm64/v8', 'filter, after the move');
    assert.notEqual(newDigest, oldDigest);
    assertResolved(await ask('moving', undefined, OCI.manifest), second, 'linux/amd64', 'images-only, after the move');
    assertPassthrough(await ask('moving'), second, 'passthrough, after the move');

    // The old narrowed index is still content: its digest still answers it.
    const old = await http(`${moving.url}/v2/library/moving/manifests/${oldDigest}`, { headers: { accept: ACCEPT.all } });
    assert.equal(old.status, 200, describeAnswer(old));
    assert.ok(old.body.equals(oldFiltered.body));
  });
});

describe('after a restart of archway', () => {
  it('GET and HEAD by a narrowed digest answer the same bytes, and the rules still apply on every listener', async () => {
    const before = await manifest('all-att', '1', { ua: 'filter:linux/s390x' });
    const digest = assertFiltered(before, ociAtt, 'linux/s390x', 'before the restart');
    const listed = await manifest('all-docker', '1', { base: listener(filterPort) });
    const listedDigest = assertFiltered(listed, docker, 'linux/arm/v7', 'filter listener before the restart');
    await archway.restart();
    const get = await manifest('all-att', digest);
    assert.equal(get.status, 200, describeAnswer(get));
    assert.ok(get.body.equals(before.body), 'identical bytes after the restart');
    const head = await manifest('all-att', digest, { method: 'HEAD' });
    for (const h of ['docker-content-digest', 'content-type', 'content-length']) {
      assert.equal(get.headers[h], before.headers[h], `GET ${h}`);
      assert.equal(head.headers[h], before.headers[h], `HEAD ${h}`);
    }
    const listedAgain = await manifest('all-docker', listedDigest, { base: listener(filterPort) });
    assert.ok(listedAgain.body.equals(listed.body), 'the Docker list narrowed on the filter listener, by digest');
    assertResolved(await manifest('all-oci', '1', { base: listener(armPort) }), oci, 'linux/arm64/v8', 'arm64 listener after the restart');
    const again = assertFiltered(await manifest('all-att', '1', { ua: 'filter:linux/s390x' }), ociAtt, 'linux/s390x', 'filter after the restart');
    assert.equal(again, digest, 'the tag narrowed after the restart is the digest narrowed before it');
  });
});
