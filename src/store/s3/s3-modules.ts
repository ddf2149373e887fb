// The S3 store in one module, for `await import()`: callers load it only when
// storage.type is s3, so a filesystem cache never loads the AWS SDK (about 24 MiB
// of memory, and start-up time). Import it statically only as `import type`.
export { S3Bucket } from './s3-bucket.ts';
export { S3BlobStore, blobObjectKey } from './s3-blob-store.ts';
export { S3ManifestStore } from './s3-manifest-store.ts';
export { S3LocalStore } from './s3-local-store.ts';
