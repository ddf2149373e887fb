import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { rewriteLink } from '../../src/http/link.ts';

describe('tags/list Link rewriting', () => {
  it('gives the client back its own name', () => {
    assert.equal(rewriteLink('</v2/library/alpine/tags/list?n=2&last=b>; rel="next"', 'library/alpine', 'alpine'), '</v2/alpine/tags/list?n=2&last=b>; rel="next"');
  });
  it('makes absolute upstream links relative, so the next page comes through archway', () => {
    assert.equal(
      rewriteLink('<https://registry-1.docker.io/v2/org/app/tags/list?last=x&n=5>; rel="next"', 'org/app', 'org/app'),
      '</v2/org/app/tags/list?last=x&n=5>; rel="next"',
    );
  });
  it('keeps ?ns= so the next page reaches the same registry', () => {
    assert.equal(rewriteLink('</v2/org/app/tags/list?n=2&last=b>; rel="next"', 'org/app', 'org/app', 'ghcr.io'), '</v2/org/app/tags/list?n=2&last=b&ns=ghcr.io>; rel="next"');
  });
  it('leaves other links alone', () => {
    assert.equal(rewriteLink('</v2/other/tags/list>; rel="next"', 'org/app', 'app'), '</v2/other/tags/list>; rel="next"');
  });
});
