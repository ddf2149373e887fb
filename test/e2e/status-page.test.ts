// The status page (/_archway/) in a real browser: Debian's headless Chromium
// driven by playwright-core. Real traffic first (a multi-platform image pulled
// partly through archway, a platform rule on a second listener, one upstream
// that refuses connections), then the page: no console or page errors, every
// figure equal to what GET /_archway/cache says, upstream health, rules, the
// platform matrix of the pulled tag, the chart, the token gone from the URL, a
// refused token, a phone screen without horizontal overflow, and screenshots.
import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { Browser, BrowserContext, ConsoleMessage, Page } from 'playwright-core';
import { startArchway, type ArchwayHandle } from '../harness/archway.ts';
import { launchChromium } from '../harness/chromium.ts';
import { ACCEPT, http } from '../harness/http.ts';
import { buildImage, platformString, type BuiltImage, type Platform } from '../harness/images.ts';
import { canonicalPlatform, manifestFor } from '../harness/platforms.ts';
import { freePort } from '../harness/ports.ts';
import { waitFor } from '../harness/process.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { tempDir } from '../harness/tmp.ts';

const TOKEN = 'status-page-admin-token-0123456789';
const AMD64: Platform = { os: 'linux', architecture: 'amd64' };
const ARM64: Platform = { os: 'linux', architecture: 'arm64', variant: 'v8' };
const ARMV7: Platform = { os: 'linux', architecture: 'arm', variant: 'v7' };
/** What the platform matrix must say after the pulls below. */
const EXPECTED_CHIPS: Record<string, 'yes' | 'partial' | 'no'> = {
  [canonicalPlatform(AMD64)]: 'yes', // manifest, config and every layer pulled
  [canonicalPlatform(ARMV7)]: 'partial', // manifest and config only
  [canonicalPlatform(ARM64)]: 'no', // manifest only (resolved on the arm64 listener), no blob
};

interface CacheJson {
  bytes: number;
  maxBytes: number;
  blobs: number;
  manifests: number;
  tags: number;
  hits: number;
  misses: number;
  hitRatio: number | null;
  bytesFromCache: number;
  bytesFromUpstream: number;
}

interface StatusJson {
  upstreams: Array<{ name: string; down: boolean; failures: number; lastError: string | null }>;
  traffic: { lastHour: Array<{ bytesFromCache: number; bytesFromUpstream: number }> };
  platform: { default: string; rules: unknown[] };
}

/** What the page shows, read in one go (a redraw is synchronous, so this is one consistent draw). */
interface PageState {
  values: Record<string, string | undefined>;
  texts: Record<string, string>;
  upstreams: string[][];
  rules: string[][];
  platformDefault: string;
  images: Array<{ name: string; chips: Array<{ platform: string; classes: string[] }> }>;
  rects: number;
  updated: string;
  error: string;
  loginVisible: boolean;
  mainVisible: boolean;
}

/** An iPhone-sized screen. */
const PHONE = { viewport: { width: 390, height: 844 }, deviceScaleFactor: 2, isMobile: true, hasTouch: true };

const FIGURES = ['cache-bytes', 'cache-max', 'cache-blobs', 'cache-manifests', 'cache-tags', 'hit-ratio', 'bytes-cache', 'bytes-upstream'] as const;

// No helper functions are declared inside the page functions: tsx (esbuild,
// keepNames) would wrap them in a __name() call that does not exist in the page.
async function readPage(page: Page): Promise<PageState> {
  const state = await page.evaluate((figures) => ({
    values: Object.fromEntries(figures.map((id) => [id, (document.getElementById(id) as HTMLElement).dataset.value])),
    texts: Object.fromEntries(figures.map((id) => [id, document.getElementById(id)?.textContent ?? ''])),
    upstreams: [...document.querySelectorAll('#upstreams tr')].map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent ?? '')),
    rules: [...document.querySelectorAll('#rules tr')].map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent ?? '')),
    platformDefault: document.getElementById('platform-default')?.textContent ?? '',
    images: [...document.querySelectorAll('#images tr')].map((tr) => ({
      name: tr.querySelector('td')?.textContent ?? '',
      chips: [...tr.querySelectorAll('.chip')].map((c) => ({ platform: c.textContent ?? '', classes: [...c.classList] })),
    })),
    rects: document.querySelectorAll('#chart rect').length,
    updated: document.getElementById('updated')?.textContent ?? '',
    error: document.getElementById('error')?.textContent ?? '',
  }), FIGURES);
  // Visible as rendered (CSS can override the hidden attribute), not the attribute.
  return { ...state, loginVisible: await page.isVisible('#login'), mainVisible: await page.isVisible('#main') };
}

