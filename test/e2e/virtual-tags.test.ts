// A virtual image's tags/list against members whose upstream pages its tag
// lists (a harness registry: the test registry, distribution 2.8, ignores n
// and last), with archway as its own process: every member's pages are
// followed (relative and absolute links), the union is answered whole or
// paged with the client's n/last and a Link of archway's own (keeping ?ns=);
// member lists are kept for the tag TTL; a member that cannot be read is left
// out; a member that links on forever, or has more tags than archway keeps,
// is cut short at the configured bounds and logged.
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, it } from 'node:test';
import { startArchwayProcess, type ArchwayProcess } from '../harness/archway-process.ts';
import { http } from '../harness/http.ts';
import { startPaginatingUpstream, type PaginatingUpstream } from '../harness/paginating-upstream.ts';

const REGISTRY = 'pages.test';
/** The upstream's own page size: far below every list, so nothing fits in one answer. */
const PAGE = 7;
const MAX_PAGES = 40;
const MAX_TAGS = 260;

const range = (from: number, to: number, name: (i: number) => string) => Array.from({ length: to - from }, (_, i) => name(from + i));
/** v0…v249 and v200…v319: 50 tags in common, and lexical order is not numeric order (v10 < v2). */
const AMD64 = range(0, 250, (i) => `v${i}`);
const ARM64 = range(200, 320, (i) => `v${i}`);
const UNION = [...new Set([...AMD64, ...ARM64])].sort();
const HUGE = range(0, 400, (i) => `h${String(i).padStart(3, '0')}`);

let upstream: PaginatingUpstream;
let archway: ArchwayProcess;

interface TagList {
  name: string;
  tags: string[];
}

async function tagsList(path: string) {
  const r = await http(`${archway.url}${path}`);
  assert.equal(r.status, 200, `${path}: ${r.body.toString('utf8')}`);
  assert.match(r.headers['content-type'] ?? '', /^application\/json(;|$)/, path);
  return { list: r.json<TagList>(), link: r.headers.link };
}

/** archway's log lines (pino JSON) with this message, once there are `count` (the output arrives on its own time). */
async function logged(msg: string, count: number): Promise<Array<Record<string, unknown>>> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const lines = archway
      .output()
      .split('\n')
      .flatMap((line) => {
        try {
          const doc = JSON.parse(line) as Record<string, unknown>;
          return doc.msg === msg ? [doc] : [];
        } catch {
          return [];
        }
      });
    if (lines.length >= count || Date.now() > deadline) return lines;
    await sleep(50);
  }
}

before(async () => {
  upstream = await startPaginatingUpstream({
    pageSize: PAGE,
    repositories: {
      'amd64/app': { tags: AMD64 },
      'arm64v8/app': { tags: ARM64, absoluteLinks: true },
      's390x/app': { fail: 'always' },
      'ppc64le/app': { tags: range(0, 30, (i) => `p${i}`), fail: 'after-first-page' },
      'endless/app': { endless: true },
      'huge/app': { tags: HUGE },
    },
  });
  archway = await startArchwayProcess({
    upstreams: { [REGISTRY]: { url: upstream.url } },
    defaultUpstream: REGISTRY,
    limits: { memberTagPages: MAX_PAGES, memberTags: MAX_TAGS },
    virtual: {
      // riscv64/app does not exist upstream (404): it has no tags.
      'multi/*': { members: { 'linux/amd64': 'amd64/{name}', 'linux/arm64': 'arm64v8/{name}', 'linux/riscv64': 'riscv64/{name}' } },
      'partial/app': { members: { 'linux/amd64': 'amd64/app', 'linux/s390x': 's390x/app', 'linux/ppc64le': 'ppc64le/app' } },
      'bounded/app': { members: { 'linux/amd64': 'endless/app', 'linux/arm64': 'huge/app' } },
    },
  });
});

after(async () => {
  await archway?.kill();
  await upstream?.stop();
});

