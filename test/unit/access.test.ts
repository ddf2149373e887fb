import assert from 'node:assert/strict';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import bcrypt from 'bcryptjs';
import { ClientAuth } from '../../src/access/client-auth.ts';
import { readHtpasswd } from '../../src/access/htpasswd.ts';
import { FailedLoginLimiter, clientKey } from '../../src/access/login-limiter.ts';
import { PasswordCheckPool, type PasswordChecker } from '../../src/access/password-checks.ts';
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
    passwords: new PasswordCheckPool({ workers: 1, queue: 16 }),
    failedLogins: new FailedLoginLimiter({ burst: 100, perMinute: 100 }),
  });
  after(() => auth.close());

  it('accepts Basic credentials from the htpasswd file, with the user’s patterns', async () => {
    const alice = await auth.authenticate(basic('alice', 'alice-pw'), '10.0.0.1');
    assert.equal(alice.name, 'alice');
    assert.ok(alice.allows('docker.io/library/alpine'), 'unqualified patterns are about the default upstream');
    assert.ok(alice.allows('ghcr.io/myorg/app'));
    assert.ok(alice.allows('ghcr.io/myorg/team/app'));
    assert.ok(!alice.allows('docker.io/library/a/b'));
    assert.ok(!alice.allows('ghcr.io/other/app'));
    assert.ok(!alice.allows('private.example/library/secret'), 'library/* at another registry is not granted');
    const bob = await auth.authenticate(basic('bob', 'bob-pw'), '10.0.0.1');
    assert.ok(bob.allows('quay.io/anything/at/all'), 'a user without patterns may pull everything');
    assert.equal((await auth.authenticate(basic('alice', 'alice-pw'), '10.0.0.1')).name, 'alice', 'cached verification');
  });

  it('accepts static bearer tokens', async () => {
    const ci = await auth.authenticate('Bearer a-long-static-token-1234', '10.0.0.1');
    assert.equal(ci.name, 'ci');
    assert.ok(ci.allows('docker.io/team/app'));
    assert.ok(!ci.allows('docker.io/library/alpine'));
    assert.ok(!ci.allows('ghcr.io/team/app'));
  });

  it('refuses anything else with UNAUTHORIZED and a Basic challenge', async () => {
    for (const header of [undefined, '', basic('alice', 'wrong'), basic('mallory', 'x'), 'Bearer nope', 'Basic !!!', 'Digest x']) {
      const err = await failure(auth.authenticate(header, '10.0.0.1'));
      assert.equal(err.status, 401);
      assert.equal(err.code, 'UNAUTHORIZED');
      assert.equal(err.headers['www-authenticate'], 'Basic realm="archway"');
    }
  });
});

/** Counts the checks it is asked for, answering after `delayMs` (no real bcrypt). */
function countingChecker(good: Map<string, string>, delayMs = 0) {
  const counter = { calls: 0, close: async () => {} };
  const checker: PasswordChecker & { calls: number } = Object.assign(counter, {
    check: async (password: string, hash: string) => {
      counter.calls++;
      await new Promise((r) => setTimeout(r, delayMs));
      return good.get(hash) === password;
    },
  });
  return checker;
}

