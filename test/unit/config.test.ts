import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ConfigError, loadConfigFile, parseConfig } from '../../src/config/load.ts';

const minimal = { upstreams: { 'docker.io': { url: 'https://registry-1.docker.io' } }, defaultUpstream: 'docker.io' };

describe('configuration', () => {
  it('fills defaults and parses units', () => {
    const c = parseConfig({ ...minimal, cache: { maxSize: '1GiB', tagTtl: '90s' } }, '/srv');
    assert.equal(c.server.port, 5000);
    assert.equal(c.cache.maxSize, 1024 ** 3);
    assert.equal(c.cache.tagTtl, 90_000);
    assert.equal(c.cache.dir, '/srv/data');
    assert.ok(Object.isFrozen(c.cache), 'the config is frozen');
    assert.equal(c.cache.scrub, undefined, 'no scrub unless asked for');
    assert.equal(c.cache.scrubRate, 32 * 1024 ** 2);
    const scrubbing = parseConfig({ ...minimal, cache: { scrub: '24h', scrubRate: '8MiB' } });
    assert.equal(scrubbing.cache.scrub, 86_400_000);
    assert.equal(scrubbing.cache.scrubRate, 8 * 1024 ** 2);
  });

  it('bounds password checks by default: failed logins per address, one worker, a short queue', () => {
    const c = parseConfig({ ...minimal, auth: { htpasswd: '/etc/archway/htpasswd' } });
    assert.deepEqual(c.auth?.failedLogins, { burst: 20, perMinute: 10 });
    assert.equal(c.auth?.passwordWorkers, 1);
    assert.equal(c.auth?.passwordQueue, 16);
    assert.throws(() => parseConfig({ ...minimal, auth: { htpasswd: 'x', passwordWorkers: 0 } }), /auth\.passwordWorkers/);
    assert.throws(() => parseConfig({ ...minimal, auth: { htpasswd: 'x', failedLogins: { burst: 0 } } }), /auth\.failedLogins\.burst/);
  });

  it('reads platform rules, normalising their platforms', () => {
    const c = parseConfig({
      ...minimal,
      server: { port: 5000, ports: [5001] },
      platform: { default: 'linux/x86_64', rules: [{ match: { port: 5001 }, platform: 'linux/aarch64', mode: 'resolve' }] },
    });
    assert.equal(c.platform.default, 'linux/amd64');
    assert.equal(c.platform.rules[0]?.platform, 'linux/arm64');
    assert.deepEqual(c.server.ports, [5001]);
  });

  it('reads where upstreams may send archway: network.deny, allowRedirectsTo, tokenRealms', () => {
    const plain = parseConfig(minimal);
    assert.deepEqual(plain.network.deny, []);
    assert.deepEqual(plain.upstreams['docker.io']?.allowRedirectsTo, []);
    assert.deepEqual(plain.upstreams['docker.io']?.tokenRealms, []);
    const c = parseConfig({
      ...minimal,
      network: { deny: ['10.96.0.0/12', 'fd00::/8', '192.0.2.7'] },
      upstreams: { 'docker.io': { url: 'https://registry-1.docker.io', allowRedirectsTo: ['cdn.internal.example', '10.20.0.0/16'], tokenRealms: ['auth.example:8443'] } },
    });
    assert.deepEqual(c.network.deny, ['10.96.0.0/12', 'fd00::/8', '192.0.2.7']);
    assert.deepEqual(c.upstreams['docker.io']?.allowRedirectsTo, ['cdn.internal.example', '10.20.0.0/16']);
    assert.deepEqual(c.upstreams['docker.io']?.tokenRealms, ['auth.example:8443']);
    const wrong: Array<[unknown, RegExp]> = [
      [{ ...minimal, network: { deny: ['10.0.0.0/33'] } }, /network\.deny\.0: must be an IP address or CIDR/],
      [{ ...minimal, upstreams: { 'docker.io': { url: 'https://x', allowRedirectsTo: ['http://cdn.example/'] } } }, /upstreams\.docker\.io\.allowRedirectsTo\.0/],
      [{ ...minimal, upstreams: { 'docker.io': { url: 'https://x', tokenRealms: ['https://auth.example/token'] } } }, /upstreams\.docker\.io\.tokenRealms\.0: token realms are hosts/],
    ];
    for (const [raw, message] of wrong) {
      assert.throws(() => parseConfig(raw), (err: unknown) => err instanceof ConfigError && message.test(err.message), String(message));
    }
  });

  it('ships a default config that loads: port 5000, Docker Hub, ./data', () => {
    const c = loadConfigFile('config/default.yaml');
    assert.equal(c.server.port, 5000);
    assert.equal(c.defaultUpstream, 'docker.io');
    assert.equal(c.upstreams['docker.io']?.url, 'https://registry-1.docker.io');
    assert.match(c.cache.dir, /\/data$/);
  });

  const bad: Array<[string, unknown, RegExp]> = [
    ['an unknown key', { ...minimal, cache: { sise: 1 } }, /cache: .*sise/],
    ['a bad size', { ...minimal, cache: { maxSize: 'huge' } }, /cache\.maxSize: invalid size/],
    ['a bad duration', { ...minimal, cache: { tagTtl: 'soon' } }, /cache\.tagTtl: invalid duration/],
    ['a scrub more often than every second', { ...minimal, cache: { scrub: '500ms' } }, /cache\.scrub: must be at least 1s/],
    ['a scrub rate below 64KiB/s', { ...minimal, cache: { scrubRate: '1KiB' } }, /cache\.scrubRate: must be at least 64KiB/],
    ['a default upstream that does not exist', { ...minimal, defaultUpstream: 'ghcr.io' }, /defaultUpstream: "ghcr.io" is not a key/],
    ['an upstream URL that is not http', { ...minimal, upstreams: { 'docker.io': { url: 'ftp://x' } } }, /upstreams\.docker\.io\.url/],
    ['two password sources', { ...minimal, upstreams: { 'docker.io': { url: 'https://x', password: 'a', passwordEnv: 'B' } } }, /at most one of password/],
    ['no upstreams', { upstreams: {}, defaultUpstream: 'docker.io' }, /upstreams: configure at least one upstream/],
    ['a bad platform in a rule', { ...minimal, platform: { rules: [{ platform: 'linux', mode: 'resolve' }] } }, /platform\.rules\.0\.platform: invalid platform "linux"/],
    ['an unknown mode', { ...minimal, platform: { rules: [{ platform: 'linux/arm64', mode: 'rewrite' }] } }, /platform\.rules\.0\.mode/],
    ['a bad User-Agent regex', { ...minimal, platform: { rules: [{ match: { userAgent: '(' }, platform: 'detected', mode: 'resolve' }] } }, /match\.userAgent: must be a valid regular expression/],
    ['a bad CIDR', { ...minimal, platform: { rules: [{ match: { clientCidr: '10.0.0.0/40' }, platform: 'linux/arm64', mode: 'resolve' }] } }, /match\.clientCidr/],
    ['a rule on a port archway does not listen on', { ...minimal, platform: { rules: [{ match: { port: 6000 }, platform: 'linux/arm64', mode: 'resolve' }] } }, /platform\.rules\.0\.match\.port: archway does not listen on 6000/],
    ['a bad default platform', { ...minimal, platform: { default: 'amd64' } }, /platform\.default: invalid platform/],
    ['a port out of range', { ...minimal, server: { port: 70000 } }, /server\.port/],
  ];
  for (const [what, raw, message] of bad) {
    it(`names the field for ${what}`, () => {
      assert.throws(() => parseConfig(raw), (err: unknown) => err instanceof ConfigError && message.test(err.message));
    });
  }

  it('a bad file stops start-up with exit code 2 and the reason', () => {
    const dir = mkdtempSync(join(tmpdir(), 'archway-config-'));
    const file = join(dir, 'bad.yaml');
    writeFileSync(file, 'upstreams: {}\ndefaultUpstream: docker.io\ncache:\n  maxSize: lots\n');
    const run = spawnSync(process.execPath, ['--import', 'tsx', 'src/main.ts', '--config', file], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(run.status, 2, run.stderr);
    assert.match(run.stderr, /cache\.maxSize: invalid size "lots"/);
    assert.doesNotMatch(run.stderr, /at .*\.ts:\d+/, 'no stack trace');
  });

  it('a YAML syntax error names the line and column but never quotes the file (a secret may be on the line)', () => {
    const dir = mkdtempSync(join(tmpdir(), 'archway-config-'));
    const secret = 'hunter2-S3CRET';
    const cases: Array<[string, string, RegExp]> = [
      ['unclosed quote', `upstreams:\n  docker.io:\n    url: https://registry-1.docker.io\n    password: "${secret}\n`, /at line 5, column 1: missing char$/],
      ['tab indentation', `upstreams:\n\tpassword: ${secret}\n`, /at line 2, column 1: tab as indent$/],
      ['nested compact mapping', `defaultUpstream: docker.io\npassword: ${secret}: x\n`, /at line 2, column 11: block as implicit key$/],
      ['duplicate key', `password: a\npassword: ${secret}\n`, /at line 2, column 1: duplicate key$/],
    ];
    for (const [what, text, where] of cases) {
      const file = join(dir, 'broken.yaml');
      writeFileSync(file, text);
      assert.throws(
        () => loadConfigFile(file),
        (err: unknown) => {
          assert.ok(err instanceof ConfigError, what);
          assert.match(err.message, new RegExp(`^config file ${file} is not valid YAML at line \\d+, column \\d+: `), what);
          assert.match(err.message, where, what);
          assert.doesNotMatch(err.message, /hunter2|S3CRET/i, `${what}: the line's text is not in the message`);
          assert.doesNotMatch(err.message, /\n/, `${what}: one line, no code frame`);
          return true;
        },
      );
    }
    // Not a syntax error but yaml's message would name the alias: said without it.
    writeFileSync(join(dir, 'alias.yaml'), `password: *${secret}\n`);
    assert.throws(() => loadConfigFile(join(dir, 'alias.yaml')), (err: unknown) => err instanceof ConfigError && /is not valid YAML$/.test(err.message) && !err.message.includes(secret));
  });

  it('a YAML syntax error stops start-up with exit code 2, its line and column, and nothing of the line', () => {
    const dir = mkdtempSync(join(tmpdir(), 'archway-config-'));
    const file = join(dir, 'broken.yaml');
    writeFileSync(file, 'upstreams:\n  docker.io:\n    url: https://registry-1.docker.io\n    password: "hunter2-S3CRET\n');
    const run = spawnSync(process.execPath, ['--import', 'tsx', 'src/main.ts', '--config', file], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(run.status, 2, run.stderr);
    assert.match(run.stderr, /is not valid YAML at line 5, column 1/);
    assert.doesNotMatch(`${run.stdout}${run.stderr}`, /hunter2|S3CRET/i, 'the secret on the broken line is printed nowhere');
    assert.doesNotMatch(run.stderr, /at .*\.ts:\d+/, 'no stack trace');
  });

  it('a password file that cannot be read also exits 2, naming the field', () => {
    const dir = mkdtempSync(join(tmpdir(), 'archway-config-'));
    const file = join(dir, 'creds.yaml');
    writeFileSync(
      file,
      `cache:\n  dir: ${dir}/cache\nupstreams:\n  docker.io:\n    url: https://registry-1.docker.io\n    username: u\n    passwordFile: ${dir}/missing\ndefaultUpstream: docker.io\n`,
    );
    const run = spawnSync(process.execPath, ['--import', 'tsx', 'src/main.ts', '--config', file], { encoding: 'utf8', timeout: 30_000 });
    assert.equal(run.status, 2, run.stderr);
    assert.match(run.stderr, /upstreams\.docker\.io\.passwordFile: cannot read .*missing \(ENOENT\)/);
  });
});
