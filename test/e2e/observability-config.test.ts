// The dashboard and alerts operators import (deploy/grafana/archway.json,
// deploy/prometheus/alerts.yaml) against the real tools and a running archway:
// Prometheus's promtool parses and unit-tests the rules and parses every
// dashboard query, and every metric name either uses is one archway's /metrics
// declares, so a renamed metric cannot leave a panel blank or an alert silent.
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { request } from 'undici';
import { parse as parseYaml } from 'yaml';
import { startArchway, type ArchwayHandle } from '../harness/archway.ts';
import { sha256Digest } from '../harness/digest.ts';
import { ACCEPT, http } from '../harness/http.ts';
import { buildImage } from '../harness/images.ts';
import { ensureCommands } from '../harness/packages.ts';
import { run, waitFor } from '../harness/process.ts';
import { startPrometheus, type PrometheusHandle } from '../harness/prometheus.ts';
import { startRedis, type RedisHandle } from '../harness/redis.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { tempDir } from '../harness/tmp.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const DASHBOARD = join(ROOT, 'deploy', 'grafana', 'archway.json');
const RULES = join(ROOT, 'deploy', 'prometheus', 'alerts.yaml');
const RULE_TESTS = join(ROOT, 'deploy', 'prometheus', 'alerts.test.yaml');

interface Rule {
  alert?: string;
  record?: string;
  expr: string;
  for?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
}
interface Target {
  expr?: string;
  datasource?: { type?: string; uid?: string };
}
interface Panel {
  id: number;
  gridPos: { x: number; y: number; w: number; h: number };
  type: string;
  title: string;
  datasource?: { type?: string; uid?: string };
  targets?: Target[];
  panels?: Panel[];
}
interface Dashboard {
  schemaVersion: number;
  panels: Panel[];
  templating: { list: Array<{ name: string; type: string; query: unknown }> };
}

async function readRules(): Promise<Rule[]> {
  const doc = parseYaml(await readFile(RULES, 'utf8')) as { groups: Array<{ rules: Rule[] }> };
  return doc.groups.flatMap((g) => g.rules);
}

async function readDashboard(): Promise<Dashboard> {
  return JSON.parse(await readFile(DASHBOARD, 'utf8')) as Dashboard;
}

function allPanels(panels: Panel[]): Panel[] {
  return panels.flatMap((p) => [p, ...allPanels(p.panels ?? [])]);
}

function dashboardQueries(dash: Dashboard): string[] {
  return allPanels(dash.panels).flatMap((p) => (p.targets ?? []).map((t) => t.expr ?? ''));
}

/** Grafana's variables replaced by what they expand to (All, or one job), so Prometheus can run the query. */
function asPromql(expr: string, rateInterval = '5m', job = '.*'): string {
  return expr.replaceAll('$__rate_interval', rateInterval).replaceAll('$job', job).replaceAll('$instance', '.*');
}

/** The dashboard's queries by panel title. */
function queriesByPanel(dash: Dashboard): Array<{ title: string; expr: string }> {
  return allPanels(dash.panels).flatMap((p) => (p.targets ?? []).map((t) => ({ title: p.title, expr: t.expr ?? '' })));
}

/** Pull one image through archway: its manifest by tag, then every blob. */
async function pull(archway: ArchwayHandle, name: string, blobs: string[]): Promise<void> {
  const top = await http(`${archway.url}/v2/${name}/manifests/latest`, { headers: { accept: ACCEPT.all } });
  assert.equal(top.status, 200, top.body.toString('utf8'));
  for (const digest of blobs) {
    const blob = await http(`${archway.url}/v2/${name}/blobs/${digest}`);
    assert.equal(blob.status, 200, `blob ${digest}`);
    assert.equal(sha256Digest(blob.body), digest);
  }
}

function metricNames(exprs: string[]): Set<string> {
  return new Set(exprs.flatMap((e) => [...e.matchAll(/\barchway_[a-z0-9_]+/g)].map((m) => m[0])));
}

