import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { AddressPolicy, canonicalAddress, classifyAddress, upstreamReach, type AddressClass } from '../../src/upstream/address-policy.ts';

describe('address classification', () => {
  const cases: Array<[string, AddressClass]> = [
    ['169.254.169.254', 'link-local'],
    ['169.254.0.1', 'link-local'],
    ['fe80::1', 'link-local'],
    ['fe80::1%eth0', 'link-local'],
    ['febf:ffff::1', 'link-local'],
    ['fd00:ec2::254', 'link-local'],
    ['fd00:ec2:0:0:0:0:0:254', 'link-local'],
    ['::ffff:169.254.169.254', 'link-local'],
    ['::ffff:a9fe:a9fe', 'link-local'],
    ['0:0:0:0:0:ffff:a9fe:a9fe', 'link-local'],
    ['64:ff9b::169.254.169.254', 'link-local'],
    ['127.0.0.1', 'loopback'],
    ['127.255.255.254', 'loopback'],
    ['0.0.0.0', 'loopback'],
    ['::1', 'loopback'],
    ['::', 'loopback'],
    ['::ffff:127.0.0.1', 'loopback'],
    ['10.1.2.3', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.1.1', 'private'],
    ['100.64.0.1', 'private'],
    ['fd12:3456::1', 'private'],
    ['fc00::1', 'private'],
    ['::ffff:10.0.0.1', 'private'],
    ['224.0.0.1', 'reserved'],
    ['255.255.255.255', 'reserved'],
    ['ff02::1', 'reserved'],
    ['::10.0.0.1', 'reserved'],
    ['8.8.8.8', 'public'],
    ['172.32.0.1', 'public'],
    ['169.253.255.255', 'public'],
    ['100.128.0.1', 'public'],
    ['2606:4700::1111', 'public'],
    ['fe00::1', 'public'],
    ['::ffff:8.8.8.8', 'public'],
    ['64:ff9b::808:808', 'public'],
  ];
  for (const [address, cls] of cases) {
    it(`${address} is ${cls}`, () => assert.equal(classifyAddress(address), cls));
  }

  it('unwraps IPv4 carried in IPv6 and canonicalises the rest', () => {
    assert.equal(canonicalAddress('::FFFF:A9FE:A9FE'), '169.254.169.254');
    assert.equal(canonicalAddress('64:ff9b::1'), '0.0.0.1');
    assert.equal(canonicalAddress('[FD00:EC2:0::254]'), 'fd00:ec2::254');
    assert.equal(canonicalAddress('registry.example'), undefined);
    assert.throws(() => classifyAddress('registry.example'), /not an IP address/);
  });

  it('an upstream is as public as the most public of its addresses', () => {
    assert.equal(upstreamReach(['127.0.0.1', '::1']), 'loopback');
    assert.equal(upstreamReach(['10.0.0.5']), 'private');
    assert.equal(upstreamReach(['fd00::5', '127.0.0.1']), 'private');
    assert.equal(upstreamReach(['10.0.0.5', '203.0.113.7']), 'public');
    assert.equal(upstreamReach(['::ffff:8.8.8.8']), 'public');
  });
});

describe('address policy', () => {
  const none = new AddressPolicy({ upstreamHost: 'registry.example', allow: [], deny: [] });

  it('never lets an upstream send archway to a metadata address, in any spelling', () => {
    for (const address of ['169.254.169.254', '::ffff:169.254.169.254', '::ffff:a9fe:a9fe', '64:ff9b::a9fe:a9fe', 'fd00:ec2::254', 'fe80::1']) {
      for (const reach of ['public', 'private', 'loopback'] as const) {
        assert.deepEqual(none.check('cdn.example', [address], reach), { allowed: false, address, reason: 'link-local' }, `${address} from ${reach}`);
      }
    }
    assert.deepEqual(none.check('cdn.example', ['239.1.1.1'], 'loopback'), { allowed: false, address: '239.1.1.1', reason: 'reserved' });
  });

  it('never sends archway further inside than the upstream lives', () => {
    const refused = (address: string, reach: 'public' | 'private' | 'loopback') => !none.check('cdn.example', [address], reach).allowed;
    assert.ok(refused('10.0.0.1', 'public'));
    assert.ok(refused('fd00::1', 'public'));
    assert.ok(refused('127.0.0.1', 'public'));
    assert.ok(refused('::1', 'public'));
    assert.ok(refused('::ffff:127.0.0.1', 'public'));
    assert.ok(refused('127.0.0.1', 'private'));
    assert.ok(!refused('8.8.8.8', 'public'));
    assert.ok(!refused('8.8.8.8', 'private'));
    assert.ok(!refused('10.0.0.1', 'private'));
    assert.ok(!refused('fd00::1', 'private'));
    assert.ok(!refused('127.0.0.1', 'loopback'));
    assert.ok(!refused('10.0.0.1', 'loopback'));
    assert.deepEqual(none.check('cdn.example', ['10.0.0.1'], 'public'), { allowed: false, address: '10.0.0.1', reason: 'inward' });
  });

  it('refuses a host when any one of its addresses is refused', () => {
    assert.deepEqual(none.check('cdn.example', ['8.8.8.8', '169.254.169.254'], 'public'), { allowed: false, address: '169.254.169.254', reason: 'link-local' });
    assert.deepEqual(none.check('cdn.example', ['2606:4700::1111', '10.0.0.1'], 'public'), { allowed: false, address: '10.0.0.1', reason: 'inward' });
    assert.deepEqual(none.check('cdn.example', ['8.8.8.8', '2606:4700::1111'], 'public'), { allowed: true });
    assert.deepEqual(none.check('cdn.example', ['not-an-address'], 'public'), { allowed: false, address: 'not-an-address', reason: 'reserved' });
  });

  it('judges a hop without the upstream reach as refused (fails closed)', () => {
    assert.equal(none.check('cdn.example', ['8.8.8.8'], undefined).allowed, false);
  });

  it('allows the upstream its own host at any private or loopback address, a metadata address only if named by it', () => {
    assert.ok(none.isUpstreamHost('registry.example'));
    assert.ok(none.isUpstreamHost('Registry.Example.'));
    assert.ok(!none.isUpstreamHost('cdn.example'));
    assert.deepEqual(none.check('registry.example', ['10.0.0.1', '127.0.0.1', 'fd00::1', '8.8.8.8'], undefined), { allowed: true });
    // A registry name resolving to the metadata service is a rebound or poisoned answer.
    assert.deepEqual(none.check('registry.example', ['10.0.0.1', '169.254.169.254'], undefined), { allowed: false, address: '169.254.169.254', reason: 'link-local' });
    const literal = new AddressPolicy({ upstreamHost: '[FD00::1]', allow: [], deny: [] });
    assert.ok(literal.isUpstreamHost('fd00::1'));
    const linkLocal = new AddressPolicy({ upstreamHost: '169.254.10.20', allow: [], deny: [] });
    assert.deepEqual(linkLocal.check('169.254.10.20', ['169.254.10.20'], undefined), { allowed: true });
    assert.equal(linkLocal.check('cdn.example', ['169.254.10.20'], 'private').allowed, true, 'the address the operator named is allowed whoever leads there');
    assert.equal(linkLocal.check('cdn.example', ['169.254.169.254'], 'private').allowed, false);
    const listed = new AddressPolicy({ upstreamHost: 'registry.example', allow: ['registry.example'], deny: [] });
    assert.deepEqual(listed.check('registry.example', ['169.254.169.254'], undefined), { allowed: true });
  });

  it('allowRedirectsTo opens hosts and CIDRs, and nothing else', () => {
    const open = new AddressPolicy({ upstreamHost: 'registry.example', allow: ['internal-cdn.example', '10.20.0.0/16', 'fd00:ec2::254'], deny: [] });
    assert.deepEqual(open.check('internal-cdn.example', ['127.0.0.5', '169.254.1.1'], 'public'), { allowed: true });
    assert.deepEqual(open.check('Internal-CDN.example.', ['10.0.0.1'], 'public'), { allowed: true });
    assert.deepEqual(open.check('other.example', ['10.20.3.4'], 'public'), { allowed: true });
    assert.deepEqual(open.check('other.example', ['::ffff:10.20.3.4'], 'public'), { allowed: true });
    assert.deepEqual(open.check('other.example', ['fd00:ec2::254'], 'public'), { allowed: true });
    assert.deepEqual(open.check('other.example', ['10.21.0.1'], 'public'), { allowed: false, address: '10.21.0.1', reason: 'inward' });
    assert.deepEqual(open.check('other.example', ['10.20.3.4', '10.21.0.1'], 'public'), { allowed: false, address: '10.21.0.1', reason: 'inward' });
  });

  it('network.deny closes addresses to everyone: hops, allowRedirectsTo and the upstream itself', () => {
    const closed = new AddressPolicy({ upstreamHost: 'registry.example', allow: ['cdn.example', '127.0.0.0/8'], deny: ['127.0.0.2/32', '203.0.113.0/24', '2001:db8::/32'] });
    assert.deepEqual(closed.check('cdn.example', ['127.0.0.2'], 'loopback'), { allowed: false, address: '127.0.0.2', reason: 'network.deny' });
    assert.deepEqual(closed.check('cdn.example', ['::ffff:127.0.0.2'], 'loopback'), { allowed: false, address: '::ffff:127.0.0.2', reason: 'network.deny' });
    assert.deepEqual(closed.check('registry.example', ['203.0.113.9'], undefined), { allowed: false, address: '203.0.113.9', reason: 'network.deny' });
    assert.deepEqual(closed.check('x.example', ['2001:db8::1'], 'public'), { allowed: false, address: '2001:db8::1', reason: 'network.deny' });
    assert.deepEqual(closed.check('cdn.example', ['127.0.0.3'], 'public'), { allowed: true });
    assert.deepEqual(closed.check('registry.example', ['198.51.100.1'], undefined), { allowed: true });
  });
});
