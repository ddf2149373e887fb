import type { Readable } from 'node:stream';
import type { Digest } from '../oci/digest.ts';
import type { UpstreamHealth } from './health.ts';

export interface FetchedManifest {
  bytes: Buffer;
  mediaType: string;
  digest: Digest;
}

export interface ManifestHead {
  digest: Digest | undefined;
  mediaType: string;
  size: number | undefined;
}

export interface BlobResponse {
  /** From Content-Length; undefined when the upstream streams chunked. */
  size: number | undefined;
  body: Readable;
}

export interface PassThroughResponse {
  status: number;
  body: Buffer;
  headers: Record<string, string | string[] | undefined>;
}

/**
 * One upstream registry, as the registry services need it: the pull API,
 * with auth, timeouts and error mapping behind it (every failure is a
 * RegistryError naming the upstream by its configured key). UpstreamClient is
 * the implementation over HTTP; tests script their own.
 */
export interface Upstream {
  /** The configured key, e.g. docker.io: the only name of the upstream in errors and logs. */
  readonly name: string;
  /** Content is private per repository (see RepositoryAccess). */
  readonly isolated: boolean;
  readonly health: UpstreamHealth;
  getManifest(repository: string, reference: string, signal?: AbortSignal): Promise<FetchedManifest>;
  headManifest(repository: string, reference: string, signal?: AbortSignal): Promise<ManifestHead>;
  /** The caller owns the body stream and must consume or destroy it. */
  getBlob(repository: string, digest: Digest, signal?: AbortSignal): Promise<BlobResponse>;
  headBlob(repository: string, digest: Digest, signal?: AbortSignal): Promise<{ size: number | undefined }>;
  /** GET /v2/<name>/tags/list with the client's query (n, last). */
  listTags(repository: string, query: string): Promise<PassThroughResponse>;
  /** GET /v2/<name>/referrers/<digest>; undefined when the upstream has no referrers API (404). */
  referrers(repository: string, digest: Digest, query: string): Promise<PassThroughResponse | undefined>;
}
