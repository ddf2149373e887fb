import type { FastifyReply, FastifyRequest } from 'fastify';
import { RegistryError } from '../errors.ts';
import { parseDigest, type Digest } from '../oci/digest.ts';
import { parseRepositoryPath } from '../oci/reference.ts';
import { LocalCatalog, type LocalRepository } from '../local/local-catalog.ts';
import type { LocalImageService } from '../local/local-image-service.ts';
import type { Router } from '../routing/router.ts';
import type { VirtualCatalog } from '../virtual/virtual-catalog.ts';
import type { VirtualImageService } from '../virtual/virtual-image-service.ts';
import { checkGrants } from './grants.ts';
import { bodyDrained, readBounded, WRITE_DRAIN_MS } from './request-body.ts';
import type { V2Endpoint } from './v2-path.ts';

export interface LocalWriteServices {
  router: Router;
  localCatalog: LocalCatalog;
  localImages: LocalImageService;
  virtualCatalog: VirtualCatalog;
  virtualImages: VirtualImageService;
  config: { local: { maxManifestSize: number } };
}

/**
 * The writes a local repository takes, and nothing more: what `docker manifest
 * push` (and comparable tools) send. Blobs enter only by a cross-repository
 * mount (`POST …/blobs/uploads/?mount=<digest>&from=<repository>` → 201);
 * archway never offers an upload session (202), so a plain upload, a PATCH or
 * a PUT of blob bytes is refused and nothing is stored. Manifests are PUT by
 * digest (members) or tag (the index); a DELETE removes a tag or a manifest.
 */
export async function localWrite(request: FastifyRequest, reply: FastifyReply, s: LocalWriteServices, target: V2Endpoint & { name: string }, repository: LocalRepository, query: URLSearchParams) {
  if (!LocalCatalog.mayPush(request.principal, repository)) {
    await bodyDrained(request.raw, WRITE_DRAIN_MS);
    throw new RegistryError('DENIED', `not allowed to push to ${target.name}`, { detail: { name: target.name } });
  }
  const method = request.method;
  if (target.endpoint === 'upload' && method === 'POST') {
    await bodyDrained(request.raw, WRITE_DRAIN_MS);
    const digest = await mount(request, s, repository, query);
    return reply.code(201).header('location', `/v2/${target.name}/blobs/${digest}`).header('docker-content-digest', digest).header('content-length', 0).send();
  }
  if (target.endpoint === 'upload') {
    await bodyDrained(request.raw, WRITE_DRAIN_MS);
    // No session was ever started: archway answered the POST with a mount or an error.
    throw new RegistryError('BLOB_UPLOAD_UNKNOWN', 'archway takes no blob uploads; mount blobs from a repository it can read', { detail: { method } });
  }
  if (target.endpoint === 'manifest' && method === 'PUT') {
    const body = await readBounded(request.raw, s.config.local.maxManifestSize, request.headers['content-length'], () =>
      new RegistryError('MANIFEST_INVALID', `manifest larger than ${s.config.local.maxManifestSize} bytes (local.maxManifestSize)`, { status: 413, detail: { limit: s.config.local.maxManifestSize } }),
    );
    const digest = await s.localImages.put(repository, target.reference, request.headers['content-type'], body);
    return reply.code(201).header('location', `/v2/${target.name}/manifests/${digest}`).header('docker-content-digest', digest).header('content-length', 0).send();
  }
  await bodyDrained(request.raw, WRITE_DRAIN_MS);
  if (target.endpoint === 'manifest' && method === 'DELETE') {
    await s.localImages.delete(repository, target.reference);
    return reply.code(202).header('content-length', 0).send();
  }
  throw new RegistryError('UNSUPPORTED', `${method} is not supported here: local repositories take mounts, manifests and deletes of manifests and tags`, {
    status: 405,
    detail: { method },
  });
}

/** A mount's source must be readable by this client through archway; the blob is checked there, never downloaded. */
async function mount(request: FastifyRequest, s: LocalWriteServices, repository: LocalRepository, query: URLSearchParams): Promise<Digest> {
  const mountParam = query.get('mount');
  const fromParam = query.get('from');
  if (mountParam === null || fromParam === null) {
    throw new RegistryError('UNSUPPORTED', 'archway takes no blob uploads: mount blobs from a repository it can read (?mount=<digest>&from=<repository>)', {
      status: 405,
    });
  }
  const digest = parseDigest(mountParam);
  const from = parseRepositoryPath(fromParam);
  const route = s.router.resolve(from, query.get('ns') ?? undefined);
  const fromLocal = s.localCatalog.match(route);
  const virtual = fromLocal ? undefined : s.virtualCatalog.match(route);
  checkGrants(request.principal, from, route, virtual);
  try {
    if (fromLocal) await s.localImages.mountLocal(repository, digest, fromLocal);
    else await s.localImages.mount(repository, digest, virtual ? await s.virtualImages.blobRoute(virtual, digest) : route);
  } catch (err) {
    // The upstream's refusal (404, 401, 403) means the client cannot read it there: the blob is unknown to it.
    // Outages stay what they are, so the client can tell "try again" from "not there".
    if (err instanceof RegistryError && err.status >= 400 && err.status < 500) {
      throw new RegistryError('BLOB_UNKNOWN', `cannot mount ${digest}: it is not readable in ${from} through archway`, { detail: { digest, from } });
    }
    throw err;
  }
  return digest;
}
