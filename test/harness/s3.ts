// An S3 bucket on loopback for the object-store tests, on a real S3
// implementation: Ceph's RADOS Gateway (rgw.ts). The cluster costs a second
// or two to start, so one is shared by every handle of a test process (one
// per test file under `node --test`); each startS3() gets a bucket of its
// own in it, and the cluster stops with the last handle.
import { randomBytes } from 'node:crypto';
import { startRgw, type RgwCluster } from './rgw.ts';

export interface S3Handle {
  /** http://127.0.0.1:PORT (path-style addressing). */
  endpoint: string;
  bucket: string;
  region: string;
  /** The keys of the gateway's one user, for test code that reads the bucket directly. */
  credentials: { accessKeyId: string; secretAccessKey: string };
  /** The `storage` section of an archway config using this bucket under `prefix`. */
  storage(prefix?: string): { type: 's3'; s3: Record<string, unknown> };
  /** Resident memory of the whole S3 service (Ceph's daemons), in bytes. */
  rssBytes(): Promise<number>;
  stop(): Promise<void>;
}

let shared: { cluster: Promise<RgwCluster>; users: number } | undefined;

async function acquireCluster(): Promise<RgwCluster> {
  if (!shared) {
    const cluster = startRgw();
    shared = { cluster, users: 0 };
    // A failed start is not shared: the next caller tries again.
    cluster.catch(() => (shared = undefined));
  }
  shared.users++;
  return shared.cluster;
}

async function releaseCluster(): Promise<void> {
  if (!shared || --shared.users > 0) return;
  const { cluster } = shared;
  shared = undefined;
  await (await cluster).stop();
}

export interface StartS3Options {
  /**
   * Objects visible only once completely written, as in S3. Always so on RGW; the
   * option stays for callers written for the s3rver harness, which needed it.
   */
  atomicWrites?: true;
}

export async function startS3(_opts: StartS3Options = {}): Promise<S3Handle> {
  const cluster = await acquireCluster();
  // Bucket names: 3 to 63 lowercase letters, digits and hyphens.
  const bucket = `archway-test-${randomBytes(6).toString('hex')}`;
  try {
    await cluster.createBucket(bucket);
  } catch (err) {
    await releaseCluster();
    throw err;
  }
  let stopped: Promise<void> | undefined;
  const { accessKeyId, secretAccessKey } = cluster.credentials;
  return {
    endpoint: cluster.endpoint,
    bucket,
    region: cluster.region,
    // A copy each: the AWS SDK adds a key (`$source`) to the credentials object it is given.
    get credentials() {
      return { accessKeyId, secretAccessKey };
    },
    storage: (prefix = '') => ({
      type: 's3',
      s3: { bucket, prefix, endpoint: cluster.endpoint, forcePathStyle: true, region: cluster.region, accessKeyId, secretAccessKey },
    }),
    rssBytes: () => cluster.rssBytes(),
    stop: () => (stopped ??= releaseCluster()),
  };
}
