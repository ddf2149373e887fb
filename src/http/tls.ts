import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import { ConfigError } from '../config/load.ts';

export interface TlsFiles {
  cert: string;
  key: string;
}

/**
 * The certificate and key, read and checked to make a usable pair, for a
 * reload: checked before anything changes, so a bad pair refuses the reload
 * and the one in use stays. Put in use with `setSecureContext` on each
 * listener: connections already open keep theirs, new ones get the new one.
 */
export function loadTlsPair(tls: TlsFiles): { cert: string; key: string } {
  const pair = readTls(tls);
  try {
    createSecureContext(pair);
  } catch (e) {
    // OpenSSL's reason names the PEM or key problem, never the key's bytes.
    throw new ConfigError(`server.tls: ${tls.cert} and ${tls.key} are not a usable certificate and key (${(e as Error).message})`);
  }
  return pair;
}

export function readTls(tls: TlsFiles): { cert: string; key: string } {
  try {
    return { cert: readFileSync(tls.cert, 'utf8'), key: readFileSync(tls.key, 'utf8') };
  } catch (e) {
    throw new ConfigError(`server.tls: cannot read ${(e as NodeJS.ErrnoException).path ?? 'the certificate'} (${(e as NodeJS.ErrnoException).code})`);
  }
}
