// A registry whose tags/list pages as the distribution spec says (n, last,
// `Link: <…?n=<n>&last=<tag>>; rel="next"`), never more than its own page size
// per answer, as Docker Hub, GHCR and Harbor cap theirs. The test registry
// (distribution 2.8) ignores n and last and answers everything at once, so it
// cannot show that archway follows the pages. Also what no registry does on
// demand: a repository that fails (500), one that fails after its first page,
// one that links on forever. Only /v2/ and tags/list are answered; everything
// else is a 404 in the spec's envelope.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';

export interface PagedRepository {
  /** Its tags (served sorted); ignored by `endless`. */
  tags?: readonly string[];
  /** `always`: every request is a 500; `after-first-page`: every request with `last` is. */
  fail?: 'always' | 'after-first-page';
  /** One new tag (`e0000000`, `e0000001`, …) and a next link, on every request: pages without end. */
  endless?: boolean;
  /** Links as absolute URLs (http://127.0.0.1:PORT/v2/…), as some registries write them. */
  absoluteLinks?: boolean;
}

export interface PaginatingUpstream {
  url: string;
  /** The queries of the tags/list requests for a repository so far, in order (`''` when there was none). */
  queries(repository: string): string[];
  stop(): Promise<void>;
}

function json(status: number, doc: unknown, headers: Record<string, string> = {}) {
  const body = Buffer.from(JSON.stringify(doc));
  return { status, body, headers: { 'content-type': 'application/json', 'content-length': String(body.length), ...headers } };
}

const NOT_HERE = json(404, { errors: [{ code: 'NAME_UNKNOWN', message: 'repository name not known to registry' }] });
const BROKEN = json(500, { errors: [{ code: 'UNKNOWN', message: 'unknown error' }] });

export async function startPaginatingUpstream(opts: { pageSize: number; repositories: Record<string, PagedRepository> }): Promise<PaginatingUpstream> {
  const seen = new Map<string, string[]>();
  let origin = '';
  const answer = (url: URL) => {
    if (url.pathname === '/v2/') return json(200, {});
    const match = /^\/v2\/(.+)\/tags\/list$/.exec(url.pathname);
    const name = match?.[1];
    const repo = name === undefined ? undefined : opts.repositories[name];
    if (name === undefined || repo === undefined) return NOT_HERE;
    seen.set(name, [...(seen.get(name) ?? []), url.search]);
    const last = url.searchParams.get('last');
    if (repo.fail === 'always' || (repo.fail === 'after-first-page' && last !== null)) return BROKEN;
    const asked = Number(url.searchParams.get('n') ?? opts.pageSize);
    const n = Math.min(Number.isInteger(asked) && asked >= 0 ? asked : opts.pageSize, opts.pageSize);
    let page: string[];
    let more: boolean;
    if (repo.endless) {
      const start = last === null ? 0 : Number(last.slice(1)) + 1;
      page = n > 0 ? [`e${String(start).padStart(7, '0')}`] : [];
      more = true;
    } else {
      const after = [...(repo.tags ?? [])].sort().filter((t) => last === null || t > last);
      page = after.slice(0, n);
      more = after.length > n;
    }
    const lastTag = page.at(-1);
    if (!more || lastTag === undefined) return json(200, { name, tags: page });
    const target = `${repo.absoluteLinks ? origin : ''}/v2/${name}/tags/list?n=${n}&last=${encodeURIComponent(lastTag)}`;
    return json(200, { name, tags: page }, { link: `<${target}>; rel="next"` });
  };
  const server: Server = createServer((req, res) => {
    req.resume();
    const a = answer(new URL(req.url ?? '/', 'http://127.0.0.1'));
    res.writeHead(a.status, a.headers);
    res.end(req.method === 'HEAD' ? undefined : a.body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  origin = `http://127.0.0.1:${port}`;
  return {
    url: origin,
    queries: (repository) => [...(seen.get(repository) ?? [])],
    async stop() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
