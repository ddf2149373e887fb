import { readFileSync } from 'node:fs';
import type { Server } from 'node:http';
import type { Server as HttpsServer } from 'node:https';
import { ConfigError } from '../config/load.ts';

export interface TlsFiles {
  cert: string;
  key: string;
}

/**
 * Load the certificate and key again (SIGHUP, after a renewal): connections
 * already open keep theirs, new ones get the new certificate; nothing is dropped.
 * A bad pair throws and the old one stays in use.
 */
export function reloadTls(servers: Server[], tls: TlsFiles): void {
  const context = readTls(tls);
  for (const server of servers) (server as HttpsServer).setSecureContext(context);
}

export function readTls(tls: TlsFiles): { cert: string; key: string } {
  try {
    return { cert: readFileSync(tls.cert, 'utf8'), key: readFileSync(tls.key, 'utf8') };
  } catch (e) {
    throw new ConfigError(`server.tls: cannot read ${(e as NodeJS.ErrnoException).path ?? 'the certificate'} (${(e as NodeJS.ErrnoException).code})`);
  }
}