/** Metric families /metrics declares (`# TYPE name type`). */
async function declaredFamilies(archway: ArchwayHandle): Promise<Map<string, string>> {
  const res = await request(`${archway.url}/metrics`, { signal: AbortSignal.timeout(5000) });
  const text = await res.body.text();
  assert.equal(res.statusCode, 200, text.slice(0, 200));
  return new Map([...text.matchAll(/^# TYPE ([a-zA-Z_:][\w:]*) (\w+)$/gm)].map((m) => [m[1] ?? '', m[2] ?? '']));
}

/** A sample name is declared as itself, or as a histogram's or summary's _bucket/_sum/_count. */
function undeclared(names: Set<string>, families: Map<string, string>): string[] {
  return [...names].filter((name) => {
    if (families.has(name)) return false;
    const m = /^(.*)_(bucket|sum|count)$/.exec(name);
    const type = m ? families.get(m[1] ?? '') : undefined;
    return !(type === 'histogram' || (type === 'summary' && m?.[2] !== 'bucket'));
  });
}

describe('operator dashboard and alerts', () => {
  let registry: RegistryHandle;
  let archway: ArchwayHandle;
  const budget = 64 * 1024 * 1024;

  before(async () => {
    await ensureCommands([{ command: 'promtool', debianPackage: 'prometheus' }]);
    registry = await startRegistry();
    archway = await startArchway({ upstreams: { 'docker.io': { url: registry.url } }, cache: { maxSize: '64MiB' } });
  });
  after(async () => {
    await archway?.stop();
    await registry?.stop();
  });

  it('promtool accepts the rules, every alert has a severity and a summary, and the rules pass their unit tests', async () => {
    const check = await run('promtool', ['check', 'rules', RULES], { allowFail: true });
    assert.equal(check.code, 0, `promtool check rules:\n${check.stdout}${check.stderr}`);
    const rules = await readRules();
    assert.match(check.stdout, new RegExp(`SUCCESS: ${rules.length} rules found`));
    for (const alert of ['ArchwayUpstreamUnreachable', 'ArchwayCacheStorageFailing', 'ArchwayCacheThrashing', 'ArchwayHitRatioCollapse', 'ArchwayCoordinationLost']) {
      assert.ok(rules.some((r) => r.alert === alert), `alert ${alert} exists`);
    }
    for (const rule of rules) {
      assert.match(rule.labels?.severity ?? '', /^(critical|warning)$/, `${rule.alert} has a severity`);
      assert.ok(rule.annotations?.summary, `${rule.alert} has a summary`);
    }

    const unit = await run('promtool', ['test', 'rules', RULE_TESTS], { allowFail: true });
    assert.equal(unit.code, 0, `promtool test rules:\n${unit.stdout}${unit.stderr}`);
    assert.match(unit.stdout, /SUCCESS/);
  });

  it('the dashboard is a Grafana model with a datasource input and job/instance templates, and promtool parses every query', async () => {
    const dash = await readDashboard();
    assert.ok(dash.schemaVersion >= 36, `schemaVersion ${dash.schemaVersion}`);
    const vars = new Map(dash.templating.list.map((v) => [v.name, v]));
    assert.equal(vars.get('datasource')?.type, 'datasource');
    assert.equal(vars.get('datasource')?.query, 'prometheus');
    assert.equal(vars.get('job')?.type, 'query');
    assert.equal(vars.get('instance')?.type, 'query');

    const panels = allPanels(dash.panels);
    const ids = panels.map((p) => p.id);
    assert.equal(new Set(ids).size, ids.length, 'panel ids are unique');
    // No two panels overlap on Grafana's 24-column grid.
    const boxes = panels.map((p) => ({ title: p.title, ...p.gridPos }));
    for (const [i, a] of boxes.entries()) {
      assert.ok(a.x >= 0 && a.x + a.w <= 24, `${a.title}: inside the grid`);
      for (const b of boxes.slice(i + 1)) {
        const overlap = a.x < b.x + b.w && b.x < a.x + a.w && a.y < b.y + b.h && b.y < a.y + a.h;
        assert.ok(!overlap, `"${a.title}" and "${b.title}" overlap`);
      }
    }
    const queried = panels.filter((p) => p.type !== 'row');
    assert.ok(queried.length >= 20, `${queried.length} panels`);
    for (const panel of queried) {
      assert.deepEqual(panel.datasource, { type: 'prometheus', uid: '${datasource}' }, `${panel.title}: datasource`);
      assert.ok((panel.targets ?? []).length > 0, `${panel.title}: has queries`);
      for (const target of panel.targets ?? []) {
        assert.equal(target.datasource?.uid, '${datasource}', `${panel.title}: query datasource`);
        // Each selector of the query is narrowed to the chosen job and instances.
        const selectors = (target.expr ?? '').match(/\barchway_[a-z0-9_]+(\{[^}]*\})?/g) ?? [];
        assert.ok(selectors.length > 0, `${panel.title}: queries an archway metric`);
        for (const selector of selectors) assert.match(selector, /\{job=~"\$job", instance=~"\$instance"/, `${panel.title}: ${selector}`);
      }
    }

    // promtool parses rule expressions: hand it every dashboard query as a recording rule.
    const queries = dashboardQueries(dash);
    const dir = await tempDir('archway-dash-');
    const asRules = join(dir, 'dashboard-queries.yaml');
    const groups = [{ name: 'dashboard', rules: queries.map((q, i) => ({ record: `dashboard:query_${i}`, expr: asPromql(q) })) }];
    await writeFile(asRules, JSON.stringify({ groups }, null, 2)); // JSON is YAML
    const check = await run('promtool', ['check', 'rules', asRules], { allowFail: true });
    assert.equal(check.code, 0, `dashboard queries:\n${check.stdout}${check.stderr}`);
    assert.match(check.stdout, new RegExp(`SUCCESS: ${queries.length} rules found`));
  });

  it('every metric the dashboard and the rules use is declared by a running archway', async () => {
    const rules = await readRules();
    const dash = await readDashboard();
    const names = metricNames([...rules.map((r) => r.expr), ...dashboardQueries(dash)]);
    assert.ok(names.size >= 20, `${names.size} metric names found`);
    const families = await declaredFamilies(archway);
    assert.deepEqual(undeclared(names, families), [], 'metric names /metrics does not declare');
    // The reader itself: a misspelt name or a wrong suffix is caught.
    assert.deepEqual(undeclared(new Set(['archway_cache_byte', 'archway_cache_bytes_count', 'archway_upstream_request_seconds_sum']), families), [
      'archway_cache_byte',
      'archway_cache_bytes_count',
    ]);
  });

  it('on a real Prometheus scraping archway after a pull, every dashboard query runs, the main panels show data, and every rule evaluates', async () => {
    const work = await tempDir('archway-dash-image-');
    const built = await buildImage({ dir: work, tag: 'latest', platforms: [{ os: 'linux', architecture: 'amd64' }], format: 'oci', layerSizes: [64 * 1024], seed: 'dash', index: false });
    await pushLayout(built, { hostPort: registry.hostPort, name: 'library/dash' });
    const manifest = built.manifests[0];
    assert.ok(manifest);
    const blobs = [manifest.configDigest, ...manifest.layers.map((l) => l.digest)];
    const prometheus: PrometheusHandle = await startPrometheus({ target: archway.hostPort, job: 'archway', ruleFiles: [RULES] });
    try {
      // A rate is the increase between two scrapes: the first must come before the pulls (and
      // find the lookup series already there, at 0).
      await waitFor(async () => (await prometheus.query('archway_http_requests_total{job="archway"}')).length > 0, {
        timeoutMs: 30_000,
        description: 'Prometheus to scrape archway',
      });
      await pull(archway, 'library/dash', blobs); // misses: fetched from the registry
      await pull(archway, 'library/dash', blobs); // hits
      // Prometheus has scraped the hits, twice (a rate needs two samples).
      // Series born with the pulls (upstream requests, by status) need one more scrape for a rate.
      await waitFor(
        async () =>
          (await prometheus.query('rate(archway_cache_lookups_total{kind="blob", outcome=~"hit|miss"}[30s]) > 0')).length === 2 &&
          (await prometheus.query('rate(archway_upstream_request_seconds_count[30s])')).length > 0,
        {
          timeoutMs: 30_000,
          description: 'Prometheus to see the blob hits and misses',
        },
      );

      const dash = await readDashboard();
      const results = new Map<string, number>();
      for (const { title, expr } of queriesByPanel(dash)) {
        // Runs, without a parse error or a many-to-many matching error only evaluation finds.
        const samples = await prometheus.query(asPromql(expr, '30s', 'archway'));
        results.set(title, (results.get(title) ?? 0) + samples.length);
      }
      const shown = [
        'Blob hit ratio',
        'Bytes from cache',
        'Cache used',
        'Fills in flight',
        'Storage failing',
        'Redis coordination lost',
        'Hit ratio by kind',
        'Bytes served: cache vs upstream',
        'Lookups by outcome',
        'Cache size vs budget',
        'Evictions',
        'Blobs held',
        'Upstream requests by status',
        'Upstream errors',
        'Upstream latency',
        'Upstream requests in flight',
        'Requests by status',
        'Redis coordination',
        'Memory and event loop',
      ];
      for (const title of shown) assert.ok((results.get(title) ?? 0) > 0, `panel "${title}" shows data`);
      const [hitRatio] = await prometheus.query(asPromql(queriesByPanel(dash).find((q) => q.title === 'Blob hit ratio')?.expr ?? '', '30s', 'archway'));
      const ratio = Number(hitRatio?.value[1]);
      assert.ok(ratio > 0 && ratio < 1, `blob hit ratio ${ratio} after one cold and one warm pull`);

      // Prometheus evaluates every alert rule without an error.
      const rules = await readRules();
      await waitFor(
        async () => {
          const loaded = await prometheus.rules();
          const failing = loaded.filter((r) => r.health === 'err');
          if (failing.length > 0) throw new Error(failing.map((r) => `${r.name}: ${r.lastError ?? ''}`).join('; '));
          return loaded.length === rules.length && loaded.every((r) => r.health === 'ok');
        },
        { timeoutMs: 30_000, description: 'every rule evaluated' },
      ).catch(async (err: unknown) => {
        const failing = (await prometheus.rules()).filter((r) => r.health !== 'ok');
        assert.fail(`${err instanceof Error ? err.message : String(err)}: ${JSON.stringify(failing)}`);
      });
    } finally {
      await prometheus.stop();
    }
  });

  it('the cache budget panel has its value: archway_cache_budget_bytes is cache.maxSize; without Redis coordination is not degraded', async () => {
    assert.equal(await archway.metric('archway_cache_budget_bytes'), budget);
    assert.equal(await archway.metric('archway_coordination_degraded'), 0);
  });
});

describe('archway_coordination_degraded follows the Redis connection', () => {
  let redis: RedisHandle;
  let registry: RegistryHandle;
  let archway: ArchwayHandle;

  before(async () => {
    [redis, registry] = await Promise.all([startRedis(), startRegistry()]);
    archway = await startArchway({ upstreams: { 'docker.io': { url: registry.url } }, redis: { url: redis.url } });
  });
  after(async () => {
    await archway?.stop();
    await Promise.all([redis?.stop(), registry?.stop()]);
  });

  it('is 0 while connected, 1 once Redis is gone, and 0 again when it is back', async () => {
    assert.equal(await archway.metric('archway_coordination_degraded'), 0);
    await redis.stop();
    await waitFor(async () => (await archway.metric('archway_coordination_degraded')) === 1, {
      timeoutMs: 15_000,
      description: 'archway_coordination_degraded 1 after Redis stopped',
    });
    await redis.start();
    await waitFor(async () => (await archway.metric('archway_coordination_degraded')) === 0, {
      timeoutMs: 15_000,
      description: 'archway_coordination_degraded 0 after Redis came back',
    });
  });
});
