// Tag-list paging as the distribution spec describes it (n, last, Link
// rel="next"), and how one member's whole list is read for a virtual image:
// every page followed, bounded, kept for the tag TTL, served stale when the
// upstream fails, shared by concurrent requests.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import pino from 'pino';
import { nextPageLink } from '../../src/http/link.ts';
import { nextPageQuery, tagPage, tagPageRequest, tagsOf } from '../../src/oci/tag-list.ts';
import type { Route } from '../../src/routing/router.ts';
import type { PassThroughResponse } from '../../src/upstream/upstream.ts';
import { MemberTags } from '../../src/virtual/member-tags.ts';
import { TestClock } from '../harness/in-process-services.ts';
import { ScriptedUpstream, type Call } from '../harness/scripted-upstream.ts';

const request = (query: string) => tagPageRequest(new URLSearchParams(query));

describe('tag pages (n, last)', () => {
  const all = ['a', 'b', 'c', 'd', 'e'];

  it('reads n and last from the query; an n that is no non-negative integer is ignored', () => {
    assert.deepEqual(request('n=2&last=b'), { n: 2, last: 'b' });
    assert.deepEqual(request('last='), { last: '' });
    for (const n of ['-1', '2.5', 'x', '', '1e3', '9999999999']) assert.deepEqual(request(`n=${n}`), {}, n);
  });

  it('answers up to n tags after last, and names the next page while tags remain', () => {
    assert.deepEqual(tagPage(all, {}), { tags: all });
    assert.deepEqual(tagPage(all, { n: 2 }), { tags: ['a', 'b'], next: { n: 2, last: 'b' } });
    assert.deepEqual(tagPage(all, { n: 2, last: 'b' }), { tags: ['c', 'd'], next: { n: 2, last: 'd' } });
    assert.deepEqual(tagPage(all, { n: 2, last: 'd' }), { tags: ['e'] }, 'the last page links nowhere');
    assert.deepEqual(tagPage(all, { n: 1, last: 'd' }), { tags: ['e'] }, 'a page that ends the list exactly links nowhere');
    assert.deepEqual(tagPage(all, { last: 'bb' }), { tags: ['c', 'd', 'e'] }, 'last need not be a tag of the list');
    assert.deepEqual(tagPage(all, { last: 'e' }), { tags: [] });
    assert.deepEqual(tagPage(all, { n: 0 }), { tags: [] }, 'n=0: no link, it would name the same page');
    assert.deepEqual(tagPage([], { n: 3 }), { tags: [] });
  });

  it('walks a list page by page, each link to the next, to the whole list', () => {
    const list = Array.from({ length: 23 }, (_, i) => `t${String(i).padStart(2, '0')}`);
    for (const n of [1, 2, 5, 22, 23, 24]) {
      const seen: string[] = [];
      let page = tagPage(list, { n });
      seen.push(...page.tags);
      while (page.next) {
        page = tagPage(list, page.next);
        seen.push(...page.tags);
      }
      assert.deepEqual(seen, list, `n=${n}`);
    }
  });
});

describe('the next page of an upstream’s tag list', () => {
  it('is the query of the rel="next" target, relative or absolute', () => {
    assert.equal(nextPageQuery('</v2/a/tags/list?n=2&last=b>; rel="next"'), '?n=2&last=b');
    assert.equal(nextPageQuery('<https://registry.example/v2/a/tags/list?last=b&n=2>; rel="next"'), '?last=b&n=2');
    assert.equal(nextPageQuery('<https://elsewhere.example/v2/other/tags/list?n=2&last=b>;rel=next'), '?n=2&last=b', 'only the query is taken');
    assert.equal(nextPageQuery(['</x?n=1&last=p>; rel="prev"', '</x?n=1&last=q>; rel="next"']), '?n=1&last=q');
    assert.equal(nextPageQuery('</x?n=1&last=p>; rel="prev", </x?n=1&last=q>; title="t"; rel="Next"'), '?n=1&last=q');
    assert.equal(nextPageQuery('</x?n=1&last=q>; rel="next last"'), '?n=1&last=q', 'rel may name several relations');
  });

  it('is re-encoded, whatever the header held', () => {
    assert.equal(nextPageQuery('</x?last=a b&n=2#frag>; rel="next"'), '?last=a+b&n=2');
    assert.equal(nextPageQuery('</x?last=a%2Fb>; rel="next"'), '?last=a%2Fb');
  });

  it('is none on the last page, and an empty query for a next target without one', () => {
    assert.equal(nextPageQuery(undefined), undefined);
    assert.equal(nextPageQuery('</x?n=1&last=p>; rel="prev"'), undefined);
    assert.equal(nextPageQuery('not a link'), undefined);
    assert.equal(nextPageQuery('</v2/a/tags/list>; rel="next"'), '');
  });
});

describe('archway’s own next-page link', () => {
  it('is relative, under the client’s name, with n, the last tag and ?ns=', () => {
    assert.equal(nextPageLink('multi/app', { n: 50, last: 'v1.2' }), '</v2/multi/app/tags/list?n=50&last=v1.2>; rel="next"');
    assert.equal(nextPageLink('multi/app', { n: 5, last: 'x' }, 'docker.io'), '</v2/multi/app/tags/list?n=5&last=x&ns=docker.io>; rel="next"');
  });
});

