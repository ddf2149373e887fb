// A real Bearer token issuer for distribution's `auth: token`, behaving like
// Docker Hub's auth.docker.io: GET /token?service=..&scope=.. with optional
// Basic credentials, answering an ES256 JWT that the registry verifies
// against our self-signed certificate (x5c header + rootcertbundle).
import { X509Certificate, createPrivateKey, randomUUID, sign } from 'node:crypto';
import type { KeyObject } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { markOwned, sweepOrphans } from './host-cleanup.ts';
import { ensureCommands } from './packages.ts';
import { run } from './process.ts';
import { removeDir, tempDir } from './tmp.ts';

/** What startRegistry needs to trust this issuer. */
export interface TokenAuthConfig {
  realm: string;
  service: string;
  issuer: string;
  rootCertBundlePath: string;
}

export interface TokenIssuerOptions {
  /** user -> password for Basic credentials. */
  users?: Record<string, string>;
  /** Grant pull to requests without credentials (default false: empty access). */
  anonymousPull?: boolean;
  /** Token lifetime in seconds (default 300). Note distribution accepts tokens up to 60 s past exp. */
  expiresIn?: number;
  /** Service name the registry expects as audience (default archway-test-registry). */
  service?: string;
}

export interface Access {
  type: string;
  name: string;
  actions: string[];
}

export interface TokenRequestRecord {
  method: string;
  /** Requested scopes joined by spaces, or null if none. */
  scope: string | null;
  service: string | null;
  /** Authenticated user, null for anonymous or rejected requests. */
  user: string | null;
  /** Whether the request carried credentials (header or POST form). */
  hadAuthorization: boolean;
  status: number;
  granted: Access[];
}

export interface TokenIssuer {
  /** http://127.0.0.1:PORT (the realm is `${url}/token`). */
  url: string;
  authConfig: TokenAuthConfig;
  tokenRequests(): TokenRequestRecord[];
  clearTokenRequests(): void;
  /** Signs an arbitrary token (e.g. already expired: expiresIn -120). */
  mintToken(access: Access[], opts?: { subject?: string; expiresIn?: number; service?: string }): string;
  stop(): Promise<void>;
}

const ISSUER = 'archway-test-issuer';

function b64url(value: unknown): string {
  return Buffer.from(JSON.stringify(value)).toString('base64url');
}

/** "repository:library/foo:pull,push" (names never contain ':' except the type prefix). */
function parseScope(scope: string): Access | undefined {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first === -1 || last === first) return undefined;
  return {
    type: scope.slice(0, first),
    name: scope.slice(first + 1, last),
    actions: scope.slice(last + 1).split(',').filter(Boolean),
  };
}