describe('a virtual image’s tags/list over paginated members', () => {
  it('is the sorted union of every page of every member, in one answer without a Link', async () => {
    const { list, link } = await tagsList('/v2/multi/app/tags/list');
    assert.deepEqual(list, { name: 'multi/app', tags: UNION });
    assert.equal(link, undefined, 'the whole list: no next page');
    const amd64 = upstream.queries('amd64/app');
    assert.equal(amd64.length, Math.ceil(AMD64.length / PAGE), `every page asked once: ${amd64.join(' ')}`);
    assert.equal(amd64[0], '', 'the first page as a client asks for it');
    assert.equal(amd64[1], `?n=${PAGE}&last=${[...AMD64].sort()[PAGE - 1]}`, 'the next pages from the upstream’s Link');
    assert.equal(upstream.queries('arm64v8/app').length, Math.ceil(ARM64.length / PAGE), 'absolute links followed too');
  });

  it('pages through the union with n and last, each page linking to the next as the spec says', async () => {
    const seen: string[] = [];
    let path: string | undefined = '/v2/multi/app/tags/list?n=50';
    let pages = 0;
    while (path !== undefined) {
      const { list, link } = await tagsList(path);
      pages++;
      assert.ok(list.tags.length <= 50, `${path}: ${list.tags.length} tags`);
      seen.push(...list.tags);
      if (seen.length < UNION.length) {
        assert.equal(link, `</v2/multi/app/tags/list?n=50&last=${list.tags.at(-1)}>; rel="next"`, path);
        path = /^<([^>]+)>; rel="next"$/.exec(link ?? '')?.[1];
      } else {
        assert.equal(link, undefined, `${path}: the last page links nowhere`);
        path = undefined;
      }
      assert.ok(pages <= Math.ceil(UNION.length / 50), 'no more pages than the union needs');
    }
    assert.deepEqual(seen, UNION);

    const after300 = await tagsList('/v2/multi/app/tags/list?last=v300');
    assert.deepEqual(after300.list.tags, UNION.filter((t) => t > 'v300'), 'last alone: everything after it');
    assert.equal(after300.link, undefined);
    const none = await tagsList('/v2/multi/app/tags/list?n=0');
    assert.deepEqual(none.list.tags, []);
    assert.equal(none.link, undefined, 'n=0 links to no page (it would be the same one)');
    const exact = await tagsList(`/v2/multi/app/tags/list?n=${UNION.length}`);
    assert.equal(exact.list.tags.length, UNION.length);
    assert.equal(exact.link, undefined, 'nothing remains after a page that ends the list');
  });

  it('keeps ?ns= in its Link, so the next page reaches the same registry', async () => {
    const { list, link } = await tagsList(`/v2/multi/app/tags/list?n=10&last=v1&ns=${REGISTRY}`);
    assert.deepEqual(list.tags, UNION.filter((t) => t > 'v1').slice(0, 10));
    assert.equal(link, `</v2/multi/app/tags/list?n=10&last=${list.tags.at(-1)}&ns=${REGISTRY}>; rel="next"`);
  });

  it('asks the members again only after the tag TTL: their lists are kept', async () => {
    const before = upstream.queries('amd64/app').length + upstream.queries('arm64v8/app').length;
    await tagsList('/v2/multi/app/tags/list');
    await tagsList('/v2/multi/app/tags/list?n=3');
    assert.equal(upstream.queries('amd64/app').length + upstream.queries('arm64v8/app').length, before);
  });

  it('leaves out a member that cannot be read, on its first page or a later one', async () => {
    const { list, link } = await tagsList('/v2/partial/app/tags/list');
    assert.deepEqual(list, { name: 'partial/app', tags: [...AMD64].sort() }, 'amd64/app’s tags only (its list was kept)');
    assert.equal(link, undefined);
    assert.equal(upstream.queries('s390x/app').length, 1);
    assert.equal(upstream.queries('ppc64le/app').length, 2, 'its second page failed');
    const leftOut = (await logged('virtual image member left out of tags/list', 2)).map((l) => l.member);
    assert.deepEqual(leftOut.sort(), [`${REGISTRY}/ppc64le/app`, `${REGISTRY}/s390x/app`]);
  });

  it('cuts a member short at limits.memberTagPages and limits.memberTags, and says so', async () => {
    const { list } = await tagsList('/v2/bounded/app/tags/list');
    const endless = range(0, MAX_PAGES, (i) => `e${String(i).padStart(7, '0')}`);
    assert.deepEqual(list.tags, [...endless, ...HUGE.slice(0, MAX_TAGS)].sort());
    assert.equal(upstream.queries('endless/app').length, MAX_PAGES, 'no page asked beyond the limit');
    assert.equal(upstream.queries('huge/app').length, Math.ceil(MAX_TAGS / PAGE), 'no page asked after the tag limit');
    const cut = (await logged('member tag list cut short', 2)).map((l) => `${String(l.member)}: ${String(l.reason)}`);
    assert.deepEqual(cut.sort(), [
      `${REGISTRY}/endless/app: more than limits.memberTagPages (${MAX_PAGES}) pages`,
      `${REGISTRY}/huge/app: more than limits.memberTags (${MAX_TAGS}) tags`,
    ]);
  });
});
