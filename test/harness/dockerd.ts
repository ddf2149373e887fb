// A private dockerd (with its own containerd) that pulls docker.io images
// through a registry mirror: the real Docker client path through the proxy.
// Docker only uses mirrors for docker.io, so `docker pull foo:1` becomes
// GET /v2/library/foo/manifests/1 on the mirror.
import { mkdir, mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureCommands } from './packages.ts';
import { run, startProcess, waitFor } from './process.ts';
import type { ManagedProcess, RunOptions, RunResult } from './process.ts';
import { destroyDir, destroyDirSync, markOwned, sweepOrphans } from './host-cleanup.ts';
import { maybeGunzip, readTar } from './tar.ts';
import { removeDir } from './tmp.ts';

export interface DockerdHandle {
  /** Path of the Docker API unix socket. */
  socket: string;
  /** containerd socket (ours, started for this dockerd): usable with ctr.ts. */
  containerdSocket: string;
  /** The CLI's config directory (DOCKER_CONFIG): a test may write credentials into its config.json. */
  cliConfig: string;
  /** Runs the docker CLI against this daemon (isolated, empty client config). */
  docker(args: string[], opts?: RunOptions): Promise<RunResult>;
  pull(ref: string, opts?: { platform?: string }): Promise<{ stdout: string }>;
  imageId(ref: string): Promise<string>;
  repoDigests(ref: string): Promise<string[]>;
  /** Reads a file from the image's layers via `docker save` (no containers needed). */
  fileFromImage(ref: string, path: string): Promise<string>;
  rmi(ref: string): Promise<void>;
  logTail(): string;
  /** Kills dockerd, its containerd and any shims; removes all its directories. */
  stop(): Promise<void>;
}

export interface StartDockerdOptions {
  /** http://127.0.0.1:PORT */
  mirror: string;
  /** Extra dockerd flags. */
  extraArgs?: string[];
}

/**
 * Unix socket paths are limited to ~108 bytes and containerd nests sockets
 * deep below its state dir, so everything lives in a short /tmp/aw-XXXXXX.
 */
function shortBase(): string {
  const t = tmpdir();
  return t.length <= 24 ? t : '/tmp';
}

function containerdConfig(dir: string, socket: string): string {
  // CRI and exotic snapshotters are useless here and noisy to initialise;
  // opt's default path is /opt/containerd, outside our directory.
  return `version = 2
root = "${dir}/containerd/root"
state = "${dir}/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "${socket}"

[ttrpc]
  address = "${socket}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "${dir}/containerd/opt"

# dockerd caches manifests it pulled in containerd's content store (namespace
# "moby"); with the default "shared" policy a later ctr pull in another
# namespace silently reuses them instead of fetching through the mirror.
[plugins."io.containerd.metadata.v1.bolt"]
  content_sharing_policy = "isolated"
`;
}

/** The CLI must not see the machine's config (credential helpers, contexts). */
function cliEnv(configDir: string): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('DOCKER_')));
  return { ...env, DOCKER_CONFIG: configDir };
}

let active: DockerdHandle | undefined;

