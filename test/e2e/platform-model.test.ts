// The whole platform model end to end: a real multi-platform image (OCI index
// and Docker manifest list) holding linux/amd64 with its v2 and v3
// microarchitecture levels and Windows images of two builds (one also needing
// os.features), pushed to the real registry with skopeo; then, through
// archway, which digest each client and rule gets: an old client that cannot
// read indexes, forced amd64 levels, Windows hosts named by their build, a
// Windows docker daemon detected by its User-Agent; filtered indexes keeping
// each platform object byte for byte; and the inspector showing os.version,
// os.features and features.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startArchway, type ArchwayHandle } from '../harness/archway.ts';
import { sha256Digest as sha256 } from '../harness/digest.ts';
import { ACCEPT, http, type HttpAnswer } from '../harness/http.ts';
import { buildImage, type BuiltImage, type BuiltManifest, type Platform } from '../harness/images.ts';
import { dockerUserAgent } from '../harness/platforms.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

// Index order chosen so that a first-architecture-wins matcher would be wrong:
// amd64/v3 before plain amd64, a Windows entry before every linux one but v3.
const V3: Platform = { os: 'linux', architecture: 'amd64', variant: 'v3', features: ['sse4'] };
const WS2019: Platform = { os: 'windows', architecture: 'amd64', osVersion: '10.0.17763.5122' };
const V2: Platform = { os: 'linux', architecture: 'amd64', variant: 'v2' };
const WS2022: Platform = { os: 'windows', architecture: 'amd64', osVersion: '10.0.20348.2113' };
const AMD64: Platform = { os: 'linux', architecture: 'amd64' };
/** A newer revision of the 2019 build that also needs win32k. */
const WS2019_WIN32K: Platform = { os: 'windows', architecture: 'amd64', osVersion: '10.0.17763.6054', osFeatures: ['win32k'] };
const PLATFORMS = [V3, WS2019, V2, WS2022, AMD64, WS2019_WIN32K];

const WINDOWS_DOCKER = 'docker/24.0.7 go/go1.20.10 git-commit/311b9ff os/windows arch/amd64 UpstreamClient(Docker-Client/24.0.7 \\(windows\\))';

let work: string;
let registry: RegistryHandle;
let archway: ArchwayHandle;
let oci: BuiltImage;
let docker: BuiltImage;

const rule = (ua: string, platform: string, mode: 'resolve' | 'filter' = 'resolve') => ({ match: { userAgent: `^${ua}$` }, platform, mode });

before(async () => {
  work = await tempDir('archway-platform-model-');
  registry = await startRegistry();
  const common = { tag: '1', platforms: PLATFORMS, layerSizes: [600] };
  oci = await buildImage({ dir: join(work, 'oci'), format: 'oci', seed: 'pm-oci', ...common });
  docker = await buildImage({ dir: join(work, 'docker'), format: 'docker', seed: 'pm-docker', ...common });
  await pushLayout(oci, { hostPort: registry.hostPort, name: 'library/multi-oci' });
  await pushLayout(docker, { hostPort: registry.hostPort, name: 'library/multi-docker' });
  archway = await startArchway({
    upstreams: { 'docker.io': { url: registry.url } },
    platform: {
      default: 'linux/amd64',
      rules: [
        rule('v2', 'linux/amd64/v2'),
        rule('v3', 'linux/amd64/v3'),
        rule('v4', 'linux/amd64/v4'),
        rule('v3-filter', 'linux/amd64/v3', 'filter'),
        rule('ws2019', 'windows(10.0.17763)/amd64'),
        rule('ws2019-win32k', 'windows(10.0.17763+win32k)/amd64'),
        rule('ws2022', 'windows(10.0.20348)/amd64'),
        rule('ws2022-filter', 'windows(10.0.20348)/amd64', 'filter'),
        rule('ws2025', 'windows(10.0.26100)/amd64'),
        rule('ws2016', 'windows(10.0.14393)/amd64'),
        { match: { userAgent: '^docker/' }, platform: 'detected', mode: 'resolve' as const },
      ],
    },
  });
});

after(async () => {
  await archway?.stop();
  await registry?.stop();
  await removeDir(work);
});

const families = () => [
  { label: 'OCI index', repo: 'multi-oci', image: oci },
  { label: 'Docker manifest list', repo: 'multi-docker', image: docker },
];