describe('tags in a tags/list body', () => {
  it('are the valid tags of its `tags`; anything else contributes nothing', () => {
    const body = (doc: unknown) => Buffer.from(JSON.stringify(doc));
    assert.deepEqual(tagsOf(body({ name: 'a', tags: ['1', 'latest', 'v1.2_rc-3'] })), ['1', 'latest', 'v1.2_rc-3']);
    assert.deepEqual(tagsOf(body({ tags: ['ok', 7, null, '', '-x', 'a b', '<script>', 'x'.repeat(129)] })), ['ok']);
    assert.deepEqual(tagsOf(body({ tags: null })), []);
    assert.deepEqual(tagsOf(body({})), []);
    assert.deepEqual(tagsOf(Buffer.from('{"tags": [')), []);
  });
});

/** A member repository whose upstream answers `pageSize` tags per page, linking to the next. */
function pagedUpstream(tags: string[], pageSize: number) {
  const upstream = new ScriptedUpstream({ name: 'pages.example' });
  upstream.whenever('listTags', (call: Call): PassThroughResponse => {
    const query = new URLSearchParams(call.reference);
    const last = query.get('last');
    const after = [...tags].sort().filter((t) => last === null || t > last);
    const page = after.slice(0, pageSize);
    const link = after.length > pageSize ? `</v2/${call.repository}/tags/list?n=${pageSize}&last=${page.at(-1)}>; rel="next"` : undefined;
    return { status: 200, body: Buffer.from(JSON.stringify({ tags: page })), headers: link ? { link } : {} };
  });
  const route: Route = { upstream, repository: 'team/app', via: 'default' };
  return { upstream, route };
}

const TTL = 60_000;

function memberTags(limits = { pages: 100, tags: 10_000 }) {
  const clock = new TestClock();
  const logs: Array<Record<string, unknown>> = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => logs.push(JSON.parse(line) as Record<string, unknown>) });
  return { tags: new MemberTags(logger, TTL, limits, clock.now), clock, logs };
}

describe('a member’s whole tag list', () => {
  const list = Array.from({ length: 30 }, (_, i) => `v${i}`);

  it('follows every page, sorted; concurrent requests share one reading, kept for the tag TTL', async () => {
    const { upstream, route } = pagedUpstream(list, 4);
    const { tags, clock } = memberTags();
    const [a, b] = await Promise.all([tags.of(route), tags.of(route)]);
    assert.deepEqual(a, [...list].sort());
    assert.deepEqual(b, a);
    assert.equal(upstream.count('listTags'), 8, 'ceil(30 / 4) pages, once');
    assert.deepEqual(upstream.calls.slice(0, 2).map((c) => c.reference), ['', '?n=4&last=v11']);
    clock.advance(TTL - 1);
    await tags.of(route);
    assert.equal(upstream.count('listTags'), 8, 'within the TTL: not asked again');
    clock.advance(2);
    await tags.of(route);
    assert.equal(upstream.count('listTags'), 16, 'after it: read again');
  });

  it('is served as last read when the upstream fails after the TTL; never read: undefined (left out)', async () => {
    const { upstream, route } = pagedUpstream(list, 10);
    const { tags, clock, logs } = memberTags();
    await tags.of(route);
    clock.advance(TTL + 1);
    upstream.whenever('listTags', () => {
      throw upstream.status('listTags', 500);
    });
    assert.deepEqual(await tags.of(route), [...list].sort(), 'stale');
    assert.ok(logs.some((l) => l.msg === 'member tag list unreadable'));
    const other: Route = { ...route, repository: 'team/other' };
    assert.equal(await tags.of(other), undefined);
  });

  it('of a repository the upstream does not have is empty', async () => {
    const upstream = new ScriptedUpstream();
    upstream.whenever('listTags', () => {
      throw upstream.status('listTags', 404);
    });
    const { tags } = memberTags();
    assert.deepEqual(await tags.of({ upstream, repository: 'none', via: 'default' }), []);
  });

  it('stops at the page and tag limits, and at a link back to a page already read, saying why', async () => {
    const limited = async (tagsList: string[], pageSize: number, limits: { pages: number; tags: number }) => {
      const { upstream, route } = pagedUpstream(tagsList, pageSize);
      const { tags, logs } = memberTags(limits);
      const got = await tags.of(route);
      return { got, pages: upstream.count('listTags'), reasons: logs.filter((l) => l.msg === 'member tag list cut short').map((l) => l.reason) };
    };
    const sorted = [...list].sort();
    assert.deepEqual(await limited(list, 4, { pages: 3, tags: 100 }), { got: sorted.slice(0, 12), pages: 3, reasons: ['more than limits.memberTagPages (3) pages'] });
    assert.deepEqual(await limited(list, 4, { pages: 100, tags: 10 }), { got: sorted.slice(0, 10), pages: 3, reasons: ['more than limits.memberTags (10) tags'] });
    assert.deepEqual(await limited(list, 4, { pages: 100, tags: 8 }), { got: sorted.slice(0, 8), pages: 2, reasons: ['more than limits.memberTags (8) tags'] });
    assert.deepEqual(await limited(list, 4, { pages: 8, tags: 30 }), { got: sorted, pages: 8, reasons: [] }, 'exactly at both limits: complete');

    const upstream = new ScriptedUpstream();
    upstream.whenever('listTags', () => ({ status: 200, body: Buffer.from('{"tags":["a"]}'), headers: { link: '</v2/x/tags/list?n=1&last=a>; rel="next"' } }));
    const { tags, logs } = memberTags();
    assert.deepEqual(await tags.of({ upstream, repository: 'x', via: 'default' }), ['a']);
    assert.equal(upstream.count('listTags'), 2, 'the first page, then the linked one, which links to itself');
    assert.deepEqual(logs.filter((l) => l.msg === 'member tag list cut short').map((l) => l.reason), ['its next page is one already read']);
  });
});
