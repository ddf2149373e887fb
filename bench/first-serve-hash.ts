// First-serve (hashing) vs warm (trusted) throughput of a 64 MiB cached blob through FsBlobStore + writeTo over loopback HTTP.
import { randomBytes } from 'node:crypto';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino from 'pino';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { digestOf } from '../src/oci/digest.ts';
import { FsBlobStore } from '../src/store/fs-blob-store.ts';
import type { DirectBody } from '../src/store/blob-store.ts';

const dir = await mkdtemp(join(tmpdir(), 'disk-bench-'));
const store = new FsBlobStore({ dir, maxSize: 2 ** 40, logger: pino({ level: 'silent' }) });
await store.init();
const bytes = randomBytes(64 * 1024 * 1024);
const digest = digestOf(bytes);
const p = store.tempPath();
await writeFile(p, bytes);
await store.commitFile(p, { digest, size: bytes.length });
const server = createServer(async (_req, res) => {
  // Each request: forget trust when ?fresh, so the read hashes.
  if (_req.url === '/fresh') (store as unknown as { trust?: { forget(d: string): void } }).trust?.forget(digest);
  const read = await store.open(digest);
  res.writeHead(200, { 'content-length': read!.size });
  await (read!.stream as unknown as DirectBody).writeTo(res);
});
await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
const port = (server.address() as AddressInfo).port;
const run = promisify(execFile);
// The client is curl, another process: in this one it would share the event loop with the server.
async function once(path: string): Promise<number> {
  const { stdout } = await run('curl', ['-s', '-o', '/dev/null', '-w', '%{size_download} %{speed_download}', `http://127.0.0.1:${port}${path}`]);
  const [size, speed] = stdout.split(' ').map(Number);
  if (size !== bytes.length) throw new Error(`short: ${size}`);
  return (speed as number) / 1024 / 1024;
}
const median = (a: number[]) => a.sort((x, y) => x - y)[Math.floor(a.length / 2)]!;
for (let round = 0; round < 2; round++) {
  await once('/fresh');
  await once('/warm');
}
const fresh: number[] = [], warm: number[] = [];
for (let i = 0; i < 7; i++) {
  fresh.push(await once('/fresh'));
  warm.push(await once('/warm'));
}
console.log(JSON.stringify({ firstServeHashingMiBps: Math.round(median(fresh)), warmTrustedMiBps: Math.round(median(warm)), fresh: fresh.map(Math.round), warm: warm.map(Math.round) }));
server.close();
