import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatPlatform } from '../../src/platform/platform.ts';
import { PlatformPolicy, type ClientFacts } from '../../src/platform/policy.ts';
import { CidrSet } from '../../src/platform/cidr.ts';

const client = (over: Partial<ClientFacts> = {}): ClientFacts => ({
  port: 5000,
  host: 'mirror.internal',
  address: '10.0.0.5',
  userAgent: 'containerd/1.6',
  repositories: ['alpine', 'library/alpine', 'docker.io/library/alpine'],
  ...over,
});
const DOCKER_ARM64 = 'docker/24.0.7 go/go1.20 kernel/6.1 os/linux arch/arm64 UpstreamClient(Docker-Client/24.0.7)';

const summary = (p: PlatformPolicy, c: ClientFacts) => {
  const d = p.decide(c);
  return `${d.mode} ${formatPlatform(d.platform)} ${d.source}${d.rule === undefined ? '' : ` #${d.rule}`}`;
};

describe('platform policy', () => {
  it('without rules: passthrough, with the detected platform or the default for clients that cannot read indexes', () => {
    const p = new PlatformPolicy({ default: 'linux/amd64', rules: [] });
    assert.equal(summary(p, client()), 'passthrough linux/amd64 default');
    assert.equal(summary(p, client({ userAgent: DOCKER_ARM64 })), 'passthrough linux/arm64 detected');
    const s390 = new PlatformPolicy({ default: 'linux/s390x', rules: [] });
    assert.equal(summary(s390, client()), 'passthrough linux/s390x default');
  });

  it('matches each condition, all of them together, first match wins', () => {
    const p = new PlatformPolicy({
      default: 'linux/amd64',
      rules: [
        { match: { port: 5001, repository: 'library/pi-*' }, platform: 'linux/arm/v6', mode: 'resolve' },
        { match: { port: 5001 }, platform: 'linux/arm64', mode: 'resolve' },
        { match: { host: 'Power.Mirror' }, platform: 'linux/ppc64le', mode: 'filter' },
        { match: { clientCidr: ['192.168.7.0/24', 'fd00::/8'] }, platform: 'linux/arm/v7', mode: 'resolve' },
        { match: { userAgent: 'cri-o/' }, platform: 'detected', mode: 'filter' },
        { match: { repository: 'ghcr.io/**' }, platform: 'linux/s390x', mode: 'resolve' },
      ],
    });
    assert.equal(summary(p, client({ port: 5001, repositories: ['pi-hole', 'library/pi-hole'] })), 'resolve linux/arm/v6 rule #0');
    assert.equal(summary(p, client({ port: 5001 })), 'resolve linux/arm64 rule #1');
    assert.equal(summary(p, client({ host: 'power.mirror' })), 'filter linux/ppc64le rule #2');
    assert.equal(summary(p, client({ address: '192.168.7.20' })), 'resolve linux/arm/v7 rule #3');
    assert.equal(summary(p, client({ address: '::ffff:192.168.7.20' })), 'resolve linux/arm/v7 rule #3');
    assert.equal(summary(p, client({ address: 'fd12::1' })), 'resolve linux/arm/v7 rule #3');
    assert.equal(summary(p, client({ address: '192.168.8.1' })), 'passthrough linux/amd64 default');
    assert.equal(summary(p, client({ userAgent: 'cri-o/1.28 go/go1.20 os/linux arch/arm64' })), 'filter linux/arm64 detected #4');
    assert.equal(summary(p, client({ repositories: ['ghcr.io/org/app'] })), 'resolve linux/s390x rule #5');
  });

  it('a rule for the detected platform passes through when the client reports none', () => {
    const p = new PlatformPolicy({ default: 'linux/amd64', rules: [{ match: {}, platform: 'detected', mode: 'resolve' }] });
    assert.equal(summary(p, client({ userAgent: 'skopeo/1.9' })), 'passthrough linux/amd64 default #0');
    assert.equal(summary(p, client({ userAgent: DOCKER_ARM64 })), 'resolve linux/arm64 detected #0');
  });
});

describe('CIDR sets', () => {
  it('matches addresses and ranges, IPv4 and IPv6', () => {
    const set = new CidrSet(['10.0.0.0/8', '127.0.0.2', '2001:db8::/32']);
    assert.ok(set.has('10.200.1.1'));
    assert.ok(set.has('127.0.0.2'));
    assert.ok(!set.has('127.0.0.1'));
    assert.ok(set.has('2001:db8::5'));
    assert.ok(!set.has('2001:db9::5'));
    assert.ok(!set.has('not an ip'));
    assert.throws(() => new CidrSet(['10.0.0.0/33']), /invalid prefix/);
    assert.throws(() => new CidrSet(['example.com']), /invalid address/);
  });
});
