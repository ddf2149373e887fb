// An S3-compatible server on loopback for the object-store tests: the npm
// `s3rver` (a real HTTP S3 implementation on disk), in its own process.
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from './ports.ts';
import { startProcess, waitForHttp, type ManagedProcess } from './process.ts';
import { tempDir } from './tmp.ts';

export interface S3Handle {
  /** http://127.0.0.1:PORT */
  endpoint: string;
  bucket: string;
  dataDir: string;
  /** The `storage` section of an archway config using this bucket under `prefix`. */
  storage(prefix?: string): { type: 's3'; s3: Record<string, unknown> };
  stop(): Promise<void>;
}

const BUCKET = 'archway-test';

export interface StartS3Options {
  /**
   * Make each object visible only once completely written, as S3 does (see
   * s3rver-atomic.cjs): plain s3rver shows an object being written with the
   * bytes so far. Default on: archway relies on what S3 promises.
   */
  atomicWrites?: boolean;
}

export async function startS3(opts: StartS3Options = {}): Promise<S3Handle> {
  const dataDir = await tempDir('archway-s3-');
  const port = await freePort();
  const bin = (opts.atomicWrites ?? true)
    ? fileURLToPath(new URL('./s3rver-atomic.cjs', import.meta.url))
    : join(dirname(createRequire(import.meta.url).resolve('s3rver/package.json')), 'bin', 's3rver.js');
  const proc: ManagedProcess = await startProcess({
    name: 's3rver',
    command: process.execPath,
    args: [bin, '-d', dataDir, '-a', '127.0.0.1', '-p', String(port), '--silent', '--configure-bucket', BUCKET],
    logFile: join(await tempDir('archway-s3-log-'), 's3rver.log'),
  });
  const endpoint = `http://127.0.0.1:${port}`;
  await waitForHttp(endpoint, 20_000, proc);
  return {
    endpoint,
    bucket: BUCKET,
    dataDir,
    storage: (prefix = '') => ({
      type: 's3',
      // s3rver accepts any well-formed signature; these are its documented defaults.
      s3: { bucket: BUCKET, prefix, endpoint, forcePathStyle: true, region: 'us-east-1', accessKeyId: 'S3RVER', secretAccessKey: 'S3RVER' },
    }),
    stop: () => proc.stop(),
  };
}