export async function startDockerd(opts: StartDockerdOptions): Promise<DockerdHandle> {
  await ensureCommands([
    { command: 'dockerd', debianPackage: 'docker.io' },
    { command: 'docker', debianPackage: 'docker.io' },
    { command: 'containerd', debianPackage: 'containerd' },
    { command: 'ctr', debianPackage: 'containerd' },
  ]);
  if (active) {
    process.emitWarning('startDockerd: a previous dockerd was still running; stopping it first');
    await active.stop();
  }
  await sweepOrphans(shortBase(), ['aw-']);

  const dir = await mkdtemp(join(shortBase(), 'aw-'));
  await markOwned(dir);
  const containerdSocket = join(dir, 'containerd.sock');
  const socket = join(dir, 'docker.sock');
  const cliConfig = join(dir, 'cli');
  await mkdir(cliConfig);
  await writeFile(join(cliConfig, 'config.json'), '{}');
  await writeFile(join(dir, 'containerd.toml'), containerdConfig(dir, containerdSocket));
  // An explicit (empty) daemon config so /etc/docker/daemon.json is ignored.
  await writeFile(join(dir, 'daemon.json'), '{}');

  let containerd: ManagedProcess | undefined;
  let dockerd: ManagedProcess | undefined;
  // If the test process dies, process.ts kills the daemons first (its exit
  // hook is prepended); then this removes dockerd's bind mount and the dir.
  const onExit = (): void => destroyDirSync(dir);
  process.on('exit', onExit);
  let stopped = false;
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    if (active === handle) active = undefined;
    await dockerd?.stop();
    await containerd?.stop();
    await destroyDir(dir);
    process.off('exit', onExit);
  };

  const docker = (args: string[], runOpts: RunOptions = {}): Promise<RunResult> =>
    run('docker', ['-H', `unix://${socket}`, ...args], { timeoutMs: 180_000, ...runOpts, env: cliEnv(cliConfig) });

  const inspect = async (ref: string, format: string): Promise<string> =>
    (await docker(['image', 'inspect', '--format', format, ref])).stdout.trim();

  const handle: DockerdHandle = {
    socket,
    containerdSocket,
    cliConfig,
    docker,
    pull: async (ref, pullOpts = {}) => {
      const platform = pullOpts.platform ? ['--platform', pullOpts.platform] : [];
      try {
        const { stdout } = await docker(['pull', ...platform, ref]);
        return { stdout };
      } catch (err) {
        // The CLI only says "pull failed"; the daemon log says why (and a
        // failed mirror makes dockerd fall back to registry-1.docker.io,
        // which then shows up as a DNS error here).
        const reason = err instanceof Error ? err.message : String(err);
        throw new Error(`${reason}\n${dockerd?.tail(30) ?? ''}`);
      }
    },
    imageId: (ref) => inspect(ref, '{{.Id}}'),
    repoDigests: async (ref) => JSON.parse(await inspect(ref, '{{json .RepoDigests}}')) as string[],
    fileFromImage: async (ref, path) => {
      const tarPath = join(dir, `save-${Date.now()}.tar`);
      await docker(['save', '-o', tarPath, ref]);
      try {
        return fileFromSavedImage(await readFile(tarPath), path);
      } finally {
        await removeDir(tarPath);
      }
    },
    rmi: async (ref) => {
      await docker(['image', 'rm', ref]);
    },
    logTail: () => [dockerd?.tail(), containerd?.tail(10)].filter(Boolean).join('\n'),
    stop,
  };
  active = handle;

  try {
    containerd = await startProcess({
      name: 'containerd',
      command: 'containerd',
      args: ['--config', join(dir, 'containerd.toml')],
      logFile: join(dir, 'containerd.log'),
    });
    await waitFor(
      async () => (await run('ctr', ['-a', containerdSocket, 'version'], { allowFail: true, timeoutMs: 5000 })).code === 0,
      { timeoutMs: 20_000, description: 'containerd to answer', proc: containerd, intervalMs: 200 },
    );
    dockerd = await startProcess({
      name: 'dockerd',
      command: 'dockerd',
      args: [
        '--config-file', join(dir, 'daemon.json'),
        '--containerd', containerdSocket,
        // vfs works everywhere (no overlay mounts); no networking needed.
        '--storage-driver=vfs',
        '--iptables=false',
        '--ip6tables=false',
        '--bridge=none',
        '--data-root', join(dir, 'data'),
        '--exec-root', join(dir, 'exec'),
        '--pidfile', join(dir, 'dockerd.pid'),
        '-H', `unix://${socket}`,
        '--registry-mirror', opts.mirror,
        // Debug logs show each mirror attempt and why it failed.
        '--debug',
        ...(opts.extraArgs ?? []),
      ],
      logFile: join(dir, 'dockerd.log'),
      env: cliEnv(cliConfig),
      stopTimeoutMs: 15_000,
    });
    const daemon = dockerd;
    await waitFor(
      async () => (await docker(['version', '--format', '{{.Server.Version}}'], { allowFail: true, timeoutMs: 5000 })).code === 0,
      { timeoutMs: 60_000, description: 'dockerd to answer', proc: daemon, intervalMs: 250 },
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return handle;
}

/** Applies the layers of a `docker save` archive in order and returns one file. */
export function fileFromSavedImage(archive: Buffer, path: string): string {
  const entries = new Map(readTar(archive).map((e) => [e.name, e]));
  const files = new Map<string, Buffer>();
  for (const [name, entry] of entries) {
    // docker save writes repeated layers as symlinks to the first copy.
    const target = entry.type === '2' ? entries.get(join(name, '..', entry.linkName).replace(/^\/+/, '')) : entry;
    if (target) files.set(name, target.data);
  }
  const manifestJson = files.get('manifest.json');
  if (!manifestJson) throw new Error('docker save archive without manifest.json');
  const [image] = JSON.parse(manifestJson.toString('utf8')) as Array<{ Layers: string[] }>;
  if (!image) throw new Error('docker save archive with an empty manifest.json');
  const wanted = path.replace(/^\/+/, '');
  const slash = wanted.lastIndexOf('/');
  const whiteout = `${wanted.slice(0, slash + 1)}.wh.${wanted.slice(slash + 1)}`;
  let content: Buffer | undefined;
  for (const layerPath of image.Layers) {
    const layer = files.get(layerPath);
    if (!layer) throw new Error(`docker save archive lacks layer ${layerPath}`);
    for (const entry of readTar(maybeGunzip(layer))) {
      if (entry.name === wanted && entry.type !== '5') content = entry.data;
      if (entry.name === whiteout) content = undefined;
    }
  }
  if (content === undefined) throw new Error(`${path} not found in the saved image`);
  return content.toString('utf8');
}
