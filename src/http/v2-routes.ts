import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { RegistryError } from '../errors.ts';
import { acceptedMediaTypes } from '../oci/media-types.ts';
import { parseRepositoryPath } from '../oci/reference.ts';
import { tagPageRequest, type TagPage, type TagPageRequest } from '../oci/tag-list.ts';
import type { BlobService } from '../registry/blob-service.ts';
import { isDirectBody } from '../store/blob-store.ts';
import type { ManifestService, ManifestSource } from '../registry/manifest-service.ts';
import type { VirtualImageService } from '../virtual/virtual-image-service.ts';
import type { VirtualCatalog } from '../virtual/virtual-catalog.ts';
import type { LocalCatalog, LocalRepository } from '../local/local-catalog.ts';
import type { LocalImageService } from '../local/local-image-service.ts';
import { formatPlatform } from '../platform/platform.ts';
import type { ClientFacts, PlatformPolicy } from '../platform/policy.ts';
import type { Route, Router } from '../routing/router.ts';
import type { AccelRedirect } from './accel-redirect.ts';
import { checkGrants } from './grants.ts';
import { firstHeader } from '../util/headers.ts';
import { nextPageLink, rewriteLink } from './link.ts';
import { parseRange } from './range.ts';
import { sendDirect } from './send-direct.ts';
import { localWrite } from './local-writes.ts';
import { bodyDrained, WRITE_DRAIN_MS } from './request-body.ts';
import { parseV2Path, type V2Endpoint } from './v2-path.ts';

export interface V2Services {
  router: Router;
  manifests: ManifestService;
  blobs: BlobService;
  platforms: PlatformPolicy;
  virtualCatalog: VirtualCatalog;
  virtualImages: VirtualImageService;
  localCatalog: LocalCatalog;
  localImages: LocalImageService;
  config: { local: { maxManifestSize: number } };
  /** server.accelRedirect: the nginx in front sends verified cached blobs itself. */
  accel?: AccelRedirect | undefined;
}

/** On every /v2 answer: docker checks it on the 401 of `GET /v2/`. Blob answers written directly set it themselves. */
const API_VERSION = ['docker-distribution-api-version', 'registry/2.0'] as const;

const EMPTY_INDEX = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: 'application/vnd.oci.image.index.v1+json', manifests: [] }));

