import type { Logger } from 'pino';
import { RegistryError } from '../errors.ts';
import type { Digest } from '../oci/digest.ts';
import { parsePushedManifest, type PushedManifest } from '../oci/pushed-manifest.ts';
import type { Reference } from '../oci/reference.ts';
import { tagPage, type TagPage, type TagPageRequest } from '../oci/tag-list.ts';
import { formatPlatform } from '../platform/platform.ts';
import type { BlobService } from '../registry/blob-service.ts';
import type { ManifestAnswer, ManifestService, ManifestSource } from '../registry/manifest-service.ts';
import type { Route, Router } from '../routing/router.ts';
import type { BlobOrigin, LocalStore, LocalTag } from '../store/local-store.ts';
import type { ClusterEvents } from '../store/cluster-events.ts';
import type { LocalRepository } from './local-catalog.ts';

/** A local tag was pushed (digest) or deleted (undefined): what a cross-replica event bus would carry. */
/** A change to a local repository: a tag pushed (`digest`) or deleted, or manifests deleted. */
export interface LocalChange {
  repository: string;
  tag?: string;
  /** What the tag names now; undefined: the tag was deleted (or no tag changed). */
  digest: Digest | undefined;
  deletedManifests: Digest[];
}

export interface LocalImageServiceOptions {
  store: LocalStore;
  manifests: ManifestService;
  blobs: BlobService;
  logger: Logger;
  /** local.maxSize: bytes the local store may hold. */
  maxBytes: number;
  now?: () => number;
}

/** What the cache summary and the status page show of one local repository. */
export interface LocalRepositorySummary {
  repository: string;
  manifests: number;
  blobs: number;
  tags: Array<{ tag: string; digest: Digest; platforms: string[]; pushedAt: string }>;
}

/**
 * Local repositories (config `local`): multi-platform tags composed by a push
 * from images archway can already read. archway takes no blob bytes: a blob
 * enters a local repository by a cross-repository mount from a repository the
 * pusher may read, and is then served from the cache or fetched from that
 * origin, like a virtual image's member blobs. Manifests and tags are
 * verified on the way in and kept durably; pulls go through ManifestService
 * like any tag, so the platform rules apply.
 */
export class LocalImageService {
  private readonly listeners = new Set<(change: LocalChange) => void>();
  private readonly now: () => number;

  constructor(private readonly opts: LocalImageServiceOptions) {
    this.now = opts.now ?? Date.now;
  }