describe('failed logins and password checks', () => {
  const HASH = { alice: '$2b$04$alice', carol: '$2b$04$carol' };
  const build = (checker: PasswordChecker, limits = { burst: 3, perMinute: 60 }, now = () => 0) => {
    const outcomes: string[] = [];
    const auth = new ClientAuth({
      users: new Map(Object.entries(HASH)),
      grants: {},
      tokens: [],
      defaultUpstream: 'docker.io',
      passwords: checker,
      failedLogins: new FailedLoginLimiter(limits, now),
      onCheck: (o) => outcomes.push(o),
    });
    return { auth, outcomes };
  };

  it('limits failures per address before hashing, with Retry-After; other addresses and remembered good credentials are not limited', async () => {
    const checker = countingChecker(new Map([[HASH.alice, 'right'], [HASH.carol, 'carol-pw']]));
    let now = 0;
    const { auth, outcomes } = build(checker, { burst: 3, perMinute: 60 }, () => now);
    assert.equal((await auth.authenticate(basic('alice', 'right'), '10.0.0.1')).name, 'alice');
    for (let i = 0; i < 3; i++) assert.equal((await failure(auth.authenticate(basic('alice', `guess-${i}`), '10.0.0.1'))).status, 401);
    const limited = await failure(auth.authenticate(basic('alice', 'guess-x'), '10.0.0.1'));
    assert.equal(limited.code, 'TOOMANYREQUESTS');
    assert.equal(limited.headers['retry-after'], '1');
    assert.equal(checker.calls, 4, 'the limited guess was not hashed');
    // A new login from the same address waits too: only until the bucket refills.
    assert.equal((await failure(auth.authenticate(basic('carol', 'carol-pw'), '10.0.0.1'))).code, 'TOOMANYREQUESTS');
    assert.equal((await auth.authenticate(basic('alice', 'right'), '10.0.0.1')).name, 'alice', 'a remembered credential is never limited');
    assert.equal((await auth.authenticate(basic('carol', 'carol-pw'), '10.0.0.2')).name, 'carol', 'another address is not limited');
    now = 1000;
    assert.equal((await failure(auth.authenticate(basic('alice', 'guess-y'), '::ffff:10.0.0.1'))).status, 401, 'a second later one more guess is hashed');
    assert.equal((await failure(auth.authenticate(basic('alice', 'guess-z'), '10.0.0.1'))).code, 'TOOMANYREQUESTS', 'one: IPv4-mapped is the same address');
    assert.deepEqual(outcomes, ['ok', 'refused', 'refused', 'refused', 'limited', 'limited', 'ok', 'refused', 'limited']);
    assert.equal(checker.calls, 6);
  });

  it('a repeated wrong credential costs no hash and no token; parallel first requests share one check', async () => {
    const checker = countingChecker(new Map([[HASH.alice, 'right']]), 20);
    const { auth } = build(checker, { burst: 1, perMinute: 1 });
    await Promise.all(Array.from({ length: 8 }, () => auth.authenticate(basic('alice', 'right'), '10.0.0.9')));
    assert.equal(checker.calls, 1);
    for (let i = 0; i < 5; i++) assert.equal((await failure(auth.authenticate(basic('alice', 'wrong'), '10.0.0.9'))).status, 401);
    assert.equal(checker.calls, 2);
  });

  it('guesses in flight hold their tokens: 32 at once from one address hash only `burst` of them', async () => {
    const checker = countingChecker(new Map(), 20);
    const { auth } = build(checker, { burst: 3, perMinute: 1 });
    const answers = await Promise.all(Array.from({ length: 32 }, (_, i) => failure(auth.authenticate(basic('alice', `g${i}`), '10.0.0.3'))));
    assert.equal(checker.calls, 3);
    assert.equal(answers.filter((e) => e.code === 'TOOMANYREQUESTS').length, 29);
  });

  it('one address has at most 4 checks in flight, so it cannot fill the queue others need', async () => {
    const checker = countingChecker(new Map([[HASH.carol, 'carol-pw']]), 20);
    const { auth } = build(checker, { burst: 100, perMinute: 1 });
    const guesses = Array.from({ length: 32 }, (_, i) => failure(auth.authenticate(basic('alice', `g${i}`), '10.0.0.4')));
    const carol = auth.authenticate(basic('carol', 'carol-pw'), '10.0.0.5');
    const answers = await Promise.all(guesses);
    assert.equal((await carol).name, 'carol');
    assert.equal(answers.filter((e) => e.code === 'TOOMANYREQUESTS').length, 28);
    assert.equal(checker.calls, 5);
    assert.equal((await failure(auth.authenticate(basic('alice', 'later'), '10.0.0.4'))).status, 401, 'checks that finished make room');
  });

  it('addresses are counted per IPv4 address and per IPv6 /64', () => {
    assert.equal(clientKey('192.0.2.7'), '192.0.2.7');
    assert.equal(clientKey('::ffff:192.0.2.7'), '192.0.2.7');
    assert.equal(clientKey('2001:db8:1:2:aaaa::1'), clientKey('2001:0db8:0001:0002:ffff:1:2:3'));
    assert.notEqual(clientKey('2001:db8:1:2::1'), clientKey('2001:db8:1:3::1'));
    assert.equal(clientKey('::1'), '0:0:0:0::/64');
  });

  it('bcrypt runs on a worker: the event loop keeps ticking while a slow check runs', async () => {
    const pool = new PasswordCheckPool({ workers: 1, queue: 1 });
    after(() => pool.close());
    const hash = bcrypt.hashSync('pw', 12);
    let last = performance.now();
    let worstGap = 0;
    const ticker = setInterval(() => {
      const t = performance.now();
      worstGap = Math.max(worstGap, t - last);
      last = t;
    }, 5);
    const started = performance.now();
    const [ok, bad] = await Promise.all([pool.check('pw', hash), pool.check('nope', hash)]);
    const took = performance.now() - started;
    clearInterval(ticker);
    assert.equal(ok, true);
    assert.equal(bad, false);
    assert.ok(took > 200, `two cost-12 checks took ${took.toFixed(0)} ms (they really ran)`);
    // On the event loop, one check alone would stall it for half the time; a loaded machine may still pause it briefly.
    assert.ok(worstGap < Math.max(100, took / 4), `the event loop stalled for ${worstGap.toFixed(0)} ms during ${took.toFixed(0)} ms of hashing`);
  });

  it('beyond workers plus queue, a check is refused at once with 429 TOOMANYREQUESTS', async () => {
    const pool = new PasswordCheckPool({ workers: 1, queue: 2 });
    after(() => pool.close());
    const hash = bcrypt.hashSync('pw', 10);
    const running = [pool.check('a', hash), pool.check('b', hash), pool.check('c', hash)];
    const err = await failure(pool.check('d', hash));
    assert.equal(err.code, 'TOOMANYREQUESTS');
    assert.equal(err.headers['retry-after'], '1');
    assert.deepEqual(await Promise.all(running), [false, false, false]);
    assert.equal(await pool.check('pw', hash), true, 'room again once the queue drained');
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
