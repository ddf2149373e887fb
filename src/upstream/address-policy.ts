import { isIP } from 'node:net';
import { CidrSet, parseCidr } from '../platform/cidr.ts';

/**
 * Where an address leads. `link-local` holds the cloud metadata services
 * (169.254.169.254, AWS's fd00:ec2::254); `reserved` is what no registry
 * lives at (multicast, class E, IPv4-compatible IPv6).
 */
export type AddressClass = 'public' | 'private' | 'loopback' | 'link-local' | 'reserved';

/** How far inside an upstream lives: a redirect may lead no further in than this. */
export type UpstreamReach = 'public' | 'private' | 'loopback';

export type RefusalReason = 'network.deny' | 'link-local' | 'reserved' | 'inward';

export type Verdict = { allowed: true } | { allowed: false; address: string; reason: RefusalReason };

// First match wins: AWS's IPv6 metadata address sits inside fc00::/7, 0.0.0.0 connects to this host.
const CLASSES: ReadonlyArray<readonly [AddressClass, CidrSet]> = [
  ['link-local', new CidrSet(['169.254.0.0/16', 'fe80::/10', 'fd00:ec2::254/128'])],
  ['loopback', new CidrSet(['127.0.0.0/8', '0.0.0.0/8', '::1/128', '::/128'])],
  // 100.64/10 is carrier-grade NAT: as internal as RFC 1918 from where archway stands. fec0::/10 is the old site-local.
  ['private', new CidrSet(['10.0.0.0/8', '172.16.0.0/12', '192.168.0.0/16', '100.64.0.0/10', 'fc00::/7', 'fec0::/10'])],
  ['reserved', new CidrSet(['224.0.0.0/4', '240.0.0.0/4', 'ff00::/8', '::/96'])],
];

const REACH_RANK: Readonly<Record<UpstreamReach, number>> = { public: 0, private: 1, loopback: 2 };

/**
 * An IP address in the form its class is judged by: IPv6 that carries an
 * IPv4 address a packet will end up at (IPv4-mapped `::ffff:a.b.c.d`, the
 * NAT64 prefix `64:ff9b::/96`) becomes that IPv4 address; a zone (`%eth0`)
 * is dropped. Undefined for anything that is not an IP address.
 */
export function canonicalAddress(address: string): string | undefined {
  const bare = address.replace(/^\[(.*)\]$/, '$1').replace(/%.*$/, '');
  const family = isIP(bare);
  if (family === 4) return bare;
  if (family !== 6) return undefined;
  const groups = ipv6Groups(bare);
  const embedsIpv4 =
    (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) ||
    (groups[0] === 0x64 && groups[1] === 0xff9b && groups.slice(2, 6).every((g) => g === 0));
  if (!embedsIpv4) return new URL(`http://[${bare}]/`).hostname.slice(1, -1);
  const [hi = 0, lo = 0] = groups.slice(6);
  return [hi >> 8, hi & 0xff, lo >> 8, lo & 0xff].join('.');
}

/** The eight 16-bit groups of a valid IPv6 address (WHATWG URL parsing normalises dotted tails and case). */
function ipv6Groups(address: string): number[] {
  const canonical = new URL(`http://[${address}]/`).hostname.slice(1, -1);
  const [head = '', tail] = canonical.split('::');
  const first = head === '' ? [] : head.split(':');
  const last = tail === undefined || tail === '' ? [] : tail.split(':');
  const zeros = tail === undefined ? [] : Array<string>(8 - first.length - last.length).fill('0');
  return [...first, ...zeros, ...last].map((g) => Number.parseInt(g, 16));
}

export function classifyAddress(address: string): AddressClass {
  const ip = canonicalAddress(address);
  if (ip === undefined) throw new Error(`not an IP address: ${address}`);
  for (const [cls, set] of CLASSES) if (set.has(ip)) return cls;
  return 'public';
}

/**
 * How far inside an upstream is, from the addresses its configured host
 * resolves to. The most public of them counts: a host that is public on any
 * address may be anybody's, so it gets no say over private ones.
 */
