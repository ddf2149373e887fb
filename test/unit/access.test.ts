import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import bcrypt from 'bcryptjs';
import { ClientAuth } from '../../src/access/client-auth.ts';
import { readHtpasswd } from '../../src/access/htpasswd.ts';
import { RateLimiter } from '../../src/access/rate-limiter.ts';
import { RegistryError } from '../../src/errors.ts';

const basic = (user: string, pw: string) => `Basic ${Buffer.from(`${user}:${pw}`).toString('base64')}`;

async function failure(p: Promise<unknown>): Promise<RegistryError> {
  try {
    await p;
  } catch (err) {
    assert.ok(err instanceof RegistryError);
    return err;
  }
  assert.fail('expected a failure');
}

describe('client authentication', () => {
  const auth = new ClientAuth({
    users: new Map([
      ['alice', bcrypt.hashSync('alice-pw', 4)],
      ['bob', bcrypt.hashSync('bob-pw', 4)],
    ]),
    grants: { alice: ['ghcr.io/myorg/**', 'library/*'] },
    tokens: [{ name: 'ci', token: 'a-long-static-token-1234', repositories: ['team/**'] }],
    defaultUpstream: 'docker.io',
  });

  it('accepts Basic credentials from the htpasswd file, with the user’s patterns', async () => {
    const alice = await auth.authenticate(basic('alice', 'alice-pw'));
    assert.equal(alice.name, 'alice');
    assert.ok(alice.allows('docker.io/library/alpine'), 'unqualified patterns are about the default upstream');
    assert.ok(alice.allows('ghcr.io/myorg/app'));
    assert.ok(alice.allows('ghcr.io/myorg/team/app'));
    assert.ok(!alice.allows('docker.io/library/a/b'));
    assert.ok(!alice.allows('ghcr.io/other/app'));
    assert.ok(!alice.allows('private.example/library/secret'), 'library/* at another registry is not granted');
    const bob = await auth.authenticate(basic('bob', 'bob-pw'));
    assert.ok(bob.allows('quay.io/anything/at/all'), 'a user without patterns may pull everything');
  });

  it('remembers a verification: the same credentials again cost no bcrypt check, other ones do', async () => {
    // Every bcrypt check starts by looking the user's hash up: counting lookups counts checks.
    class CountingUsers extends Map<string, string> {
      lookups = 0;
      override get(user: string): string | undefined {
        this.lookups++;
        return super.get(user);
      }
    }
    const users = new CountingUsers([['alice', bcrypt.hashSync('alice-pw', 4)]]);
    const counted = new ClientAuth({ users, grants: {}, tokens: [], defaultUpstream: 'docker.io' });
    assert.equal((await counted.authenticate(basic('alice', 'alice-pw'))).name, 'alice');
    assert.equal(users.lookups, 1);
    for (let i = 0; i < 3; i++) assert.equal((await counted.authenticate(basic('alice', 'alice-pw'))).name, 'alice');
    assert.equal(users.lookups, 1, 'verified once, remembered after');
    await failure(counted.authenticate(basic('alice', 'wrong')));
    await failure(counted.authenticate(basic('alice', 'wrong')));
    assert.equal(users.lookups, 2, 'a refusal is remembered too');
  });

  it('accepts static bearer tokens', async () => {
    const ci = await auth.authenticate('Bearer a-long-static-token-1234');
    assert.equal(ci.name, 'ci');
    assert.ok(ci.allows('docker.io/team/app'));
    assert.ok(!ci.allows('docker.io/library/alpine'));
    assert.ok(!ci.allows('ghcr.io/team/app'));
  });

  it('refuses anything else with UNAUTHORIZED and a Basic challenge', async () => {
    for (const header of [undefined, '', basic('alice', 'wrong'), basic('mallory', 'x'), 'Bearer nope', 'Basic !!!', 'Digest x']) {
      const err = await failure(auth.authenticate(header));
      assert.equal(err.status, 401);
      assert.equal(err.code, 'UNAUTHORIZED');
      assert.equal(err.headers['www-authenticate'], 'Basic realm="archway"');
    }
  });
});

describe('htpasswd files', () => {
  const dir = mkdtempSync(join(tmpdir(), 'archway-htpasswd-'));
  it('reads bcrypt entries, skipping comments and blank lines', () => {
    const file = join(dir, 'ok');
    writeFileSync(file, `# users\nalice:${bcrypt.hashSync('x', 4)}\n\nbob:${bcrypt.hashSync('y', 4).replace('$2b$', '$2y$')}\n`);
    assert.deepEqual([...readHtpasswd(file).keys()], ['alice', 'bob']);
  });
  it('refuses weak or broken entries, naming the line', () => {
    const file = join(dir, 'md5');
    writeFileSync(file, `alice:${bcrypt.hashSync('x', 4)}\nbob:$apr1$abc$def\n`);
    assert.throws(() => readHtpasswd(file), /line 2 .* not a bcrypt entry/);
    assert.throws(() => readHtpasswd(join(dir, 'missing')), /auth\.htpasswd: cannot read/);
  });
});

describe('per-client limits', () => {
  it('refuses beyond the concurrent limit until a request finishes', () => {
    const limiter = new RateLimiter({ concurrentRequests: 2 });
    const a = limiter.admit('10.0.0.1');
    limiter.admit('10.0.0.1');
    const err = (() => {
      try {
        limiter.admit('10.0.0.1');
      } catch (e) {
        return e as RegistryError;
      }
      return undefined;
    })();
    assert.equal(err?.code, 'TOOMANYREQUESTS');
    assert.equal(err?.headers['retry-after'], '1');
    limiter.admit('10.0.0.2'); // another client is not affected
    a();
    a(); // releasing twice counts once: the other request of 10.0.0.1 is still running
    limiter.admit('10.0.0.1');
    assert.throws(() => limiter.admit('10.0.0.1'), (e: unknown) => e instanceof RegistryError && e.code === 'TOOMANYREQUESTS', 'two in flight again');
  });

  it('refills the request-rate bucket over time', () => {
    let now = 0;
    const limiter = new RateLimiter({ requestsPerSecond: 2 }, () => now);
    limiter.admit('c')();
    limiter.admit('c')();
    assert.throws(() => limiter.admit('c'), (e: unknown) => e instanceof RegistryError && e.status === 429 && e.headers['retry-after'] === '1');
    now = 500;
    limiter.admit('c')();
    assert.throws(() => limiter.admit('c'));
    now = 1500;
    limiter.admit('c')();
    limiter.admit('c')();
  });
});
