// podman as a pulling client: `podman pull` from archway as the registry itself
// (127.0.0.1:PORT/name:tag), with storage of its own under a temp directory
// (vfs: no overlay mounts needed) so it touches nothing of the machine's.
// podman cannot run containers here (setrlimit is refused); pulls need none.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { ensureCommands } from './packages.ts';
import { run } from './process.ts';
import { removeDir, tempDir } from './tmp.ts';

export interface PodmanImage {
  /** The image ID: the hex of its config blob's digest. */
  id: string;
  /** The digest podman recorded for what it pulled (an index's digest for a multi-platform tag). */
  digest: string;
  repoDigests: string[];
  /** diffIDs, `sha256:…` of each uncompressed layer. */
  layers: string[];
  os: string;
  architecture: string;
}

export interface Podman {
  /** `podman pull --tls-verify=false` of `ref` (e.g. 127.0.0.1:PORT/library/app:1). */
  pull(ref: string, opts?: { platform?: string; creds?: string }): Promise<void>;
  inspect(ref: string): Promise<PodmanImage>;
  remove(ref: string): Promise<void>;
  close(): Promise<void>;
}

export async function startPodman(): Promise<Podman> {
  await ensureCommands([{ command: 'podman', debianPackage: 'podman' }]);
  const dir = await tempDir('archway-podman-');
  const global = [
    '--root', join(dir, 'root'),
    '--runroot', join(dir, 'runroot'),
    '--tmpdir', join(dir, 'tmp'),
    '--storage-driver', 'vfs',
    // No systemd or journald in CI containers, and nothing written outside dir: no events, cgroups by hand.
    '--events-backend', 'none',
    '--cgroup-manager', 'cgroupfs',
  ];
  // Only what the test names: no search registries, no mirrors from the machine's configuration.
  const registriesConf = join(dir, 'registries.conf');
  await writeFile(registriesConf, 'unqualified-search-registries = []\n');
  const env = { ...process.env, CONTAINERS_REGISTRIES_CONF: registriesConf };
  const podman = async (args: string[]) => (await run('podman', [...global, ...args], { env, timeoutMs: 180_000 })).stdout;
  return {
    async pull(ref, opts = {}) {
      const creds = opts.creds ? ['--creds', opts.creds] : [];
      await podman(['pull', '--tls-verify=false', '--quiet', ...creds, ...(opts.platform ? ['--platform', opts.platform] : []), ref]);
    },
    async inspect(ref) {
      const [raw] = JSON.parse(await podman(['image', 'inspect', ref])) as Array<{
        Id: string;
        Digest: string;
        RepoDigests: string[];
        RootFS: { Layers: string[] };
        Os: string;
        Architecture: string;
      }>;
      if (!raw) throw new Error(`podman knows no image ${ref}`);
      return { id: raw.Id, digest: raw.Digest, repoDigests: raw.RepoDigests, layers: raw.RootFS.Layers, os: raw.Os, architecture: raw.Architecture };
    },
    async remove(ref) {
      await podman(['rmi', ref]);
    },
    async close() {
      // vfs storage is plain files under dir: nothing mounted, nothing outside it to reset.
      await removeDir(dir);
    },
  };
}
