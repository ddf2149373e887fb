// Reads Prometheus samples from an archway's /metrics (processes, and the in-process handle's metric()).
import { request, type Dispatcher } from 'undici';

/** Sum of the samples of `name` whose labels include `labels`. */
export async function scrapeMetric(baseUrl: string, name: string, labels: Record<string, string> = {}, dispatcher?: Dispatcher): Promise<number> {
  const res = await request(`${baseUrl}/metrics`, { ...(dispatcher ? { dispatcher } : {}), signal: AbortSignal.timeout(5000) });
  const text = await res.body.text();
  let total = 0;
  for (const line of text.split('\n')) {
    const m = /^([a-zA-Z_:][\w:]*)(\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[3] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1], x[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) total += Number(m[4]);
  }
  return total;
}
