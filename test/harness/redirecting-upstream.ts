// A hostile upstream for request-forgery tests, and the listeners it points
// at. The upstream (on 127.0.0.1) answers manifest and blob GETs with a 307
// to another loopback address (127.0.0.2 standing in for a metadata service
// or an internal host), and can demand Bearer tokens from a realm on another
// host. The targets count every TCP connection they accept, so a test can
// assert that a refused address was never connected to. What a real
// registry cannot do: redirect manifests, name arbitrary realms.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { sha256Digest } from './digest.ts';

export interface SeenRequest {
  method: string;
  path: string;
  authorization: string | undefined;
}

export interface CountingListener {
  /** http://HOST:PORT */
  url: string;
  host: string;
  port: number;
  /** TCP connections accepted since start. */
  connections(): number;
  requests(): SeenRequest[];
  stop(): Promise<void>;
}

type Handler = (req: IncomingMessage, res: ServerResponse) => void;

async function listen(server: Server, host: string, port: number): Promise<number> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return (server.address() as AddressInfo).port;
}

async function close(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}

/** A listener on `host` (e.g. 127.0.0.2) that counts connections and records requests before `handler` answers. */
export async function startCountingListener(host: string, handler: Handler, port = 0): Promise<CountingListener> {
  let connections = 0;
  const seen: SeenRequest[] = [];
  const server = createServer((req, res) => {
    seen.push({ method: req.method ?? '', path: req.url ?? '', authorization: req.headers.authorization });
    handler(req, res);
  });
  server.on('connection', () => connections++);
  const bound = await listen(server, host, port);
  return {
    url: `http://${host}:${bound}`,
    host,
    port: bound,
    connections: () => connections,
    requests: () => [...seen],
    stop: () => close(server),
  };
}

/** One small image: a manifest, its config and one layer, with their digests. */
export interface TinyImage {
  manifest: Buffer;
  manifestDigest: string;
  mediaType: string;
  layer: Buffer;
  layerDigest: string;
  config: Buffer;
  configDigest: string;
}

export function tinyImage(seed: string): TinyImage {
  const layer = Buffer.from(`layer bytes of ${seed}\n`.repeat(512));
  const config = Buffer.from(JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [sha256Digest(layer)] } }));
  const mediaType = 'application/vnd.oci.image.manifest.v1+json';
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: sha256Digest(config), size: config.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: sha256Digest(layer), size: layer.length }],
    }),
  );
  return { manifest, manifestDigest: sha256Digest(manifest), mediaType, layer, layerDigest: sha256Digest(layer), config, configDigest: sha256Digest(config) };
}

/**
 * Serves `image` under /manifests/<anything> and /blobs/<digest> (the paths
 * the hostile upstream redirects to): what a redirect target that archway is
 * allowed to reach answers.
 */
export function contentHandler(image: TinyImage): Handler {
  return (req, res) => {
    const path = (req.url ?? '').split('?')[0] ?? '';
    if (path.startsWith('/manifests/')) {
      res.writeHead(200, { 'content-type': image.mediaType, 'docker-content-digest': image.manifestDigest, 'content-length': image.manifest.length });
      res.end(req.method === 'HEAD' ? undefined : image.manifest);
      return;
    }
    const blob = path === `/blobs/${image.layerDigest}` ? image.layer : path === `/blobs/${image.configDigest}` ? image.config : undefined;
    if (blob) {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': blob.length });
      res.end(req.method === 'HEAD' ? undefined : blob);
      return;
    }
    res.writeHead(404).end();
  };
}

/** A token service that hands every caller the same token. */
export function tokenHandler(token: string): Handler {
  return (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ token, expires_in: 300 }));
  };
}

export interface RedirectingUpstreamOptions {
  /** Base URL manifest and blob GETs are redirected to; absent: served directly from `image`. */
  redirectTo?: string;
  /** Appended to blob redirects, like a CDN's presigned query: must never appear in archway's logs or answers. */
  redirectQuery?: string;
  /** Demand `Bearer <token>` on every /v2 request, naming this realm in the challenge. */
  bearer?: { realm: string; token: string };
  image: TinyImage;
}

export interface RedirectingUpstream {
  /** http://127.0.0.1:PORT */
  url: string;
  requests(): SeenRequest[];
  stop(): Promise<void>;
}

const MANIFEST = /^\/v2\/(.+)\/manifests\/([^/]+)$/;
const BLOB = /^\/v2\/(.+)\/blobs\/(sha256:[a-f0-9]{64})$/;

export async function startRedirectingUpstream(opts: RedirectingUpstreamOptions): Promise<RedirectingUpstream> {
  const serve = contentHandler(opts.image);
  const seen: SeenRequest[] = [];
  const server = createServer((req, res) => {
    const path = (req.url ?? '').split('?')[0] ?? '';
    seen.push({ method: req.method ?? '', path, authorization: req.headers.authorization });
    if (opts.bearer && req.headers.authorization !== `Bearer ${opts.bearer.token}`) {
      res.writeHead(401, {
        'content-type': 'application/json',
        'www-authenticate': `Bearer realm="${opts.bearer.realm}",service="hostile"`,
      });
      res.end(JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'token required' }] }));
      return;
    }
    if (path === '/v2/' || path === '/v2') {
      res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
      return;
    }
    const manifest = MANIFEST.exec(path);
    const blob = BLOB.exec(path);
    if (!manifest && !blob) {
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ errors: [{ code: 'NAME_UNKNOWN', message: 'no' }] }));
      return;
    }
    if (opts.redirectTo === undefined) {
      req.url = manifest ? `/manifests/${manifest[2]}` : `/blobs/${blob?.[2]}`;
      serve(req, res);
      return;
    }
    const location = manifest ? `${opts.redirectTo}/manifests/${manifest[2]}` : `${opts.redirectTo}/blobs/${blob?.[2]}${opts.redirectQuery ?? ''}`;
    res.writeHead(307, { location }).end();
  });
  const port = await listen(server, '127.0.0.1', 0);
  return { url: `http://127.0.0.1:${port}`, requests: () => [...seen], stop: () => close(server) };
}
