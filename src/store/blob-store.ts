import type { Readable, Writable } from 'node:stream';
import type { Digest } from '../oci/digest.ts';

export interface BlobInfo {
  digest: Digest;
  size: number;
}

/** An inclusive byte range, as HTTP states it. */
export interface ByteRange {
  start: number;
  end: number;
}

/**
 * A read that can write itself to a socket faster than a pipe can (the
 * filesystem store's FileBody: recycled buffers). Optional for a backend.
 */
export interface DirectBody {
  /** Writes everything to `dest` and ends it; rejects on a read error (the caller then cuts `dest`). */
  writeTo(dest: Writable): Promise<void>;
}

export function isDirectBody(stream: Readable): stream is Readable & DirectBody {
  return typeof (stream as Partial<DirectBody>).writeTo === 'function';
}

/** Room held for a file being written (a fill's temp file); see BlobStore.reserve. */
export interface SpaceReservation {
  /** Bytes held now. */
  readonly bytes: number;
  /**
   * Hold room for `bytes` in all, evicting least-recently-used entries to
   * make it. False when even that cannot make room (what is left is being
   * read): the caller must not write past what it holds.
   */
  ensure(bytes: number): Promise<boolean>;
  /** Give the room back (the file is gone, or became an entry). */
  release(): void;
}
/** What re-reading a stored blob whole found: its copy was removed when damaged. */
export type VerifyOutcome = 'intact' | 'damaged' | 'gone';

/** Awaited after each chunk a verification reads: a background pass sleeps here to keep its rate. */
export type ReadPace = (bytes: number) => Promise<void>;

export interface BlobRead {
  size: number;
  stream: Readable;
}

/**
 * Content-addressed blob storage. Only verified content enters: callers hand
 * over a finished local file whose digest they checked (`commitFile`), and the
 * store makes it visible atomically. The filesystem store is the first
 * implementation; an object store can follow the same contract
 * (test/store/blob-store.contract.ts, run for each backend).
 */
export interface BlobStore {
  /**
   * Prepare the store (create directories, remove leftovers of interrupted work,
   * start indexing content). Lookups work at once; `list` waits for the index.
   */
  init(): Promise<void>;
  stat(digest: Digest): Promise<BlobInfo | undefined>;
  /**
   * Open for reading. The blob cannot be evicted until the stream closes.
   * Undefined when the blob is not (or no longer) there. The first whole read
   * of a blob in a process verifies it (the last byte waits for its digest); a
   * damaged copy cuts the stream with an error and is removed. A range of a
   * blob not yet verified here is answered after verifying the whole copy
   * (undefined, a miss, if it is damaged).
   */
  open(digest: Digest, range?: ByteRange): Promise<BlobRead | undefined>;
  /** A fresh path for a file that will be handed to commitFile, on the same filesystem. */
  tempPath(): string;
  /**
   * Room in the store's budget for a temp file about to be written, made by
   * evicting before any byte is written. Stores without a local budget (an
   * object store bounds its bucket itself) have none.
   */
  reserve?(): SpaceReservation;
  /** Move a verified file into the store under its digest; its reservation (if any) becomes the blob's entry. */
  commitFile(path: string, info: BlobInfo, reservation?: SpaceReservation): Promise<void>;
  delete(digest: Digest): Promise<boolean>;
  /** Keep a stored blob from eviction until the returned function is called (its file is still being read). */
  hold?(digest: Digest): () => void;
  /**
   * Let clients have the last byte once the blob is verified, before
   * `commitFile` is done: for a store whose commit is an upload that may take
   * seconds. The filesystem store commits in a rename, so a finished download
   * there means a cached blob.
   */
  readonly releaseBeforeCommit?: boolean;
  /**
   * A stored blob's file for a front proxy to send itself (server.accelRedirect): its path
   * under the store's `blobs/` directory, only when this process has verified the copy
   * (unverified copies are served, and so verified, by archway). Counts as a use of the blob.
   * Filesystem stores only.
   */
  verifiedFile?(digest: Digest): Promise<{ size: number; path: string } | undefined>;
  /** A URL the client may fetch the blob from directly (an object store's presigned URL), when the store offers that. */
  redirectUrl?(digest: Digest): Promise<string | undefined>;
  /** Release timers and flush shared state at shutdown (stores that have any). */
  close?(): Promise<void>;
  /** Re-read the whole stored copy and check its digest, whatever this process trusts; a damaged copy is removed. */
  verify(digest: Digest, pace?: ReadPace): Promise<VerifyOutcome>;
  /** Everything cached, once indexing is complete. */
  list(): AsyncIterable<BlobInfo>;
  usage(): { bytes: number; count: number };
}