/** Everything a page reports that would mean it is broken. */
interface Watch {
  consoleErrors: string[];
  pageErrors: string[];
  failedRequests: string[];
  badResponses: string[];
  requestUrls: string[];
}

function watch(page: Page): Watch {
  const w: Watch = { consoleErrors: [], pageErrors: [], failedRequests: [], badResponses: [], requestUrls: [] };
  page.on('console', (m: ConsoleMessage) => {
    if (m.type() === 'error' || m.type() === 'warning') w.consoleErrors.push(`${m.type()}: ${m.text()} (${m.location().url})`);
  });
  page.on('pageerror', (err) => w.pageErrors.push(err.stack ?? err.message));
  page.on('requestfailed', (r) => w.failedRequests.push(`${r.method()} ${r.url()}: ${r.failure()?.errorText ?? '?'}`));
  page.on('request', (r) => w.requestUrls.push(r.url()));
  page.on('response', (r) => {
    if (r.status() >= 400) w.badResponses.push(`${r.request().method()} ${r.url()} → ${r.status()}`);
  });
  return w;
}

let work: string;
let registry: RegistryHandle;
let archway: ArchwayHandle;
let armPort: number;
let deadPort: number;
let image: BuiltImage;
let launching: Promise<Browser> | undefined;
let browser: Browser;
const contexts: BrowserContext[] = [];

const admin = async <T>(path: string, token = TOKEN): Promise<T> => {
  const r = await http(`${archway.url}${path}`, { headers: { authorization: `Bearer ${token}` } });
  assert.equal(r.status, 200, `${path}: ${r.body.toString('utf8')}`);
  return r.json<T>();
};

/** A page already watched (console, errors, requests) before its first navigation. */
async function openPage(options: Parameters<Browser['newContext']>[0] = {}): Promise<{ page: Page; watched: Watch }> {
  const context = await browser.newContext(options);
  contexts.push(context);
  const page = await context.newPage();
  return { page, watched: watch(page) };
}

async function loadWithToken(page: Page, token: string): Promise<void> {
  await page.goto(`${archway.url}/_archway/#token=${encodeURIComponent(token)}`, { waitUntil: 'load' });
  await page.waitForSelector('body[data-loaded="true"]', { state: 'attached', timeout: 10_000 });
}

async function pngSize(path: string): Promise<number> {
  const info = await stat(path);
  return info.size;
}

before(async () => {
  work = await tempDir('archway-status-page-');
  // Start the browser while the rest is set up (it installs Debian's chromium if missing).
  launching = launchChromium();
  // Awaited below; a failure before then must not be an unhandled rejection.
  launching.catch(() => undefined);
  registry = await startRegistry();
  image = await buildImage({
    dir: join(work, 'image'),
    tag: '1',
    platforms: [AMD64, ARM64, ARMV7],
    format: 'oci',
    layerSizes: [40_000, 25_000],
    seed: 'status-page',
  });
  await pushLayout(image, { hostPort: registry.hostPort, name: 'team/app' });

  armPort = await freePort();
  // Nothing listens there: every request to dead.test fails to connect.
  deadPort = await freePort();
  archway = await startArchway({
    upstreams: { 'local.test': { url: registry.url }, 'dead.test': { url: `http://127.0.0.1:${deadPort}` } },
    defaultUpstream: 'local.test',
    ports: [armPort],
    platform: { rules: [{ match: { port: armPort }, platform: 'linux/arm64/v8', mode: 'resolve' }] },
    admin: { token: TOKEN },
  });

  // Traffic: count the successful /v2 answers, each one a traffic record.
  let answered = 0;
  const get = async (url: string, headers: Record<string, string> = {}): Promise<Buffer> => {
    const r = await http(url, { headers });
    assert.equal(r.status, 200, `GET ${url}: ${r.status} ${r.body.toString('utf8').slice(0, 300)}`);
    answered++;
    return r.body;
  };
  const v2 = `${archway.url}/v2/team/app`;
  // The tag twice (miss, then hit), as a client would see it: the index.
  for (let i = 0; i < 2; i++) await get(`${v2}/manifests/1`, { accept: ACCEPT.all });
  // linux/amd64: its manifest, config and every layer (one layer twice: a hit from the cache).
  const amd64 = manifestFor(image, platformString(AMD64));
  await get(`${v2}/manifests/${amd64.digest}`, { accept: ACCEPT.all });
  const amd64Blobs = [amd64.configDigest, ...amd64.layers.map((l) => l.digest)];
  for (const digest of amd64Blobs) await get(`${v2}/blobs/${digest}`);
  // A blob is stored a moment after its last byte was sent (a request before
  // then joins the fetch, a miss): wait, so that this one is a hit.
  await waitFor(async () => (await admin<CacheJson>('/_archway/cache')).blobs === amd64Blobs.length, {
    timeoutMs: 5000,
    description: 'the linux/amd64 blobs stored',
  });
  await get(`${v2}/blobs/${amd64.layers[0]?.digest}`);
  // linux/arm/v7: manifest and config only.
  const armv7 = manifestFor(image, platformString(ARMV7));
  await get(`${v2}/manifests/${armv7.digest}`, { accept: ACCEPT.all });
  await get(`${v2}/blobs/${armv7.configDigest}`);
  // The arm64 listener resolves the tag to the arm64 manifest; no blob of it is pulled.
  const resolved = await get(`http://127.0.0.1:${armPort}/v2/team/app/manifests/1`, { accept: ACCEPT.all });
  assert.equal(JSON.parse(resolved.toString('utf8')).config.digest, manifestFor(image, platformString(ARM64)).configDigest, 'the arm64 listener resolved to arm64');
  // One failure: dead.test refuses connections.
  const dead = await http(`${archway.url}/v2/dead.test/team/app/manifests/1`, { headers: { accept: ACCEPT.all } });
  assert.ok(dead.status >= 500, `dead.test answered ${dead.status}: ${dead.body.toString('utf8')}`);

  // Traffic is recorded when each response closes, a moment after the client
  // read it: wait until all of it is counted, so nothing changes from here on.
  await waitFor(
    async () => {
      const c = await admin<CacheJson>('/_archway/cache');
      return c.hits + c.misses === answered && c.blobs === amd64Blobs.length + 1;
    },
    { timeoutMs: 5000, description: `${answered} requests counted in the traffic totals, ${amd64Blobs.length + 1} blobs stored` },
  );
  browser = await launching;
});