export function upstreamReach(addresses: readonly string[]): UpstreamReach {
  let reach: UpstreamReach = 'loopback';
  for (const address of addresses) {
    const cls = classifyAddress(address);
    const r: UpstreamReach = cls === 'public' ? 'public' : cls === 'loopback' ? 'loopback' : 'private';
    if (REACH_RANK[r] < REACH_RANK[reach]) reach = r;
  }
  return reach;
}

export interface AddressPolicyOptions {
  /**
   * The hostname of the upstream's configured url: the operator named it, so it may be private or
   * loopback; it may be link-local only when named by that very address (a name that resolves there
   * is a poisoned or rebound DNS answer, not a registry).
   */
  upstreamHost: string;
  /** `upstreams.<key>.allowRedirectsTo`: hostnames and CIDRs this upstream may send archway to. */
  allow: readonly string[];
  /** `network.deny`: CIDRs archway never connects to, whoever asks. */
  deny: readonly string[];
}

/**
 * Which addresses one upstream's connections may go to: to the upstream's
 * own host (but a metadata address only if the operator wrote that address
 * as the url); elsewhere (a redirect target, a token realm) only where the
 * upstream could have sent its clients anyway: never to link-local or
 * reserved addresses and never further inside than the upstream itself
 * (public → private or loopback, private → loopback), unless
 * allowRedirectsTo names the host or the address. network.deny beats
 * everything, the upstream's own host included: it is the operator's last word.
 */
export class AddressPolicy {
  private readonly upstreamHost: string;
  private readonly allowHosts: ReadonlySet<string>;
  private readonly allowCidrs: CidrSet;
  private readonly deny: CidrSet;

  constructor(opts: AddressPolicyOptions) {
    this.upstreamHost = normaliseHost(opts.upstreamHost);
    const cidrs = opts.allow.filter(isCidr);
    this.allowCidrs = new CidrSet(cidrs);
    this.allowHosts = new Set(opts.allow.filter((a) => !isCidr(a)).map(normaliseHost));
    this.deny = new CidrSet(opts.deny);
  }

  /** True for the host the upstream was configured with: the upstream's own connections, which need no reach. */
  isUpstreamHost(hostname: string): boolean {
    return normaliseHost(hostname) === this.upstreamHost;
  }

  /**
   * Judge every address `hostname` resolved to; one refused address refuses
   * the host (a name that resolves to a public and a metadata address is not
   * trusted with either). `reach` is needed unless isUpstreamHost(hostname).
   */
  check(hostname: string, addresses: readonly string[], reach: UpstreamReach | undefined): Verdict {
    const own = this.isUpstreamHost(hostname);
    const namedHost = this.allowHosts.has(normaliseHost(hostname));
    for (const address of addresses) {
      const ip = canonicalAddress(address);
      if (ip === undefined) return { allowed: false, address, reason: 'reserved' };
      if (this.deny.has(ip)) return { allowed: false, address, reason: 'network.deny' };
      if (namedHost || this.allowCidrs.has(ip) || ip === this.upstreamHost) continue;
      const cls = classifyAddress(ip);
      if (cls === 'link-local' || cls === 'reserved') return { allowed: false, address, reason: cls };
      if (own) continue;
      if (reach === undefined || REACH_RANK[cls] > REACH_RANK[reach]) return { allowed: false, address, reason: 'inward' };
    }
    return { allowed: true };
  }
}

/**
 * A connection the policy refused: carries the host and address for the log
 * line (never the URL: a redirect's query may be a presigned credential).
 */
export class AddressRefusedError extends Error {
  readonly code = 'ARCHWAY_ADDRESS_REFUSED';

  constructor(
    readonly host: string,
    readonly address: string,
    readonly reason: RefusalReason,
    /** False when the upstream's own host was refused (by network.deny). */
    readonly redirected: boolean,
  ) {
    super(`refused to connect to ${host} (${address}): ${reason}`);
    this.name = 'AddressRefusedError';
  }
}

function isCidr(entry: string): boolean {
  try {
    parseCidr(entry);
    return true;
  } catch {
    return false;
  }
}

function normaliseHost(host: string): string {
  const bare = host.toLowerCase().replace(/^\[(.*)\]$/, '$1').replace(/\.$/, '');
  return canonicalAddress(bare) ?? bare;
}