function sendJson(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  const bytes = Buffer.from(JSON.stringify(body));
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': bytes.length, ...headers });
  res.end(bytes);
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function signJwt(key: KeyObject, certDer: Buffer, claims: unknown): string {
  const input = `${b64url({ alg: 'ES256', typ: 'JWT', x5c: [certDer.toString('base64')] })}.${b64url(claims)}`;
  // JWS wants raw r||s, not the DER signature Node produces by default.
  const signature = sign('sha256', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
  return `${input}.${signature.toString('base64url')}`;
}

export async function startTokenIssuer(opts: TokenIssuerOptions = {}): Promise<TokenIssuer> {
  await ensureCommands([{ command: 'openssl', debianPackage: 'openssl' }]);
  await sweepOrphans(tmpdir(), ['archway-token-']);
  const dir = await tempDir('archway-token-');
  await markOwned(dir);
  const keyPath = join(dir, 'key.pem');
  const certPath = join(dir, 'cert.pem');
  try {
    await run('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '2',
      '-subj', `/CN=${ISSUER}`, '-keyout', keyPath, '-out', certPath,
    ]);
  } catch (err) {
    await removeDir(dir);
    throw err;
  }
  const key = createPrivateKey(await readFile(keyPath));
  const certDer = new X509Certificate(await readFile(certPath)).raw;
  const service = opts.service ?? 'archway-test-registry';
  const expiresIn = opts.expiresIn ?? 300;
  const users = opts.users ?? {};
  let records: TokenRequestRecord[] = [];

  const mintToken: TokenIssuer['mintToken'] = (access, mint = {}) => {
    const now = Math.floor(Date.now() / 1000);
    return signJwt(key, certDer, {
      iss: ISSUER,
      sub: mint.subject ?? '',
      aud: mint.service ?? service,
      exp: now + (mint.expiresIn ?? expiresIn),
      nbf: now,
      iat: now,
      jti: randomUUID(),
      access,
    });
  };

  const grant = (scopes: string[], user: string | null): Access[] => {
    const allowed = user !== null ? ['pull', 'push'] : opts.anonymousPull ? ['pull'] : [];
    const granted: Access[] = [];
    for (const scope of scopes) {
      const access = parseScope(scope);
      if (access?.type !== 'repository') continue;
      granted.push({ ...access, actions: access.actions.filter((a) => allowed.includes(a)) });
    }
    return granted;
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://issuer');
    if (url.pathname !== '/token') return sendJson(res, 404, { details: 'not found' });

    // GET (Docker Hub style, Basic auth) or POST (OAuth2 password grant, used by containerd).
    let params = url.searchParams;
    let creds: { user: string; password: string } | undefined;
    let hadAuthorization = false;
    if (req.method === 'POST') {
      params = new URLSearchParams(await readBody(req));
      if (params.get('grant_type') !== 'password') {
        return sendJson(res, 400, { error: 'unsupported_grant_type' });
      }
      hadAuthorization = true;
      creds = { user: params.get('username') ?? '', password: params.get('password') ?? '' };
    } else if (req.method === 'GET') {
      const header = req.headers.authorization;
      if (header !== undefined) {
        hadAuthorization = true;
        const match = /^Basic\s+(\S+)$/i.exec(header);
        const decoded = match?.[1] ? Buffer.from(match[1], 'base64').toString('utf8') : '';
        const colon = decoded.indexOf(':');
        // Malformed credentials count as wrong ones (empty user never matches).
        creds =
          colon === -1 ? { user: '', password: '' } : { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
      }
    } else {
      return sendJson(res, 405, { details: 'method not allowed' });
    }

    const requestedService = params.get('service');
    const scopes = params.getAll('scope').flatMap((s) => s.split(' ')).filter(Boolean);
    const record: TokenRequestRecord = {
      method: req.method ?? 'GET',
      scope: scopes.length > 0 ? scopes.join(' ') : null,
      service: requestedService,
      user: null,
      hadAuthorization,
      status: 200,
      granted: [],
    };
    records.push(record);

    if (creds !== undefined && (creds.user === '' || users[creds.user] !== creds.password)) {
      record.status = 401;
      return sendJson(res, 401, { details: 'incorrect username or password' }, {
        'www-authenticate': `Basic realm="${ISSUER}"`,
      });
    }
    const user = creds?.user ?? null;
    record.user = user;
    record.granted = grant(scopes, user);
    const token = mintToken(record.granted, { subject: user ?? '', service: requestedService ?? service });
    const issuedAt = new Date().toISOString();
    if (req.method === 'POST') {
      return sendJson(res, 200, { access_token: token, expires_in: expiresIn, issued_at: issuedAt, scope: scopes.join(' ') });
    }
    sendJson(res, 200, { token, access_token: token, expires_in: expiresIn, issued_at: issuedAt });
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) sendJson(res, 500, { details: String(err) });
      else res.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    // Port 0 on loopback: the kernel picks a free port, no race.
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://127.0.0.1:${port}`;

  return {
    url,
    authConfig: { realm: `${url}/token`, service, issuer: ISSUER, rootCertBundlePath: certPath },
    tokenRequests: () => records.map((r) => ({ ...r })),
    clearTokenRequests: () => {
      records = [];
    },
    mintToken,
    stop: async () => {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await removeDir(dir);
    },
  };
}
