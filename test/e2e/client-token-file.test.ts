// Client bearer tokens read from a file (auth.tokens[].tokenFile, a mounted secret): the file's
// token (its final newline is no part of it) admits to its repositories and nothing else; a
// file that cannot be read stops start-up naming the field, never a token.
import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { startArchway, type ArchwayHandle } from '../harness/archway.ts';
import { sha256Digest as sha256 } from '../harness/digest.ts';
import { ACCEPT, http, type HttpAnswer } from '../harness/http.ts';
import { buildImage, type BuiltImage } from '../harness/images.ts';
import { startRegistry, type RegistryHandle } from '../harness/registry.ts';
import { pushLayout } from '../harness/skopeo.ts';
import { removeDir, tempDir } from '../harness/tmp.ts';

const UPSTREAM = 'registry.test';
const FILE_TOKEN = 'from-a-mounted-secret-0123456789';
const INLINE_TOKEN = 'inline-token-abcdef0123456789';

let work: string;
let registry: RegistryHandle;
let app: BuiltImage;
let archway: ArchwayHandle;

const errorCode = (r: HttpAnswer) => r.json<{ errors: Array<{ code: string }> }>().errors[0]?.code;
const bearer = (token: string) => ({ accept: ACCEPT.all, authorization: `Bearer ${token}` });

before(async () => {
  work = await tempDir('archway-token-file-');
  registry = await startRegistry();
  app = await buildImage({ dir: join(work, 'app'), tag: '1', platforms: [{ os: 'linux', architecture: 'amd64' }], format: 'oci', layerSizes: [32 * 1024], seed: 'token-file', index: false });
  for (const name of ['team/app', 'team/secret']) await pushLayout(app, { hostPort: registry.hostPort, name });
  const tokenFile = join(work, 'ci-token');
  // As a Kubernetes secret or `echo token > file` leaves it: with a final newline.
  await writeFile(tokenFile, `${FILE_TOKEN}\n`);
  archway = await startArchway({
    upstreams: { [UPSTREAM]: { url: registry.url } },
    auth: {
      tokens: [
        { name: 'ci', tokenFile, repositories: ['team/app'] },
        { name: 'ops', token: INLINE_TOKEN, repositories: ['**'] },
      ],
    },
  });
});

after(async () => {
  await archway?.stop();
  await registry?.stop();
  await removeDir(work);
});

describe('auth.tokens[].tokenFile', () => {
  it('the token in the file (without its final newline) pulls its repositories, byte for byte', async () => {
    const m = await http(`${archway.url}/v2/team/app/manifests/1`, { headers: bearer(FILE_TOKEN) });
    assert.equal(m.status, 200, m.body.toString());
    assert.equal(m.headers['docker-content-digest'], app.topDigest);
    const layer = app.manifests[0]!.layers[0]!;
    const b = await http(`${archway.url}/v2/team/app/blobs/${layer.digest}`, { headers: bearer(FILE_TOKEN) });
    assert.equal(sha256(b.body), layer.digest);
  });

  it('only its repositories: another one is DENIED to it, not to a token granted everything', async () => {
    const denied = await http(`${archway.url}/v2/team/secret/manifests/1`, { headers: bearer(FILE_TOKEN) });
    assert.equal(denied.status, 403);
    assert.equal(errorCode(denied), 'DENIED');
    const ops = await http(`${archway.url}/v2/team/secret/manifests/1`, { headers: bearer(INLINE_TOKEN) });
    assert.equal(ops.status, 200);
  });

  it('a near miss of the file\'s token is refused', async () => {
    for (const wrong of [FILE_TOKEN.slice(0, -1), `${FILE_TOKEN}x`, `${FILE_TOKEN}%0A`]) {
      const r = await http(`${archway.url}/v2/team/app/manifests/1`, { headers: bearer(wrong) });
      assert.equal(r.status, 401, JSON.stringify(wrong));
      assert.equal(errorCode(r), 'UNAUTHORIZED');
    }
  });

  it('a token file that cannot be read stops start-up, naming the field and the file', async () => {
    const missing = join(work, 'no-such-token');
    await assert.rejects(
      startArchway({ upstreams: { [UPSTREAM]: { url: registry.url } }, auth: { tokens: [{ name: 'ci', tokenFile: missing }] } }),
      (err: Error) => err.message.includes('auth.tokens.0.tokenFile: cannot read') && err.message.includes(missing) && err.message.includes('ENOENT'),
    );
  });
});
