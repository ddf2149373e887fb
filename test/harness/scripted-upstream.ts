// A fake Upstream for in-process tests of the registry services, scripted per
// test: what it holds (manifests by tag and digest, blobs), and, per call, what
// it does instead (a body the test feeds chunk by chunk, a status error, a hang
// until the caller's deadline). Its failures are the RegistryErrors
// UpstreamClient would throw (src/upstream/errors.ts), and it keeps its health
// as UpstreamClient does, so the services cannot tell it from the real one.
import { Readable } from 'node:stream';
import { RegistryError } from '../../src/errors.ts';
import { digestOf, type Digest } from '../../src/oci/digest.ts';
import { MediaType } from '../../src/oci/media-types.ts';
import { isUpstreamOutage, isUpstreamWideFailure, upstreamStatusError, upstreamTransportError } from '../../src/upstream/errors.ts';
import { UpstreamHealth } from '../../src/upstream/health.ts';
import type { BlobResponse, FetchedManifest, ManifestHead, PassThroughResponse, Upstream } from '../../src/upstream/upstream.ts';

/** How long `hang` waits for the caller's deadline before it gives up. */
const HANG_LIMIT_MS = 5_000;

export type Method = 'getManifest' | 'headManifest' | 'getBlob' | 'headBlob' | 'listTags' | 'referrers';

export interface Call {
  method: Method;
  repository: string;
  /** Tag or digest (the query for listTags). */
  reference: string;
  signal: AbortSignal | undefined;
}

/** What a method returns, by method. */
interface Results {
  getManifest: FetchedManifest;
  headManifest: ManifestHead;
  getBlob: BlobResponse;
  headBlob: { size: number | undefined };
  listTags: PassThroughResponse;
  referrers: PassThroughResponse | undefined;
}

/** Replaces one call's behaviour; throw to fail it. */
export type Script<M extends Method> = (call: Call) => Results[M] | Promise<Results[M]>;

/**
 * A blob body the test drives: `send` chunks when it likes, then `finish`
 * (end), `fail` (a reset mid-body) or nothing (a stall). `destroyed` says
 * whether archway let go of it (consumed to the end, or cut).
 */
export class ControlledBody extends Readable {
  /**
   * Stands for the connection, which keeps a process alive while a body is
   * open (archway's own body deadline is an unref'd timer); a body nobody
   * finishes or lets go of fails after HANG_LIMIT_MS instead of hanging the test.
   */
  private readonly socket = setTimeout(() => this.destroy(new Error(`scripted body left open for ${HANG_LIMIT_MS} ms`)), HANG_LIMIT_MS);

  constructor() {
    super({ highWaterMark: 64 * 1024 });
  }

  override _read(): void {
    // Bytes come only when the test sends them.
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    clearTimeout(this.socket);
    cb(err);
  }

  send(chunk: Buffer | string): this {
    this.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
    return this;
  }

  finish(): void {
    clearTimeout(this.socket);
    this.push(null);
  }

  fail(err: Error = Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' })): void {
    this.destroy(err);
  }
}

/** A manifest as an upstream answers it (bytes, media type, their digest). */
export function fetchedManifest(doc: unknown, mediaType: string = MediaType.OciManifest): FetchedManifest {
  const bytes = Buffer.from(JSON.stringify(doc));
  return { bytes, mediaType, digest: digestOf(bytes) };
}