after(async () => {
  for (const c of contexts) await c.close().catch(() => undefined);
  // Also when setup failed before the launch was awaited.
  await (await launching?.catch(() => undefined))?.close();
  await archway?.stop();
  await registry?.stop();
});

describe('status page in headless Chromium', () => {
  let page: Page;
  let watched: Watch;
  let shown: PageState;
  let cache: CacheJson;
  let status: StatusJson;

  before(async () => {
    ({ page, watched } = await openPage({ viewport: { width: 1280, height: 900 } }));
    await loadWithToken(page, TOKEN);
    shown = await readPage(page);
    // Fetched after the page's figures were read, with no traffic in between.
    cache = await admin<CacheJson>('/_archway/cache');
    status = await admin<StatusJson>('/_archway/status');
  });

  it('loads without page errors or failed requests, asking nothing of other origins', () => {
    assert.deepEqual(watched.pageErrors, [], 'page errors');
    assert.deepEqual(watched.failedRequests, [], 'failed requests');
    // Self-contained: everything it asked for came from archway itself.
    const foreign = watched.requestUrls.filter((u) => !u.startsWith(`${archway.url}/`));
    assert.deepEqual(foreign, [], 'requests to other origins');
    assert.ok(watched.requestUrls.includes(`${archway.url}/_archway/status`), 'it fetched /_archway/status');
    assert.ok(watched.requestUrls.includes(`${archway.url}/_archway/cache`), 'it fetched /_archway/cache');
    assert.equal(shown.error, '', 'no error shown');
    assert.match(shown.updated, /^updated /);
  });

  it('logs no console errors or warnings, and no answer is an HTTP error', () => {
    assert.deepEqual(watched.consoleErrors, [], 'console errors and warnings');
    assert.deepEqual(watched.badResponses, [], 'responses >= 400');
  });

  it('shows the data, and the login form no more', () => {
    assert.equal(shown.mainVisible, true, 'the data is shown');
    assert.equal(shown.loginVisible, false, 'the login form is not shown once the data is');
  });

  it('shows every figure of GET /_archway/cache', () => {
    // The traffic above makes each of these non-trivial.
    assert.ok(cache.bytes > 0 && cache.blobs > 0 && cache.manifests > 0 && cache.tags > 0, JSON.stringify(cache));
    // The amd64 layer fetched again came from the cache.
    assert.ok(cache.bytesFromCache >= (manifestFor(image, platformString(AMD64)).layers[0]?.size ?? Infinity) && cache.bytesFromUpstream > 0 && cache.hitRatio !== null, JSON.stringify(cache));
    const expected: Record<(typeof FIGURES)[number], string> = {
      'cache-bytes': String(cache.bytes),
      'cache-max': String(cache.maxBytes),
      'cache-blobs': String(cache.blobs),
      'cache-manifests': String(cache.manifests),
      'cache-tags': String(cache.tags),
      'hit-ratio': cache.hitRatio === null ? '' : String(cache.hitRatio),
      'bytes-cache': String(cache.bytesFromCache),
      'bytes-upstream': String(cache.bytesFromUpstream),
    };
    assert.deepEqual(shown.values, expected);
    // The visible text is human-formatted.
    for (const id of ['cache-bytes', 'cache-max', 'bytes-cache', 'bytes-upstream'] as const) {
      assert.match(shown.texts[id] ?? '', /^\d+(\.\d)? (B|KiB|MiB|GiB|TiB)$/, `${id} text`);
    }
    assert.equal(shown.texts['cache-blobs'], String(cache.blobs));
    assert.equal(shown.texts['hit-ratio'], `${(100 * (cache.hitRatio ?? 0)).toFixed(1)} %`);
  });

  it('lists both upstreams, the refusing one with its failure and last error', () => {
    const byName = new Map(shown.upstreams.map((r) => [r[0], r]));
    assert.deepEqual([...byName.keys()].sort(), ['dead.test', 'local.test'], JSON.stringify(shown.upstreams));
    const [, okState, okFailures, okError] = byName.get('local.test') ?? [];
    assert.equal(okState, 'ok');
    assert.equal(okFailures, '0');
    assert.equal(okError, '–');

    const dead = status.upstreams.find((u) => u.name === 'dead.test');
    assert.ok(dead && dead.failures > 0 && dead.lastError, `status JSON: ${JSON.stringify(status.upstreams)}`);
    const [, state, failures, lastError] = byName.get('dead.test') ?? [];
    assert.ok(state === 'down' || state === 'ok', `state ${state}`);
    assert.ok(Number(failures) > 0 || state === 'down', `dead.test: state ${state}, failures ${failures}`);
    assert.equal(failures, String(dead.failures));
    assert.ok(lastError?.startsWith(`${dead.lastError} (`), `last error shown: ${lastError}; status says ${dead.lastError}`);
  });

  it('shows the platform rule and the default platform', () => {
    assert.equal(status.platform.rules.length, 1);
    assert.deepEqual(shown.rules, [['1', `port=${armPort}`, 'linux/arm64', 'resolve']]);
    assert.equal(shown.platformDefault, status.platform.default);
    assert.equal(shown.platformDefault, 'linux/amd64');
  });

  it('lists the pulled tag with a chip per platform: all blobs yes, some partial, none no', () => {
    const row = shown.images.find((i) => i.name === 'local.test/team/app:1');
    assert.ok(row, `images: ${JSON.stringify(shown.images)}`);
    const chips = Object.fromEntries(
      row.chips.map((c) => {
        const state = c.classes.filter((k) => k === 'yes' || k === 'partial' || k === 'no');
        assert.equal(state.length, 1, `chip ${c.platform}: classes ${c.classes.join(' ')}`);
        return [canonicalPlatform(c.platform), state[0]];
      }),
    );
    assert.deepEqual(chips, EXPECTED_CHIPS);
  });

  it('draws one bar per non-empty minute series', () => {
    const series = status.traffic.lastHour.reduce((n, m) => n + (m.bytesFromCache > 0 ? 1 : 0) + (m.bytesFromUpstream > 0 ? 1 : 0), 0);
    assert.ok(series >= 2, `minute series with traffic: ${series}`);
    assert.ok(shown.rects >= 1);
    assert.equal(shown.rects, series);
  });

  it('removes the token from the URL (it stays in sessionStorage)', async () => {
    const url = page.url();
    assert.equal(url, `${archway.url}/_archway/`);
    assert.ok(!url.includes(TOKEN) && !url.includes('token='), url);
    assert.equal(await page.evaluate(() => location.hash), '');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('archway-admin-token')), TOKEN);
    // A reload without the fragment still shows the data.
    await page.reload({ waitUntil: 'load' });
    await page.waitForSelector('body[data-loaded="true"]', { state: 'attached', timeout: 10_000 });
  });

  it('writes desktop and phone screenshots', async (t) => {
    const desktop = join(work, 'status-desktop.png');
    await page.screenshot({ path: desktop, fullPage: true });
    const phone = await openPage(PHONE);
    await loadWithToken(phone.page, TOKEN);
    const phoneShot = join(work, 'status-phone.png');
    await phone.page.screenshot({ path: phoneShot, fullPage: true });
    for (const path of [desktop, phoneShot]) {
      const bytes = await pngSize(path);
      assert.ok(bytes > 10 * 1024, `${path}: ${bytes} bytes`);
      t.diagnostic(`screenshot ${path} (${bytes} bytes)`);
      console.log(`screenshot: ${path}`);
    }
  });
});

