// Reads Prometheus samples from an archway's /metrics (processes, and the in-process handle's metric()).
import { request, type Dispatcher } from 'undici';

/**
 * Sum of the samples of `name` whose labels include `labels`. A name /metrics does not declare
 * (no `# TYPE` line, e.g. a typo) throws: otherwise "the counter did not move" holds for any misspelling.
 * A declared metric with no matching samples yet (a labelled counter nobody incremented) sums to 0.
 */
export async function scrapeMetric(baseUrl: string, name: string, labels: Record<string, string> = {}, dispatcher?: Dispatcher): Promise<number> {
  const res = await request(`${baseUrl}/metrics`, { ...(dispatcher ? { dispatcher } : {}), signal: AbortSignal.timeout(5000) });
  const text = await res.body.text();
  if (res.statusCode !== 200) throw new Error(`GET /metrics answered ${res.statusCode}: ${text.slice(0, 200)}`);
  const families = new Set([...text.matchAll(/^# TYPE ([a-zA-Z_:][\w:]*) /gm)].map((m) => m[1]));
  // A histogram's samples are name_bucket, name_sum, name_count.
  const family = name.replace(/_(bucket|sum|count)$/, '');
  if (!families.has(name) && !families.has(family)) throw new Error(`no metric ${name} on ${baseUrl}/metrics`);
  let total = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[3] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) total += Number(m[4]);
  }
  return total;
}
