// Which media type archway serves manifest bytes under: only a manifest type it
// checked, from the body's own mediaType field or, when the body has none, a
// header that names one. Anything else is no type at all (the caller answers 502).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { manifestMediaType } from '../../src/oci/manifest.ts';

const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
const doc = (fields: Record<string, unknown>) => Buffer.from(JSON.stringify({ schemaVersion: 2, ...fields }));

describe('manifestMediaType', () => {
  const cases: Array<[string, Buffer, string | undefined, string | undefined]> = [
    ['body field, html header', doc({ mediaType: OCI_MANIFEST }), 'text/html', OCI_MANIFEST],
    ['body field wins over another manifest header', doc({ mediaType: OCI_INDEX, manifests: [] }), DOCKER_MANIFEST, OCI_INDEX],
    ['no field, manifest header with parameters', doc({ layers: [] }), `${OCI_MANIFEST}; charset=utf-8`, OCI_MANIFEST],
    ['no field, header in upper case', doc({ layers: [] }), DOCKER_MANIFEST.toUpperCase(), DOCKER_MANIFEST],
    ['no field, html header', doc({ layers: [] }), 'text/html', undefined],
    ['no field, application/json (no more guessing from the shape)', doc({ manifests: [] }), 'application/json', undefined],
    ['no field, no header', doc({ layers: [] }), undefined, undefined],
    ['body says text/html, manifest header', doc({ mediaType: 'text/html' }), OCI_MANIFEST, undefined],
    ['body field not a string', doc({ mediaType: 7 }), OCI_MANIFEST, undefined],
    ['an artifact type archway does not serve', doc({ mediaType: 'application/vnd.oci.artifact.manifest.v1+json' }), OCI_MANIFEST, undefined],
  ];
  for (const [what, bytes, header, expected] of cases) {
    it(what, () => assert.equal(manifestMediaType(bytes, header), expected));
  }

  it('bytes that are not a JSON object throw, whatever the header', () => {
    assert.throws(() => manifestMediaType(Buffer.from('<html></html>'), OCI_MANIFEST), /not JSON/);
    assert.throws(() => manifestMediaType(Buffer.from('[]'), OCI_MANIFEST), /not a JSON object/);
  });
});