describe('status page on a phone', () => {
  it('has no horizontal overflow at 390×844', async () => {
    const { page, watched } = await openPage(PHONE);
    await loadWithToken(page, TOKEN);
    const m = await page.evaluate((width) => ({
      scrollWidth: document.documentElement.scrollWidth,
      innerWidth: window.innerWidth,
      // Elements sticking out past the screen's right edge, for the message.
      wide: [...document.querySelectorAll('body *')]
        .filter((e) => e.getBoundingClientRect().right > width + 0.5 && !e.closest('.scroll'))
        .map((e) => `${e.tagName.toLowerCase()}${e.id ? `#${e.id}` : ''}`),
    }), PHONE.viewport.width);
    assert.ok(m.scrollWidth <= PHONE.viewport.width, `page ${m.scrollWidth} px wide on a ${PHONE.viewport.width} px screen; too wide: ${m.wide.join(', ')}`);
    // A mobile browser zooms out to fit wider content: the layout viewport would grow.
    assert.equal(m.innerWidth, PHONE.viewport.width, 'not zoomed out');
    assert.ok(m.scrollWidth <= m.innerWidth);
    assert.deepEqual(watched.pageErrors, []);
    assert.deepEqual(watched.consoleErrors, []);
  });
});

describe('status page with a wrong token', () => {
  const WRONG = 'wrong-token-not-the-admin-one';

  it('shows the login form and the refusal, never the data', async () => {
    const { page, watched } = await openPage();
    await page.goto(`${archway.url}/_archway/#token=${WRONG}`, { waitUntil: 'load' });
    await page.waitForSelector('#login', { state: 'visible', timeout: 10_000 });
    await page.waitForFunction(() => (document.getElementById('error')?.textContent ?? '') !== '', undefined, { timeout: 10_000 });
    assert.match((await page.textContent('#error')) ?? '', /refused/i);
    assert.equal(await page.isVisible('#token'), true, 'token input visible');
    assert.equal(await page.evaluate(() => document.body.dataset.loaded), undefined, 'body[data-loaded] not set');
    assert.ok(!page.url().includes(WRONG), page.url());
    assert.equal(await page.evaluate(() => sessionStorage.getItem('archway-admin-token')), null, 'the refused token is not kept');
    // Only the refused API calls failed; no script error.
    assert.deepEqual(watched.pageErrors, []);
    const refused = watched.badResponses.filter((r) => r.includes('/_archway/'));
    assert.ok(refused.length > 0 && refused.every((r) => / → 401$/.test(r)), watched.badResponses.join('\n'));
    assert.equal(await page.isHidden('#main'), true, 'the (empty) data sections are not shown');
  });

  it('keeps the refusal on screen across the 5 s refresh', async () => {
    const { page } = await openPage();
    await page.goto(`${archway.url}/_archway/#token=${WRONG}`, { waitUntil: 'load' });
    await page.waitForFunction(() => /refused/i.test(document.getElementById('error')?.textContent ?? ''), undefined, { timeout: 10_000 });
    // The page redraws every 5 s: wait past one tick.
    await page.waitForTimeout(5_500);
    assert.match((await page.textContent('#error')) ?? '', /refused/i, 'the refusal is still shown after the next refresh');
    assert.equal(await page.isVisible('#token'), true);
  });

  it('then the right token typed into the form shows the data', async () => {
    const { page, watched } = await openPage();
    await page.goto(`${archway.url}/_archway/#token=${WRONG}`, { waitUntil: 'load' });
    await page.waitForFunction(() => /refused/i.test(document.getElementById('error')?.textContent ?? ''), undefined, { timeout: 10_000 });
    await page.fill('#token', TOKEN);
    await page.click('#login button');
    await page.waitForSelector('body[data-loaded="true"]', { state: 'attached', timeout: 10_000 });
    assert.equal(await page.textContent('#error'), '');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('archway-admin-token')), TOKEN);
    assert.equal(await page.isVisible('#main'), true);
    assert.deepEqual(watched.pageErrors, []);
    assert.equal(await page.isHidden('#login'), true, 'the login form goes once the data is shown');
  });
});