function manifest(repo: string, reference: string, ask: { ua?: string; accept?: string; method?: 'GET' | 'HEAD' } = {}): Promise<HttpAnswer> {
  const headers: Record<string, string> = { accept: ask.accept ?? ACCEPT.all };
  if (ask.ua !== undefined) headers['user-agent'] = ask.ua;
  return http(`${archway.url}/v2/${repo}/manifests/${reference}`, { method: ask.method ?? 'GET', headers });
}

/** The built manifest of exactly this platform (same os.version, variant and os.features), never a lookalike. */
function built(image: BuiltImage, p: Platform): BuiltManifest {
  const m = image.manifests.find((x) => x.platform === p);
  if (!m) throw new Error(`no ${JSON.stringify(p)} in ${image.tag}`);
  return m;
}

const describeAnswer = (r: HttpAnswer) => `${r.status} digest=${r.headers['docker-content-digest']} platform=${r.headers['x-archway-platform']} body=${r.body.length < 500 ? r.body.toString() : `${r.body.length} bytes`}`;

function assertImage(r: HttpAnswer, image: BuiltImage, p: Platform, what: string): void {
  const want = built(image, p);
  assert.equal(r.status, 200, `${what}: ${describeAnswer(r)}`);
  assert.equal(r.headers['docker-content-digest'], want.digest, `${what}: the ${JSON.stringify(p)} image (${describeAnswer(r)})`);
  assert.ok(r.body.equals(want.bytes), `${what}: its bytes`);
  assert.equal(r.headers['content-type'], want.mediaType, `${what}: its media type`);
  assert.equal(r.headers['x-archway-source-digest'], image.topDigest, `${what}: rewritten from the index`);
}

/** The compact JSON of the index entry for `digest`, as the upstream (buildImage) wrote it. */
function entryBytes(image: BuiltImage, digest: string): string {
  const doc = JSON.parse(image.topBytes.toString('utf8')) as { manifests: Array<{ digest: string }> };
  const e = doc.manifests.find((m) => m.digest === digest);
  assert.ok(e, `the index has ${digest}`);
  const text = JSON.stringify(e);
  assert.ok(image.topBytes.toString('utf8').includes(text), 'the upstream wrote the entry compactly');
  return text;
}

describe('which image each client and rule gets', () => {
  for (const fam of [0, 1]) {
    const label = fam === 0 ? 'OCI index' : 'Docker manifest list';
    const pick = () => families()[fam] as { repo: string; image: BuiltImage };
    const cases: Array<[string, { ua?: string; accept?: string }, Platform]> = [
      ['an old client that cannot read indexes gets the default linux/amd64, not v3 listed first nor Windows', { accept: ACCEPT.imagesOnly }, AMD64],
      ['a linux docker daemon detected by its User-Agent gets plain amd64', { ua: dockerUserAgent('amd64') }, AMD64],
      ['a forced linux/amd64/v3 gets v3', { ua: 'v3' }, V3],
      ['a forced linux/amd64/v2 gets v2, not v3', { ua: 'v2' }, V2],
      ['a forced linux/amd64/v4 runs the best it can: v3', { ua: 'v4' }, V3],
      ['windows(10.0.17763)/amd64 gets the 2019 build, not the revision needing win32k', { ua: 'ws2019' }, WS2019],
      ['windows(10.0.17763+win32k)/amd64 gets the newest 2019 revision it can run', { ua: 'ws2019-win32k' }, WS2019_WIN32K],
      ['windows(10.0.20348)/amd64 gets the 2022 build', { ua: 'ws2022' }, WS2022],
      ['a 2025 host (build 26100) runs the 2022 image: the stable ABI', { ua: 'ws2025' }, WS2022],
      ['a Windows docker daemon (no build in its User-Agent) gets the first Windows entry', { ua: WINDOWS_DOCKER }, WS2019],
    ];
    for (const [what, ask, platform] of cases) {
      it(`${label}: ${what}`, async () => {
        const { repo, image } = pick();
        assertImage(await manifest(repo, '1', ask), image, platform, what);
        const head = await manifest(repo, '1', { ...ask, method: 'HEAD' });
        assert.equal(head.headers['docker-content-digest'], built(image, platform).digest, `${what}: HEAD names the same digest`);
      });
    }

    it(`${label}: a 2016 host gets 404 MANIFEST_UNKNOWN naming its build and listing the builds there are`, async () => {
      const r = await manifest(pick().repo, '1', { ua: 'ws2016' });
      assert.equal(r.status, 404, describeAnswer(r));
      const error = r.json<{ errors: Array<{ code: string; message: string; detail: { wanted: string; available: string[] } }> }>().errors[0];
      assert.equal(error?.code, 'MANIFEST_UNKNOWN');
      assert.equal(error?.detail.wanted, 'windows(10.0.14393)/amd64');
      assert.deepEqual(error?.detail.available, [
        'linux/amd64/v3',
        'windows(10.0.17763.5122)/amd64',
        'linux/amd64/v2',
        'windows(10.0.20348.2113)/amd64',
        'linux/amd64',
        'windows(10.0.17763.6054+win32k)/amd64',
      ]);
    });

    it(`${label}: a client that reads indexes and matches no rule gets the index untouched`, async () => {
      const { repo, image } = pick();
      const r = await manifest(repo, '1');
      assert.equal(r.status, 200);
      assert.equal(r.headers['docker-content-digest'], image.topDigest);
      assert.ok(r.body.equals(image.topBytes));
    });
  }
});

