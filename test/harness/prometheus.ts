// A real Prometheus server (Debian `prometheus`) on loopback that scrapes one
// target every second and evaluates a rule file, for tests of the dashboard
// queries and alert rules archway ships (deploy/).
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { request } from 'undici';
import { ensureCommands } from './packages.ts';
import { freePort } from './ports.ts';
import { startProcess, waitFor, waitForHttp } from './process.ts';
import { tempDir } from './tmp.ts';

export interface PromSample {
  metric: Record<string, string>;
  value: [number, string];
}

export interface PromRule {
  name: string;
  type: 'alerting' | 'recording';
  health: string;
  lastError?: string;
}

export interface PrometheusHandle {
  url: string;
  /** An instant query; throws with Prometheus's error (a parse or matching error) unless it succeeded. */
  query(expr: string): Promise<PromSample[]>;
  /** Every rule with its evaluation health. */
  rules(): Promise<PromRule[]>;
  stop(): Promise<void>;
}

export interface StartPrometheusOptions {
  /** host:port of the /metrics target, scraped as job `job`. */
  target: string;
  job: string;
  /** Rule files to load (absolute paths). */
  ruleFiles: string[];
}

async function getJson<T>(url: string): Promise<T> {
  const res = await request(url, { signal: AbortSignal.timeout(10_000) });
  const body = (await res.body.json()) as { status: string; data: T; error?: string; errorType?: string };
  if (body.status !== 'success') throw new Error(`${url}: ${body.errorType ?? ''} ${body.error ?? JSON.stringify(body)}`);
  return body.data;
}

export async function startPrometheus(opts: StartPrometheusOptions): Promise<PrometheusHandle> {
  await ensureCommands([{ command: 'prometheus', debianPackage: 'prometheus' }]);
  const dir = await tempDir('archway-prometheus-');
  const config = {
    global: { scrape_interval: '1s', scrape_timeout: '1s', evaluation_interval: '1s' },
    rule_files: opts.ruleFiles,
    scrape_configs: [{ job_name: opts.job, static_configs: [{ targets: [opts.target] }] }],
  };
  const configFile = join(dir, 'prometheus.yml');
  await writeFile(configFile, JSON.stringify(config, null, 2)); // JSON is YAML
  const port = await freePort();
  const url = `http://127.0.0.1:${port}`;
  const proc = await startProcess({
    name: 'prometheus',
    command: 'prometheus',
    args: [`--config.file=${configFile}`, `--storage.tsdb.path=${join(dir, 'data')}`, `--web.listen-address=127.0.0.1:${port}`],
    logFile: join(dir, 'prometheus.log'),
  });
  await waitForHttp(`${url}/-/ready`, 30_000, proc);
  await waitFor(
    async () => {
      const res = await request(`${url}/-/ready`, { signal: AbortSignal.timeout(2000) });
      await res.body.dump();
      return res.statusCode === 200;
    },
    { timeoutMs: 30_000, description: 'prometheus ready', proc },
  );
  const query = async (expr: string) =>
    (await getJson<{ resultType: string; result: PromSample[] }>(`${url}/api/v1/query?query=${encodeURIComponent(expr)}`)).result;
  return {
    url,
    query,
    rules: async () => (await getJson<{ groups: Array<{ rules: PromRule[] }> }>(`${url}/api/v1/rules`)).groups.flatMap((g) => g.rules),
    stop: () => proc.stop(),
  };
}
