import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns';
import { isIP, type LookupFunction } from 'node:net';
import { buildConnector } from 'undici';
import { AddressRefusedError, upstreamReach, type AddressPolicy } from './address-policy.ts';

/** All addresses of a name, as dns.lookup gives them (the OS resolver, /etc/hosts included). */
export type Resolve = (hostname: string, options: LookupOptions) => Promise<LookupAddress[]>;

export interface GuardedConnectorOptions {
  /** What undici's own connector takes: connect timeout, TLS settings. */
  connect: buildConnector.BuildOptions;
  policy: AddressPolicy;
  /** The hostname of the upstream's configured url, resolved to judge how far inside it lives. */
  upstreamHost: string;
  onRefused: (err: AddressRefusedError) => void;
  /** For tests that give names addresses the machine's resolver does not know. */
  resolve?: Resolve;
}

const systemResolve: Resolve = (hostname, options) =>
  new Promise((resolve, reject) => {
    dnsLookup(hostname, { ...options, all: true }, (err, addresses) => (err ? reject(err) : resolve(addresses)));
  });

/**
 * undici's connector, with every connection judged by the policy before it
 * is made: the upstream itself, each redirect hop and each token realm all
 * go through the upstream's Agent and so through here. A name is resolved
 * once, its addresses are checked, and exactly those are handed to
 * net.connect through its `lookup` option, so no second resolution can
 * answer differently (DNS rebinding). IP literals never reach `lookup`
 * (net connects to them directly) and are checked before connecting.
 */
export function guardedConnector(opts: GuardedConnectorOptions): buildConnector.connector {
  const resolve = opts.resolve ?? systemResolve;

  const judge = async (hostname: string, addresses: readonly string[]): Promise<void> => {
    const own = opts.policy.isUpstreamHost(hostname);
    // Only a hop away from the upstream needs its reach; resolved now, so it follows the upstream's DNS.
    const reach = own ? undefined : upstreamReach(await addressesOf(opts.upstreamHost, resolve));
    const verdict = opts.policy.check(hostname, addresses, reach);
    if (verdict.allowed) return;
    const err = new AddressRefusedError(hostname, verdict.address, verdict.reason, !own);
    opts.onRefused(err);
    throw err;
  };

  const lookup: LookupFunction = (hostname, options, callback) => {
    resolve(hostname, options)
      .then(async (found) => {
        if (found.length === 0) throw Object.assign(new Error(`${hostname} has no address`), { code: 'ENOTFOUND' });
        await judge(
          hostname,
          found.map((a) => a.address),
        );
        // net asks for all addresses when it races them (autoSelectFamily), else for one.
        if (options.all) callback(null, found);
        else callback(null, found[0]?.address ?? '', found[0]?.family);
      })
      .catch((err: NodeJS.ErrnoException) => callback(err, ''));
  };

  const connect = buildConnector({ ...opts.connect, lookup } as buildConnector.BuildOptions);
  return (options, callback) => {
    const literal = unbracket(options.hostname);
    if (isIP(literal) === 0) {
      connect(options, callback);
      return;
    }
    judge(literal, [literal]).then(
      () => connect(options, callback),
      (err: Error) => callback(err, null),
    );
  };
}

async function addressesOf(host: string, resolve: Resolve): Promise<string[]> {
  const literal = unbracket(host);
  if (isIP(literal) !== 0) return [literal];
  return (await resolve(literal, {})).map((a) => a.address);
}

function unbracket(host: string): string {
  return host.replace(/^\[(.*)\]$/, '$1');
}
