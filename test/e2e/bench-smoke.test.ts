// A smoke run of the benchmark harness (bench/run.ts --quick: each scenario
// once, tiny sizes) so `npm run bench` cannot rot: every scenario produces a
// numeric result for every target, archway fetches a blob wanted by 16
// concurrent cold clients from the upstream exactly once, and a real
// `docker pull` through a warm archway does not reach the upstream for blobs.
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { renderTable, runBench, SCENARIOS, type BenchResult } from '../../bench/run.ts';
import { tempDir } from '../harness/tmp.ts';

const TARGETS: Record<(typeof SCENARIOS)[number], string[]> = {
  warmBlob: ['archway', 'distribution', 'nginx-cache', 'nginx-sendfile', 'archway-accel'],
  warmManifest: ['archway', 'distribution', 'nginx-cache'],
  coldFanIn: ['archway', 'distribution', 'nginx-cache'],
  memory: ['archway', 'distribution'],
  dockerPull: ['upstream (direct)', 'archway', 'distribution'],
  scale: ['archway (2000 blobs)', 'archway (empty cache)'],
};

describe('bench harness (--quick)', () => {
  it('runs every scenario against every target and writes numeric results; archway fetches a fanned-in blob once and serves a docker pull warm', async () => {
    const resultsDir = await tempDir('archway-bench-smoke-');
    const started = Date.now();
    await runBench({ quick: true, rounds: 1, resultsDir });
    const files = (await readdir(resultsDir)).filter((f) => f.endsWith('.json'));
    assert.equal(files.length, 1, 'one results file');
    const result = JSON.parse(await readFile(join(resultsDir, files[0]!), 'utf8')) as BenchResult;
    console.log(`bench --quick took ${((Date.now() - started) / 1000).toFixed(1)} s`);
    for (const scenario of SCENARIOS) {
      const s = result.scenarios[scenario];
      assert.ok(s, `scenario ${scenario} missing`);
      assert.deepEqual(Object.keys(s.targets).sort(), [...TARGETS[scenario]].sort(), `${scenario} targets`);
      for (const [target, metrics] of Object.entries(s.targets)) {
        assert.ok(Object.keys(metrics).length > 0, `${scenario}/${target} has no metrics`);
        for (const [metric, st] of Object.entries(metrics)) {
          assert.ok(Number.isFinite(st.median), `${scenario}/${target}/${metric} = ${st.median}`);
        }
      }
      assert.deepEqual(s.notes.filter((n) => /bad|error|non-2xx/.test(n)), [], `${scenario}: failed requests`);
    }
    // Behind nginx with server.accelRedirect, every body wrk counted was a redirect archway handed to nginx.
    const accel = /archway redirected (\d+) requests for (\d+) bodies/.exec(result.scenarios.warmBlob!.notes.join('\n'));
    assert.ok(accel, 'the archway-accel note');
    assert.ok(Number(accel[2]) > 0 && Number(accel[1]) >= Number(accel[2]), accel[0]);
    const fanIn = result.scenarios.coldFanIn!.targets.archway!;
    assert.equal(fanIn.upstreamRatio!.median.toFixed(2), '1.00', 'archway fetched the fanned-in blob once');
    assert.equal(fanIn.upstreamFetches!.median, 1);
    assert.ok(result.scenarios.coldFanIn!.targets.distribution!.upstreamRatio!.median > 1, "distribution's proxy fetches per client (the harness can tell)");
    const pulls = result.scenarios.dockerPull!.targets;
    for (const [target, m] of Object.entries(pulls)) assert.ok(m.seconds!.median > 0, `docker pull via ${target}: ${m.seconds!.median} s`);
    assert.equal(pulls.archway!.upstreamBlobRequests!.median, 0, 'a docker pull through a warm archway fetches no blob upstream');
    assert.equal(pulls['upstream (direct)']!.upstreamBlobRequests!.median, 6, 'the direct pull fetches the config and 5 layers (the harness counts)');
    const table = renderTable(result);
    assert.match(table, /\| 3 \| cold fan-in: upstream bytes/);
    assert.match(table, /\| 5 \| docker pull through warm archway ≤ 1\.1× straight from upstream \| \d+\.\d\d× \(distribution \d+\.\d\d×\) \| (yes|\*\*no\*\*) \|/);
  });
});
