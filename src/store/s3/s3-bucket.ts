import type { Readable } from 'node:stream';
import { createReadStream } from 'node:fs';
import { Agent as HttpAgent } from 'node:http';
import { Agent as HttpsAgent } from 'node:https';
import {
  DeleteObjectCommand,
  GetObjectCommand,
  HeadObjectCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
  type S3ClientConfig,
} from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import type { Config } from '../../config/schema.ts';

type S3Config = NonNullable<Config['storage']['s3']>;

/** Parts of a multipart upload: few enough requests for big layers, small enough to retry cheaply. */
const PART_BYTES = 8 * 1024 * 1024;
/** Parts uploaded at once per blob; each is buffered, so this bounds memory per upload (~3 parts). */
const PARALLEL_PARTS = 2;
const MAX_SOCKETS = 512;
/** Below this a single PUT is cheaper than a multipart upload. */
const SINGLE_PUT_BYTES = PART_BYTES;

/**
 * The few object operations archway needs, on one bucket under one prefix,
 * through the AWS SDK v3 (`@aws-sdk/client-s3`; `@aws-sdk/lib-storage` for
 * multipart uploads of large blobs; the presigner for redirects). Works with
 * AWS S3 and S3-compatible services (MinIO, Ceph) via endpoint and
 * path-style addressing.
 */
export class S3Bucket {
  readonly client: S3Client;
  private readonly bucket: string;
  private readonly prefix: string;

  constructor(config: S3Config) {
    const options: S3ClientConfig = {
      region: config.region,
      forcePathStyle: config.forcePathStyle,
      // Checksums only where S3 requires them: the SDK's default sends uploads as aws-chunked
      // bodies with checksum trailers, which many S3-compatible servers store verbatim or refuse
      // (Ceph RGW 16 answers a streamed PutObject with 411 MissingContentLength; the S3 store's e2e
      // tests run on RGW). archway verifies every blob by its digest itself.
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      // A cached blob's GET holds its socket while the client downloads it: the SDK's 50 would
      // make every other bucket call wait behind slow clients. Timeouts: a hanging bucket fails
      // requests instead of holding them forever (requestTimeout is the longest silence).
      requestHandler: {
        httpAgent: new HttpAgent({ keepAlive: true, maxSockets: MAX_SOCKETS }),
        httpsAgent: new HttpsAgent({ keepAlive: true, maxSockets: MAX_SOCKETS }),
        connectionTimeout: 5_000,
        requestTimeout: 60_000,
      },
    };
    if (config.endpoint) options.endpoint = config.endpoint;
    // Without keys in the config: the standard AWS chain (environment, shared files, instance role).
    if (config.accessKeyId && config.secretAccessKey) options.credentials = { accessKeyId: config.accessKeyId, secretAccessKey: config.secretAccessKey };
    this.client = new S3Client(options);
    this.bucket = config.bucket;
    this.prefix = config.prefix;
  }

  /** Size of an object, or undefined when there is none. */
  async size(key: string): Promise<number | undefined> {
    try {
      const head = await this.client.send(new HeadObjectCommand({ Bucket: this.bucket, Key: this.prefix + key }));
      return head.ContentLength;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /** The object's bytes (a range of them, inclusive) and its whole size, or undefined when there is none. */
  async get(key: string, range?: { start: number; end: number }): Promise<{ body: Readable; size: number | undefined } | undefined> {
    try {
      const out = await this.client.send(
        new GetObjectCommand({ Bucket: this.bucket, Key: this.prefix + key, ...(range ? { Range: `bytes=${range.start}-${range.end}` } : {}) }),
      );
      const total = range ? Number(/\/(\d+)$/.exec(out.ContentRange ?? '')?.[1] ?? NaN) : out.ContentLength;
      return { body: out.Body as Readable, size: total !== undefined && Number.isFinite(total) ? total : undefined };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async getBuffer(key: string): Promise<Buffer | undefined> {
    const object = await this.get(key);
    if (!object) return undefined;
    const chunks: Buffer[] = [];
    for await (const c of object.body) chunks.push(c as Buffer);
    return Buffer.concat(chunks);
  }

  /** Upload a local file; the object appears only when the upload is complete (multipart completion for large files). */
  async putFile(key: string, path: string, size: number): Promise<void> {
    if (size < SINGLE_PUT_BYTES) {
      await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: this.prefix + key, Body: createReadStream(path), ContentLength: size }));
      return;
    }
    await new Upload({
      client: this.client,
      params: { Bucket: this.bucket, Key: this.prefix + key, Body: createReadStream(path) },
      partSize: PART_BYTES,
      queueSize: PARALLEL_PARTS,
      // An interrupted upload leaves no object; its parts are aborted (or the bucket's lifecycle rule removes them).
      leavePartsOnError: false,
    }).done();
  }

  async putBuffer(key: string, bytes: Buffer): Promise<void> {
    await this.client.send(new PutObjectCommand({ Bucket: this.bucket, Key: this.prefix + key, Body: bytes, ContentLength: bytes.length }));
  }

  async delete(key: string): Promise<void> {
    await this.client.send(new DeleteObjectCommand({ Bucket: this.bucket, Key: this.prefix + key }));
  }

  /** Every object under `dir` (relative to the prefix), with sizes and modification times. */
  async *list(dir: string): AsyncIterable<{ key: string; size: number; modified: number }> {
    let token: string | undefined;
    do {
      const page = await this.client.send(
        new ListObjectsV2Command({ Bucket: this.bucket, Prefix: this.prefix + dir, ...(token ? { ContinuationToken: token } : {}) }),
      );
      for (const o of page.Contents ?? []) {
        if (o.Key) yield { key: o.Key.slice(this.prefix.length), size: o.Size ?? 0, modified: o.LastModified?.getTime() ?? 0 };
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  /** A time-limited URL a client can GET the object from directly. */
  presignedGet(key: string, expiresInSeconds: number): Promise<string> {
    return getSignedUrl(this.client, new GetObjectCommand({ Bucket: this.bucket, Key: this.prefix + key }), { expiresIn: expiresInSeconds });
  }

  close(): void {
    this.client.destroy();
  }
}

function isNotFound(err: unknown): boolean {
  const e = err as { name?: string; $metadata?: { httpStatusCode?: number } };
  return e.name === 'NotFound' || e.name === 'NoSuchKey' || e.$metadata?.httpStatusCode === 404;
}
