import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtemp, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import pino from 'pino';
import { digestOf, digestHex } from '../../src/oci/digest.ts';
import { FsBlobStore } from '../../src/store/fs-blob-store.ts';
import { FsManifestStore } from '../../src/store/manifest-store.ts';

function verify(configPath: string) {
  return spawnSync(process.execPath, ['--import', 'tsx', 'src/main.ts', 'cache', 'verify', '--config', configPath], { encoding: 'utf8', timeout: 30_000 });
}

describe('archway cache verify', () => {
  it('re-hashes every blob and manifest, removes the bad ones, and is clean on the second run', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'archway-verify-'));
    const cacheDir = join(dir, 'cache');
    const blobs = new FsBlobStore({ dir: cacheDir, maxSize: 1 << 30, logger: pino({ level: 'silent' }) });
    await blobs.init();
    const good = Buffer.from('good blob bytes');
    const bad = Buffer.from('bad blob bytes!');
    for (const bytes of [good, bad]) {
      const path = blobs.tempPath();
      await writeFile(path, bytes);
      await blobs.commitFile(path, { digest: digestOf(bytes), size: bytes.length });
    }
    const manifests = new FsManifestStore(cacheDir);
    await manifests.init();
    const m1 = Buffer.from('{"schemaVersion":2}');
    const m2 = Buffer.from('{"schemaVersion":2,"x":1}');
    await manifests.put('docker.io', { digest: digestOf(m1), mediaType: 'application/vnd.oci.image.manifest.v1+json', bytes: m1 });
    await manifests.put('ghcr.io', { digest: digestOf(m2), mediaType: 'application/vnd.oci.image.manifest.v1+json', bytes: m2 });
    // Damage: a flipped blob byte (same size), a manifest rewritten, a stray temp file.
    const badHex = digestHex(digestOf(bad));
    await writeFile(join(cacheDir, 'blobs', 'sha256', badHex.slice(0, 2), badHex), Buffer.from('BAD blob bytes!'));
    await writeFile(join(cacheDir, 'manifests', 'ghcr.io', 'sha256', digestHex(digestOf(m2))), '{"mediaType":"x"}\n{"tampered":true}');
    await writeFile(join(cacheDir, 'tmp', 'half-a-fill'), 'partial');
    const configPath = join(dir, 'archway.yaml');
    await writeFile(configPath, `cache:\n  dir: ${cacheDir}\nupstreams:\n  docker.io:\n    url: https://registry-1.docker.io\ndefaultUpstream: docker.io\n`);

    const first = verify(configPath);
    assert.equal(first.status, 1, first.stderr);
    assert.match(first.stdout, new RegExp(`removed blob ${digestOf(bad)}`));
    assert.match(first.stdout, new RegExp(`removed manifest ghcr.io ${digestOf(m2)}`));
    assert.match(first.stdout, /2 blobs \(1 bad\), 2 manifests \(1 bad\)/);
    assert.deepEqual(await readdir(join(cacheDir, 'tmp')), [], 'temp files removed');

    const second = verify(configPath);
    assert.equal(second.status, 0, second.stdout + second.stderr);
    assert.match(second.stdout, /1 blobs \(0 bad\), 1 manifests \(0 bad\)/);
  });
});
