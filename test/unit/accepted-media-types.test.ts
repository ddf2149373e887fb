// The Accept header as archway reads it: every listed media type, parameters and
// case dropped, several headers merged; parsed once per distinct header text.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { acceptedMediaTypes } from '../../src/oci/media-types.ts';

const DOCKER = 'application/vnd.docker.distribution.manifest.v2+json, Application/VND.OCI.image.index.v1+json; q=0.5,application/vnd.oci.image.manifest.v1+json';

describe('accepted media types', () => {
  it('lists each type once, without parameters or case, from one header or several', () => {
    assert.deepEqual([...acceptedMediaTypes(DOCKER)].sort(), [
      'application/vnd.docker.distribution.manifest.v2+json',
      'application/vnd.oci.image.index.v1+json',
      'application/vnd.oci.image.manifest.v1+json',
    ]);
    assert.deepEqual([...acceptedMediaTypes(['text/plain', ' */* '])], ['text/plain', '*/*']);
    assert.equal(acceptedMediaTypes(undefined).size, 0);
    assert.equal(acceptedMediaTypes(' , ,').size, 0);
  });

  it('answers the same header text from what it parsed, and stays right when many distinct headers arrive', () => {
    assert.equal(acceptedMediaTypes(DOCKER), acceptedMediaTypes(DOCKER), 'parsed once');
    // More distinct headers than it keeps: each is still read correctly.
    for (let i = 0; i < 1000; i++) assert.deepEqual([...acceptedMediaTypes(`application/x-${i}, text/plain`)], [`application/x-${i}`, 'text/plain']);
    assert.ok(acceptedMediaTypes(DOCKER).has('application/vnd.oci.image.index.v1+json'));
  });
});
