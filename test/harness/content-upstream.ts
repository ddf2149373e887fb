// A registry that labels its answers however a test says: a manifest as
// text/html, a tag list as an HTML page. No real registry does that on
// demand, and it is what a hostile or broken upstream does. Everything not
// scripted is a 404 in the spec's envelope; /v2/ answers 200.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface ScriptedAnswer {
  status?: number;
  contentType: string;
  body: Buffer | string;
  headers?: Record<string, string>;
}

export interface ContentUpstream {
  url: string;
  /** Answer GET and HEAD of this path (without query) with this, from now on. */
  answer(path: string, answer: ScriptedAnswer): void;
  /** Paths requested so far (GET and HEAD), in order. */
  requested(): string[];
  stop(): Promise<void>;
}

export async function startContentUpstream(): Promise<ContentUpstream> {
  const answers = new Map<string, ScriptedAnswer>();
  const seen: string[] = [];
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    seen.push(path);
    req.resume();
    const scripted = path === '/v2/' ? { contentType: 'application/json', body: '{}' } : answers.get(path);
    const a = scripted ?? { status: 404, contentType: 'application/json', body: JSON.stringify({ errors: [{ code: 'MANIFEST_UNKNOWN', message: 'not here' }] }) };
    const body = typeof a.body === 'string' ? Buffer.from(a.body) : a.body;
    res.writeHead(a.status ?? 200, { 'content-type': a.contentType, 'content-length': body.length, ...a.headers });
    res.end(req.method === 'HEAD' ? undefined : body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    answer: (path, answer) => answers.set(path, answer),
    requested: () => [...seen],
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
