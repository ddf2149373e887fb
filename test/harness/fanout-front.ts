// A front for the real registry that counts how many requests are in flight
// at once (and holds each for `delayMs`, so that unbounded fan-out would show
// as many at once). Only what a real registry cannot report: its concurrency.
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { request } from 'undici';

export interface FanOutFront {
  /** http://127.0.0.1:PORT */
  url: string;
  /** Most requests in flight at once since the last reset, for paths matching `pattern`. */
  peak: number;
  /** Requests for paths matching `pattern` since the last reset. */
  count: number;
  reset(): void;
  close(): Promise<void>;
}

export async function startFanOutFront(target: string, opts: { delayMs: number; pattern: RegExp }): Promise<FanOutFront> {
  let active = 0;
  const front = { peak: 0, count: 0 };
  const server: Server = createServer((req: IncomingMessage, res) => {
    const counted = opts.pattern.test(req.url ?? '');
    if (counted) {
      active++;
      front.count++;
      front.peak = Math.max(front.peak, active);
    }
    const done = () => {
      if (counted) active--;
    };
    void (async () => {
      try {
        await new Promise((r) => setTimeout(r, counted ? opts.delayMs : 0));
        const headers = Object.fromEntries(Object.entries(req.headers).filter(([k]) => k !== 'host' && k !== 'connection'));
        const up = await request(`${target}${req.url}`, { method: req.method as 'GET', headers });
        const body = Buffer.from(await up.body.arrayBuffer());
        const out = Object.fromEntries(Object.entries(up.headers).filter(([k]) => !['connection', 'transfer-encoding', 'keep-alive'].includes(k)));
        res.writeHead(up.statusCode, out);
        res.end(req.method === 'HEAD' ? undefined : body);
      } catch {
        res.writeHead(502).end();
      } finally {
        done();
      }
    })();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  const port = (server.address() as { port: number }).port;
  return Object.assign(front, {
    url: `http://127.0.0.1:${port}`,
    reset() {
      front.peak = 0;
      front.count = 0;
    },
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  });
}