  /** Called after each tag push or delete and each manifest delete; returns the unsubscribe. */
  onChange(listener: (change: LocalChange) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  source(repository: LocalRepository): ManifestSource {
    const storeKey = `_local:${repository.key}`;
    return {
      storeKey,
      tag: (tag) => this.byTag(repository, tag),
      digest: async (digest) => {
        const manifest = (await this.opts.store.manifest(repository.key, digest)) ?? (await this.opts.manifests.stored(storeKey, digest));
        if (!manifest) throw new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown to this local repository', { detail: { digest } });
        return { manifest, outcome: 'hit' };
      },
      // Narrowed indexes are kept under storeKey (ManifestService), where `digest` looks second.
      made: async () => {},
    };
  }

  /**
   * Mount `digest` from `from` (a repository the caller checked the client may
   * read): known when it is cached and visible there, or when its upstream
   * answers a HEAD for it there; never downloaded. Then recorded as this
   * repository's, with its origin.
   */
  async mount(repository: LocalRepository, digest: Digest, from: Route): Promise<void> {
    const { size } = await this.opts.blobs.head(from, digest);
    await this.record(repository, digest, { upstream: from.upstream.name, repository: from.repository, size });
  }

  /** Mount from another local repository: the origin recorded there is copied. */
  async mountLocal(repository: LocalRepository, digest: Digest, from: LocalRepository): Promise<void> {
    const origin = await this.opts.store.blob(from.key, digest);
    if (!origin) throw blobUnknown(digest);
    await this.record(repository, digest, origin);
  }

  /** Where a blob of this repository is served from: the repository it was mounted from, routed by the request's configuration. */
  async blobRoute(repository: LocalRepository, digest: Digest, router: Router): Promise<Route> {
    const origin = await this.opts.store.blob(repository.key, digest);
    if (!origin) throw blobUnknown(digest);
    return router.resolve(origin.repository, origin.upstream);
  }

  /**
   * A pushed manifest: verified (type, digest, structure), and everything it
   * refers to present in this repository — an image's config and layers
   * mounted, an index's entries pushed before it. A tag records its entries'
   * platforms. Returns the digest it is stored under.
   */
  async put(repository: LocalRepository, reference: Reference, contentType: string | undefined, bytes: Buffer): Promise<Digest> {
    const pushed = parsePushedManifest(bytes, contentType, reference);
    await this.checkReferences(repository, pushed);
    const manifest = { digest: pushed.digest, mediaType: pushed.mediaType, bytes: pushed.bytes };
    const existing = await this.opts.store.manifest(repository.key, pushed.digest);
    if (!existing) {
      this.ensureRoom(bytes.length);
      await this.opts.store.putManifest(repository.key, manifest);
    }
    if (reference.kind === 'tag') {
      const platforms = pushed.kind === 'index' ? pushed.entries.map((e) => (e.platform ? formatPlatform(e.platform) : 'unknown')) : [];
      const record: LocalTag = { digest: pushed.digest, mediaType: pushed.mediaType, platforms, pushedAt: this.now() };
      if (!(await this.opts.store.tag(repository.key, reference.tag))) this.ensureRoom(512);
      await this.opts.store.setTag(repository.key, reference.tag, record);
      this.opts.logger.info({ repository: repository.key, tag: reference.tag, digest: pushed.digest, platforms }, 'local tag pushed');
      this.changed({ repository: repository.key, tag: reference.tag, digest: pushed.digest, deletedManifests: [] });
    }
    return pushed.digest;
  }

  /** Delete a tag, or a manifest by digest together with the tags that point at it; says what went. */
  async delete(repository: LocalRepository, reference: Reference): Promise<{ tags: string[]; manifests: number }> {
    const { store } = this.opts;
    if (reference.kind === 'tag') {
      if (!(await store.deleteTag(repository.key, reference.tag))) throw manifestUnknown(reference.tag);
      this.changed({ repository: repository.key, tag: reference.tag, digest: undefined, deletedManifests: [] });
      return { tags: [reference.tag], manifests: 0 };
    }
    if (!(await store.deleteManifest(repository.key, reference.digest))) throw manifestUnknown(reference.digest);
    const tags: string[] = [];
    for (const tag of await store.tags(repository.key)) {
      if ((await store.tag(repository.key, tag))?.digest !== reference.digest) continue;
      await store.deleteTag(repository.key, tag);
      tags.push(tag);
      this.changed({ repository: repository.key, tag, digest: undefined, deletedManifests: [] });
    }
    this.changed({ repository: repository.key, digest: undefined, deletedManifests: [reference.digest] });
    return { tags, manifests: 1 };
  }

  async tags(repository: LocalRepository, request: TagPageRequest): Promise<TagPage> {
    const tags = await this.opts.store.tags(repository.key);
    if (tags.length === 0) throw new RegistryError('NAME_UNKNOWN', 'no tag has been pushed to this local repository', { detail: { name: repository.key } });
    return tagPage(tags, request);
  }

  /** Every local repository with its tags and their platforms; the bytes held and the bound. */
  async summary(): Promise<{ bytes: number; maxBytes: number; repositories: LocalRepositorySummary[] }> {
    const { store } = this.opts;
    const repositories: LocalRepositorySummary[] = [];
    for (const key of await store.repositories()) {
      const tags: LocalRepositorySummary['tags'] = [];
      for (const tag of await store.tags(key)) {
        const record = await store.tag(key, tag);
        if (record) tags.push({ tag, digest: record.digest, platforms: record.platforms, pushedAt: new Date(record.pushedAt).toISOString() });
      }
      repositories.push({ repository: key, ...(await store.counts(key)), tags });
    }
    return { bytes: store.usage().bytes, maxBytes: this.opts.maxBytes, repositories };
  }

  private async byTag(repository: LocalRepository, tag: string): Promise<ManifestAnswer> {
    const record = await this.opts.store.tag(repository.key, tag);
    const manifest = record && (await this.opts.store.manifest(repository.key, record.digest));
    if (!manifest) throw manifestUnknown(tag);
    return { manifest, outcome: 'hit' };
  }

  private async checkReferences(repository: LocalRepository, pushed: PushedManifest): Promise<void> {
    const { store } = this.opts;
    if (pushed.kind === 'image') {
      for (const blob of pushed.blobs) {
        const origin = await store.blob(repository.key, blob.digest);
        if (!origin) throw referenceUnknown(blob.digest, 'blob', 'mount it into this repository first');
        if (origin.size !== undefined && origin.size !== blob.size) {
          throw new RegistryError('MANIFEST_INVALID', `blob ${blob.digest} is ${origin.size} bytes, not ${blob.size}`, { detail: { digest: blob.digest } });
        }
      }
      return;
    }
    for (const entry of pushed.entries) {
      const member = await store.manifest(repository.key, entry.digest);
      if (!member) throw referenceUnknown(entry.digest, 'manifest', 'push it to this repository by digest first');
      if (member.bytes.length !== entry.size || member.mediaType !== entry.mediaType) {
        throw new RegistryError('MANIFEST_INVALID', `index entry ${entry.digest} does not describe the pushed manifest (size or media type)`, {
          detail: { digest: entry.digest },
        });
      }
    }
  }

  private async record(repository: LocalRepository, digest: Digest, origin: BlobOrigin): Promise<void> {
    const known = await this.opts.store.blob(repository.key, digest);
    if (known && known.upstream === origin.upstream && known.repository === origin.repository) return;
    this.ensureRoom(256);
    await this.opts.store.putBlob(repository.key, digest, origin);
  }

  private ensureRoom(bytes: number): void {
    if (this.opts.store.usage().bytes + bytes <= this.opts.maxBytes) return;
    throw new RegistryError('DENIED', 'the local repositories are full (local.maxSize): delete tags or manifests first', {
      status: 507,
      detail: { maxSize: this.opts.maxBytes },
    });
  }

  /**
   * Replicas sharing the local store (the bucket) hear each other's changes at
   * once: this one's go out on the bus, and the others' drop this process's
   * copies of deleted manifests; after a gap (events may have been missed),
   * every copy. Returns the unsubscribe.
   */
  shareChanges(events: ClusterEvents): () => void {
    const { store } = this.opts;
    const stops = [
      this.onChange(({ repository, tag, deletedManifests }) => void events.publish('local-changed', { repository, ...(tag === undefined ? {} : { tag }), deletedManifests })),
      events.subscribe('local-changed', ({ repository, deletedManifests }, origin) => {
        if (!origin.self) store.forgetCopies?.(repository, deletedManifests);
      }),
      events.onGap(() => store.forgetCopies?.()),
    ];
    return () => stops.forEach((stop) => stop());
  }

  private changed(change: LocalChange): void {
    for (const listener of this.listeners) {
      try {
        listener(change);
      } catch (err) {
        this.opts.logger.warn({ err: (err as Error).message, ...change }, 'local tag change listener failed');
      }
    }
  }
}

function blobUnknown(digest: Digest): RegistryError {
  return new RegistryError('BLOB_UNKNOWN', 'blob unknown to this local repository', { detail: { digest } });
}

function manifestUnknown(reference: string): RegistryError {
  return new RegistryError('MANIFEST_UNKNOWN', 'manifest unknown to this local repository', { detail: { reference } });
}

function referenceUnknown(digest: Digest, kind: 'blob' | 'manifest', hint: string): RegistryError {
  return new RegistryError('MANIFEST_BLOB_UNKNOWN', `the manifest refers to ${kind} ${digest}, unknown to this repository: ${hint}`, { detail: { digest } });
}
