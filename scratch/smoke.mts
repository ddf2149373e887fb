import pino from 'pino';
import { startSentinelTopology } from '/work/wt/sentinel/test/harness/redis.ts';
import { connectRedis } from '/work/wt/sentinel/src/coordination/redis.ts';
const t0 = Date.now();
const topo = await startSentinelTopology();
console.log('up in', Date.now() - t0, topo.sentinels, await topo.primaryPort());
const logger = pino({ level: 'info' });
const states: string[] = [];
const r = await connectRedis({ sentinels: topo.sentinels, name: topo.name }, logger, 'x', 3000, (ok) => states.push(`${Date.now()} ${ok}`));
await r.set('k', '1');
const f = await topo.killPrimary();
console.log('promoted after', f.promotedAt - f.killedAt, f);
let okAt = 0;
for (;;) { try { await r.set('k2', '2'); okAt = Date.now(); break; } catch { await new Promise((res) => setTimeout(res, 20)); } }
console.log('writes ok after', okAt - f.killedAt, states.map((s) => s.replace(/^(\d+)/, (m) => String(Number(m) - f.killedAt))));
await r.quit();
await topo.stop();