/** The pull side of the OCI distribution API, under /v2; `servicesFor` gives those of the request's configuration generation. */
export function registerV2Routes(app: FastifyInstance, servicesFor: (request: FastifyRequest) => V2Services): void {
  app.addHook('onSend', (request, reply, payload, done) => {
    if (request.url.startsWith('/v2')) reply.header(...API_VERSION);
    done(null, payload);
  });

  const handler = async (request: FastifyRequest, reply: FastifyReply) => {
    const services = servicesFor(request);
    const [path = '', query = ''] = splitUrl(request.url);
    if (request.method !== 'GET' && request.method !== 'HEAD') {
      // Writes go to local repositories (config `local`) only.
      const repository = localWriteRepository(services, path, query);
      if (repository) {
        request.archway.repository = repository.key;
        const target = await writeTarget(request, path);
        request.archway.route = target.endpoint;
        if (target.endpoint === 'manifest' && target.reference.kind === 'tag') request.archway.tag = target.reference.tag;
        return localWrite(request, reply, services, target, repository, new URLSearchParams(query));
      }
      // Let the body (being discarded) arrive first, for a moment, or the client may see a reset instead of the answer.
      await bodyDrained(request.raw, WRITE_DRAIN_MS);
      // archway is a read-only mirror; pushes go to the registry itself.
      throw new RegistryError('UNSUPPORTED', 'archway is a pull-through cache: pushing and deleting are not supported', {
        status: 405,
        detail: { method: request.method },
      });
    }
    const target = parseV2Path(path);
    request.archway.route = target.endpoint;
    // containerd mirrors name the registry they mean in ?ns= on every request; it is echoed back.
    const ns = new URLSearchParams(query).get('ns') ?? undefined;
    if (target.endpoint === 'base') return reply.header('content-type', 'application/json').send({});
    if (target.endpoint === 'upload') throw new RegistryError('BLOB_UPLOAD_UNKNOWN', 'archway has no blob uploads', { detail: { name: target.name } });
    const route = services.router.resolve(target.name, ns);
    // A local repository (config `local`) is answered from what was pushed to it; it wins over a virtual image.
    const local = services.localCatalog.match(route);
    // A virtual image (config `virtual`) is answered from its members' repositories.
    const virtual = local ? undefined : services.virtualCatalog.match(route);
    checkGrants(request.principal, target.name, route, virtual);
    // Echoed only once it names a configured registry (never arbitrary client text in a header).
    if (ns !== undefined) reply.header('oci-namespace', ns);
    request.archway.repository = `${route.upstream.name}/${route.repository}`;
    if (target.endpoint === 'manifest' && target.reference.kind === 'tag') request.archway.tag = target.reference.tag;
    if (local) return localRead(request, reply, services, target, route, local, query, ns);
    switch (target.endpoint) {
      case 'manifest': {
        const source = virtual ? services.virtualImages.source(virtual) : services.manifests.source(route);
        return manifest(request, reply, services, route, source, target.name, target.reference);
      }
      case 'blob':
        return blob(request, reply, services, virtual ? await services.virtualImages.blobRoute(virtual, target.digest) : route, target.digest);
      case 'tags':
        if (virtual) return ownTags(reply, (page) => services.virtualImages.tags(virtual, page), target.name, new URLSearchParams(query), ns);
        return tags(reply, route, target.name, upstreamQuery(query), ns);
      case 'referrers':
        // Nothing refers to an index archway made; members' referrers live under their own names.
        if (virtual) return reply.header('content-type', 'application/vnd.oci.image.index.v1+json').send(EMPTY_INDEX);
        return referrers(reply, route, target.digest, upstreamQuery(query));
    }
  };

  app.route({ method: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'], url: '/v2', handler });
  app.route({ method: ['GET', 'HEAD', 'POST', 'PUT', 'PATCH', 'DELETE'], url: '/v2/*', handler });
}

/** Pulls from a local repository: tags and manifests from the local store, blobs from where they were mounted from. */
async function localRead(
  request: FastifyRequest,
  reply: FastifyReply,
  services: V2Services,
  target: Exclude<V2Endpoint, { endpoint: 'base' | 'upload' }>,
  route: Route,
  local: LocalRepository,
  query: string,
  ns: string | undefined,
) {
  switch (target.endpoint) {
    case 'manifest':
      return manifest(request, reply, services, route, services.localImages.source(local), target.name, target.reference);
    case 'blob':
      return blob(request, reply, services, await services.localImages.blobRoute(local, target.digest, services.router), target.digest);
    case 'tags':
      return ownTags(reply, (page) => services.localImages.tags(local, page), target.name, new URLSearchParams(query), ns);
    case 'referrers':
      return reply.header('content-type', 'application/vnd.oci.image.index.v1+json').send(EMPTY_INDEX);
  }
}

/** The name of a /v2 path that names a repository (the greedy match takes up to the last endpoint segment, as parseV2Path does). */
const NAMED_PATH = /^\/v2\/(.+)\/(?:manifests|blobs|tags|referrers)\//;

/**
 * The local repository a write names, or undefined for anything else (a name
 * that does not parse or route included), which stays refused with 405
 * exactly as before local repositories existed. Only the name decides: a bad
 * digest or tag in a write to a local repository is that repository's error.
 */
function localWriteRepository(services: V2Services, path: string, query: string): LocalRepository | undefined {
  if (services.localCatalog.size === 0) return undefined;
  const name = NAMED_PATH.exec(path)?.[1];
  if (name === undefined) return undefined;
  try {
    return services.localCatalog.match(services.router.resolve(parseRepositoryPath(name), new URLSearchParams(query).get('ns') ?? undefined));
  } catch {
    return undefined;
  }
}

/** The write's target; when it does not parse, the error once the body has been let through. */
async function writeTarget(request: FastifyRequest, path: string): Promise<Exclude<V2Endpoint, { endpoint: 'base' }>> {
  try {
    const target = parseV2Path(path);
    if (target.endpoint !== 'base') return target;
  } catch (err) {
    await bodyDrained(request.raw, WRITE_DRAIN_MS);
    throw err;
  }
  // NAMED_PATH never matches the base endpoint; were it to, the write is what it always was.
  throw new RegistryError('UNSUPPORTED', undefined, { status: 405 });
}

async function manifest(
  request: FastifyRequest,
  reply: FastifyReply,
  services: V2Services,
  route: Route,
  source: ManifestSource,
  name: string,
  reference: Parameters<ManifestService['get']>[1],
) {
  const started = performance.now();
  const decision = services.platforms.decide(clientFacts(request, name, route));
  const { manifest, outcome, rewrite } = await services.manifests.get(source, reference, acceptedMediaTypes(request.headers.accept), decision);
  noteOutcome(request, outcome, started);
  if (rewrite) {
    request.archway.platform = `${rewrite.mode}:${formatPlatform(rewrite.platform)}`;
    reply.header('x-archway-platform', formatPlatform(rewrite.platform)).header('x-archway-source-digest', rewrite.sourceDigest);
  }
  const etag = `"${manifest.digest}"`;
  reply
    .header('content-type', manifest.mediaType)
    .header('docker-content-digest', manifest.digest)
    .header('etag', etag)
    .header('content-length', manifest.bytes.length);
  if (matchesEtag(request.headers['if-none-match'], etag)) {
    return reply.code(304).removeHeader('content-length').send();
  }
  request.archway.bodyBytes = manifest.bytes.length;
  return reply.send(request.method === 'HEAD' ? undefined : manifest.bytes);
}

async function blob(request: FastifyRequest, reply: FastifyReply, services: V2Services, route: Route, digest: Parameters<BlobService['get']>[1]) {
  const started = performance.now();
  if (request.method === 'HEAD') {
    const { size, outcome } = await services.blobs.head(route, digest);
    noteOutcome(request, outcome, started);
    blobHeaders(reply, digest);
    if (size !== undefined) reply.header('content-length', size);
    return reply.send();
  }
  const rangeHeader = request.headers.range;
  if (services.accel?.applies(request)) {
    const file = await services.blobs.verifiedFile(route, digest, (size) => parseRange(rangeHeader, size));
    if (file) {
      noteOutcome(request, 'hit', started);
      return services.accel.send(reply, digest, file);
    }
  }
  const answer = await services.blobs.get(route, digest, (size) => parseRange(rangeHeader, size));
  noteOutcome(request, answer.outcome, started);
  if (answer.kind === 'unsatisfiable') {
    reply.header('content-range', `bytes */${answer.size}`);
    throw new RegistryError('RANGE_INVALID', undefined, { detail: { range: rangeHeader, size: answer.size } });
  }
  if (answer.kind === 'redirect') {
    // As distribution does with storage redirects: the bytes come from the object store, not this replica.
    return reply.code(307).header('location', answer.url).header('docker-content-digest', digest).send();
  }
  const { size, range, stream } = answer;
  blobHeaders(reply, digest);
  // Relayed from the upstream and not kept (larger than the cache may hold, no room): the next pull fetches it again.
  if (answer.uncached) reply.header('x-archway-uncached', answer.uncached);
  if (size !== undefined) request.archway.bodyBytes = range ? range.end - range.start + 1 : size;
  if (range && size !== undefined) {
    reply.code(206).header('content-range', `bytes ${range.start}-${range.end}/${size}`).header('content-length', range.end - range.start + 1);
  } else if (size !== undefined) {
    reply.header('content-length', size);
  }
  // A client that hangs up must release the reader (and its pin or fill hold).
  reply.raw.once('close', () => stream.destroy());
  if (isDirectBody(stream)) return sendDirect(reply.header(...API_VERSION), stream);
  return reply.send(stream);
}

/** Headers of a blob answer; only on success, never on an error about the blob. */
function blobHeaders(reply: FastifyReply, digest: string): void {
  reply.header('docker-content-digest', digest).header('content-type', 'application/octet-stream').header('accept-ranges', 'bytes');
}

async function tags(reply: FastifyReply, route: Route, name: string, query: string, ns: string | undefined) {
  reply.request.archway.outcome = 'pass';
  const res = await route.upstream.listTags(route.repository, query);
  const link = res.headers.link;
  if (typeof link === 'string') {
    reply.header('link', rewriteLink(link, route.repository, name, ns));
  }
  // JSON, whatever the upstream called it (UpstreamClient checked it is a JSON object): text/html would be a page on archway's origin.
  return reply.code(res.status).header('content-type', 'application/json').send(withClientName(res.body, route.repository, name));
}

/** A tag list archway makes itself (a virtual image's, a local repository's), paged as the spec says. */
async function ownTags(reply: FastifyReply, list: (request: TagPageRequest) => Promise<TagPage>, name: string, query: URLSearchParams, ns: string | undefined) {
  reply.request.archway.outcome = 'pass';
  const { tags, next } = await list(tagPageRequest(query));
  if (next) reply.header('link', nextPageLink(name, next, ns));
  return reply.header('content-type', 'application/json').send({ name, tags });
}

async function referrers(reply: FastifyReply, route: Route, digest: Parameters<BlobService['get']>[1], query: string) {
  reply.request.archway.outcome = 'pass';
  const res = await route.upstream.referrers(route.repository, digest, query);
  reply.header('content-type', 'application/vnd.oci.image.index.v1+json');
  // The spec forbids 404 here: a registry without referrers answers an empty index.
  if (!res) return reply.send(EMPTY_INDEX);
  const filters = firstHeader(res.headers['oci-filters-applied']);
  if (filters) reply.header('oci-filters-applied', filters);
  return reply.send(res.body);
}

/** The list names the repository as the upstream knows it (`library/alpine`); answer with the client's name. */
function withClientName(body: Buffer, upstreamRepository: string, name: string): Buffer {
  if (upstreamRepository === name) return body;
  try {
    const list = JSON.parse(body.toString('utf8')) as { name?: unknown };
    if (list.name !== upstreamRepository) return body;
    return Buffer.from(JSON.stringify({ ...list, name }));
  } catch {
    return body;
  }
}

/** The names a repository goes by, for patterns: as the client wrote it, at the upstream, and upstream-qualified. */
function repositoryNames(name: string, route: Route): string[] {
  return [name, route.repository, `${route.upstream.name}/${route.repository}`];
}

/** What the platform rules look at. */
function clientFacts(request: FastifyRequest, name: string, route: Route): ClientFacts {
  return {
    port: request.raw.socket.localPort ?? 0,
    host: request.hostname || undefined,
    address: request.ip,
    userAgent: request.headers['user-agent'],
    repositories: repositoryNames(name, route),
  };
}

function noteOutcome(request: FastifyRequest, outcome: FastifyRequest['archway']['outcome'], started: number): void {
  request.archway.outcome = outcome;
  if (outcome !== 'hit') request.archway.upstreamMs = performance.now() - started;
}

function matchesEtag(ifNoneMatch: string | undefined, etag: string): boolean {
  if (!ifNoneMatch) return false;
  return ifNoneMatch.split(',').some((t) => {
    const v = t.trim().replace(/^W\//, '');
    return v === '*' || v === etag || v === etag.slice(1, -1);
  });
}

/** The query to pass upstream: the client's, without archway's own `ns`. */
function upstreamQuery(query: string): string {
  const params = new URLSearchParams(query);
  params.delete('ns');
  const rest = params.toString();
  return rest ? `?${rest}` : '';
}

function splitUrl(url: string): [string, string] {
  const i = url.indexOf('?');
  return i < 0 ? [url, ''] : [url.slice(0, i), url.slice(i)];
}

