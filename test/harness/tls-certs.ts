// A throwaway certificate authority and server certificates made with
// openssl, for archway's HTTPS listeners: clients are told to trust the CA
// (skopeo --cert-dir, containerd's hosts.toml `ca`, node's `ca` option).
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ensureCommands } from './packages.ts';
import { run } from './process.ts';

export interface TestCa {
  /** PEM certificate of the CA. */
  certPath: string;
  keyPath: string;
  dir: string;
}

export interface ServerCert {
  certPath: string;
  keyPath: string;
  /** As node reports it: getPeerCertificate().serialNumber (upper-case hex). */
  serialNumber: string;
  commonName: string;
}

const EC = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];

async function openssl(args: string[]): Promise<void> {
  await ensureCommands([{ command: 'openssl', debianPackage: 'openssl' }]);
  await run('openssl', args);
}

/** A CA valid for two days, in `dir` (ca.crt, ca.key). */
export async function makeTestCa(dir: string, commonName = 'archway test CA'): Promise<TestCa> {
  const certPath = join(dir, 'ca.crt');
  const keyPath = join(dir, 'ca.key');
  await openssl([
    'req', '-x509', ...EC, '-days', '2', '-subj', `/CN=${commonName}`, '-keyout', keyPath, '-out', certPath,
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign,cRLSign',
  ]);
  return { certPath, keyPath, dir };
}

/**
 * A server certificate signed by `ca` for the given IP addresses and DNS
 * names (subjectAltName: Go clients ignore the CN), written as
 * `<name>.crt` / `<name>.key` in `dir`.
 */
export async function issueServerCert(
  ca: TestCa,
  opts: { dir: string; name: string; commonName: string; serialHex: string; ips?: string[]; dnsNames?: string[] },
): Promise<ServerCert> {
  const keyPath = join(opts.dir, `${opts.name}.key`);
  const certPath = join(opts.dir, `${opts.name}.crt`);
  const csrPath = join(opts.dir, `${opts.name}.csr`);
  const extPath = join(opts.dir, `${opts.name}.ext`);
  const san = [...(opts.ips ?? ['127.0.0.1']).map((ip) => `IP:${ip}`), ...(opts.dnsNames ?? []).map((d) => `DNS:${d}`)].join(',');
  await writeFile(
    extPath,
    [`subjectAltName=${san}`, 'basicConstraints=critical,CA:FALSE', 'keyUsage=critical,digitalSignature', 'extendedKeyUsage=serverAuth', ''].join('\n'),
  );
  await openssl(['req', '-new', ...EC, '-subj', `/CN=${opts.commonName}`, '-keyout', keyPath, '-out', csrPath]);
  await openssl([
    'x509', '-req', '-in', csrPath, '-CA', ca.certPath, '-CAkey', ca.keyPath, '-set_serial', `0x${opts.serialHex}`,
    '-days', '2', '-extfile', extPath, '-out', certPath,
  ]);
  return { certPath, keyPath, serialNumber: opts.serialHex.toUpperCase(), commonName: opts.commonName };
}

/**
 * A self-signed server certificate (no CA behind it) for the given IP addresses, as a test
 * registry started with `openssl req -x509` has: nothing can verify it, `insecure` skips the check.
 */
export async function selfSignedServerCert(opts: { dir: string; name: string; commonName: string; ips?: string[] }): Promise<{ certPath: string; keyPath: string }> {
  const keyPath = join(opts.dir, `${opts.name}.key`);
  const certPath = join(opts.dir, `${opts.name}.crt`);
  const san = (opts.ips ?? ['127.0.0.1']).map((ip) => `IP:${ip}`).join(',');
  await openssl([
    'req', '-x509', ...EC, '-days', '2', '-subj', `/CN=${opts.commonName}`, '-keyout', keyPath, '-out', certPath,
    '-addext', `subjectAltName=${san}`, '-addext', 'extendedKeyUsage=serverAuth',
  ]);
  return { certPath, keyPath };
}