/** An image manifest naming `layers` (digest and size each), with a config blob that need not exist. */
export function imageManifest(layers: Array<{ digest: Digest; size: number }>, note = 'config'): FetchedManifest {
  const config = Buffer.from(note);
  return fetchedManifest({
    schemaVersion: 2,
    mediaType: MediaType.OciManifest,
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: digestOf(config), size: config.length },
    layers: layers.map((l) => ({ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', ...l })),
  });
}

export interface ScriptedUpstreamOptions {
  name?: string;
  isolated?: boolean;
}

export class ScriptedUpstream implements Upstream {
  readonly name: string;
  readonly isolated: boolean;
  readonly health = new UpstreamHealth();
  /** Every call, in order. */
  readonly calls: Call[] = [];
  private readonly manifests = new Map<string, FetchedManifest>();
  private readonly blobs = new Map<Digest, Buffer>();
  private readonly once: { [M in Method]: Array<Script<M>> } = { getManifest: [], headManifest: [], getBlob: [], headBlob: [], listTags: [], referrers: [] };
  private readonly always: { [M in Method]?: Script<M> } = {};

  constructor(opts: ScriptedUpstreamOptions = {}) {
    this.name = opts.name ?? 'scripted.example';
    this.isolated = opts.isolated ?? false;
  }

  /** Serve `manifest` for `tag` (and by its digest) in `repository`; replaces what the tag had. */
  tag(repository: string, tag: string, manifest: FetchedManifest): FetchedManifest {
    this.manifests.set(`${repository}\n${tag}`, manifest);
    this.manifests.set(`${repository}\n${manifest.digest}`, manifest);
    return manifest;
  }

  /** Hold `bytes` as a blob (any repository); returns its digest. */
  blob(bytes: Buffer): Digest {
    const digest = digestOf(bytes);
    this.blobs.set(digest, bytes);
    return digest;
  }

  /** The next call of `method` runs `script` instead (queued: one script per call). */
  next<M extends Method>(method: M, script: Script<M>): this {
    this.once[method].push(script);
    return this;
  }

  /** Every call of `method` runs `script` from now on (until `restore`). */
  whenever<M extends Method>(method: M, script: Script<M>): this {
    (this.always as Record<M, Script<M>>)[method] = script;
    return this;
  }

  restore(method: Method): this {
    delete this.always[method];
    return this;
  }

  /** How many calls of `method` there were (for one reference, if given). */
  count(method: Method, reference?: string): number {
    return this.calls.filter((c) => c.method === method && (reference === undefined || c.reference === reference)).length;
  }

  /** An error status, as UpstreamClient maps it (503 → UNAVAILABLE 502, 404 → *_UNKNOWN). */
  status(method: Method, status: number): RegistryError {
    const kind = method === 'listTags' ? 'tags' : method === 'referrers' ? 'referrers' : method.endsWith('Blob') ? 'blob' : 'manifest';
    return upstreamStatusError(this.name, kind, status, {});
  }

  /** A script that answers nothing until the caller's signal aborts, then fails as a timed-out request does. */
  hang<M extends Method>(): Script<M> {
    return (call) =>
      new Promise<never>((_resolve, reject) => {
        // A real request's socket keeps the process alive (AbortSignal.timeout's timer does not),
        // and a caller that set no deadline fails the test here instead of hanging it.
        const socket = setTimeout(() => reject(new Error(`scripted ${call.method} hung ${HANG_LIMIT_MS} ms: the caller set no deadline`)), HANG_LIMIT_MS);
        const fail = () => {
          clearTimeout(socket);
          reject(upstreamTransportError(this.name, call.signal?.reason));
        };
        if (call.signal?.aborted) return fail();
        call.signal?.addEventListener('abort', fail, { once: true });
      });
  }

  getManifest(repository: string, reference: string, signal?: AbortSignal): Promise<FetchedManifest> {
    return this.run('getManifest', repository, reference, signal, () => {
      const found = this.manifests.get(`${repository}\n${reference}`);
      if (!found) throw this.status('getManifest', 404);
      return found;
    });
  }

  headManifest(repository: string, reference: string, signal?: AbortSignal): Promise<ManifestHead> {
    return this.run('headManifest', repository, reference, signal, () => {
      const found = this.manifests.get(`${repository}\n${reference}`);
      if (!found) throw this.status('headManifest', 404);
      return { digest: found.digest, mediaType: found.mediaType, size: found.bytes.length };
    });
  }

  async getBlob(repository: string, digest: Digest, signal?: AbortSignal): Promise<BlobResponse> {
    const res = await this.run('getBlob', repository, digest, signal, () => {
      const bytes = this.blobs.get(digest);
      if (!bytes) throw this.status('getBlob', 404);
      return { size: bytes.length, body: Readable.from([bytes]) };
    });
    // As undici does: an aborted request destroys its body, so a reader of it wakes with the reason.
    if (signal) {
      const cut = () => res.body.destroy(signal.reason as Error);
      if (signal.aborted) cut();
      else signal.addEventListener('abort', cut, { once: true });
    }
    return res;
  }

  headBlob(repository: string, digest: Digest, signal?: AbortSignal): Promise<{ size: number | undefined }> {
    return this.run('headBlob', repository, digest, signal, () => {
      const bytes = this.blobs.get(digest);
      if (!bytes) throw this.status('headBlob', 404);
      return { size: bytes.length };
    });
  }

  listTags(repository: string, query: string): Promise<PassThroughResponse> {
    return this.run('listTags', repository, query, undefined, () => {
      const tags = [...this.manifests.keys()].filter((k) => k.startsWith(`${repository}\n`) && !k.includes(':')).map((k) => k.slice(repository.length + 1));
      return { status: 200, body: Buffer.from(JSON.stringify({ name: repository, tags })), headers: { 'content-type': 'application/json' } };
    });
  }

  referrers(repository: string, digest: Digest): Promise<PassThroughResponse | undefined> {
    return this.run('referrers', repository, digest, undefined, () => undefined);
  }

  private async run<M extends Method>(method: M, repository: string, reference: string, signal: AbortSignal | undefined, held: () => Results[M]): Promise<Results[M]> {
    const call: Call = { method, repository, reference, signal };
    this.calls.push(call);
    const script = this.once[method].shift() ?? this.always[method];
    try {
      const result = script ? await script(call) : held();
      this.health.succeeded();
      return result;
    } catch (err) {
      // As UpstreamClient keeps its health: only upstream-wide trouble marks it down; an answer (404) is health.
      const mapped = upstreamTransportError(this.name, err);
      if (isUpstreamWideFailure(mapped)) this.health.failed(mapped.message);
      else if (!isUpstreamOutage(mapped)) this.health.succeeded();
      throw mapped;
    }
  }
}
