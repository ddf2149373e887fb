import { BlockList, isIP } from 'node:net';

/** A set of CIDR ranges (or single addresses), on Node's BlockList. IPv4-mapped IPv6 clients match IPv4 ranges. */
export class CidrSet {
  private readonly list = new BlockList();

  constructor(entries: readonly string[]) {
    for (const entry of entries) {
      const { address, prefix, family } = parseCidr(entry);
      this.list.addSubnet(address, prefix, family);
    }
  }

  has(address: string): boolean {
    const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)?.[1];
    const ip = mapped ?? address;
    const family = isIP(ip);
    if (family === 0) return false;
    return this.list.check(ip, family === 6 ? 'ipv6' : 'ipv4');
  }
}

export function parseCidr(s: string): { address: string; prefix: number; family: 'ipv4' | 'ipv6' } {
  const [address = '', prefixText] = s.trim().split('/');
  const family = isIP(address);
  if (family === 0) throw new Error(`invalid address or CIDR "${s}"`);
  const max = family === 4 ? 32 : 128;
  const prefix = prefixText === undefined ? max : Number(prefixText);
  if (!Number.isInteger(prefix) || prefix < 0 || prefix > max) throw new Error(`invalid prefix length in "${s}"`);
  return { address, prefix, family: family === 4 ? 'ipv4' : 'ipv6' };
}