describe('filtered indexes keep each platform object byte for byte', () => {
  for (const [ua, platform] of [
    ['ws2022-filter', WS2022],
    ['v3-filter', V3],
  ] as const) {
    it(`${ua}: one entry, exactly as the upstream wrote it (os.version, features), also by its new digest`, async () => {
      for (const { label, repo, image } of families()) {
        const want = built(image, platform);
        const r = await manifest(repo, '1', { ua });
        assert.equal(r.status, 200, `${label}: ${describeAnswer(r)}`);
        const expected = Buffer.from(image.topBytes.toString('utf8').replace(/"manifests":\[.*\]\}$/, `"manifests":[${entryBytes(image, want.digest)}]}`));
        assert.notEqual(expected.toString(), image.topBytes.toString(), `${label}: the expectation cut something`);
        assert.equal(r.body.toString('utf8'), expected.toString('utf8'), `${label}: the index minus the other entries, byte for byte`);
        const digest = r.headers['docker-content-digest'] ?? '';
        assert.equal(digest, sha256(r.body), `${label}: its digest is the body's`);
        const again = await manifest(repo, digest);
        assert.equal(again.status, 200, `${label}: by digest`);
        assert.ok(again.body.equals(r.body), `${label}: the same bytes by digest`);
      }
    });
  }
});

describe('the inspector shows the whole platform', () => {
  it('every entry with its os.version, os.features and features, Windows builds apart', async () => {
    for (const { label, repo, image } of families()) {
      const r = await http(`${archway.url}/_archway/platforms/${repo}:1`);
      assert.equal(r.status, 200, `${label}: ${r.body.toString()}`);
      type Row = { platform: string; digest: string; osVersion?: string; osFeatures?: string[]; features?: string[] };
      const rows = r.json<{ platforms: Row[] }>().platforms;
      const summary = rows.map((row) => ({ platform: row.platform, digest: row.digest, osVersion: row.osVersion, osFeatures: row.osFeatures, features: row.features }));
      assert.deepEqual(
        summary,
        [
          ['linux/amd64/v3', V3],
          ['windows(10.0.17763.5122)/amd64', WS2019],
          ['linux/amd64/v2', V2],
          ['windows(10.0.20348.2113)/amd64', WS2022],
          ['linux/amd64', AMD64],
          ['windows(10.0.17763.6054+win32k)/amd64', WS2019_WIN32K],
        ].map(([name, p]) => {
          const platform = p as Platform;
          return { platform: name as string, digest: built(image, platform).digest, osVersion: platform.osVersion, osFeatures: platform.osFeatures, features: platform.features };
        }),
        label,
      );
    }
  });

  it('a single Windows image: its os.version read from the config', async () => {
    const single = await buildImage({ dir: join(work, 'single'), tag: 'ws', platforms: [WS2022], format: 'oci', index: false, seed: 'pm-single', layerSizes: [300] });
    await pushLayout(single, { hostPort: registry.hostPort, name: 'library/single-win' });
    const r = await http(`${archway.url}/_archway/platforms/single-win:ws`);
    assert.equal(r.status, 200, r.body.toString());
    const [row] = r.json<{ platforms: Array<{ platform: string; osVersion?: string }> }>().platforms;
    assert.equal(row?.platform, 'windows(10.0.20348.2113)/amd64');
    assert.equal(row?.osVersion, '10.0.20348.2113');
  });
});
