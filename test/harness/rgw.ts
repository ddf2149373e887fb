// A real S3 implementation on loopback for the object-store tests: a
// single-node Ceph cluster (Debian ceph-mon, ceph-osd, radosgw), the RADOS
// Gateway that operators run in production, not a fake written for tests.
//
// One monitor, one OSD keeping objects in memory (memstore), no manager, no
// authentication inside the cluster, and the gateway's S3 API on 127.0.0.1
// with one user. Every file (config, monitor store, logs) lives in one temp
// directory; the three daemons are harness processes, stopped by PID.
// It answers S3 about 1.5 s after the first process starts (measured on 2 busy
// cores), holds ~140 MiB idle, and stops in 0.3 s.
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { ensureCommands } from './packages.ts';
import { freePort } from './ports.ts';
import { run, startProcess, waitFor, waitForHttp, type ManagedProcess } from './process.ts';
import { removeDir, tempDir } from './tmp.ts';

export interface RgwCluster {
  /** http://127.0.0.1:PORT, path-style addressing only (no DNS names for buckets). */
  endpoint: string;
  region: string;
  credentials: { accessKeyId: string; secretAccessKey: string };
  createBucket(name: string): Promise<void>;
  /** Resident memory of the monitor, the OSD and the gateway together, in bytes. */
  rssBytes(): Promise<number>;
  /** The daemons' PIDs and the directory holding all their state: what stop() must leave nothing of. */
  pids: number[];
  dir: string;
  stop(): Promise<void>;
}

/** RGW's default zone group answers to this region name. */
const REGION = 'us-east-1';
const START_TIMEOUT_MS = 30_000;
/** A port picked free may be taken before the daemon binds it: start again with new ports. */
const START_ATTEMPTS = 3;

const NEEDS = [
  { command: 'ceph-mon', debianPackage: 'ceph-mon' },
  { command: 'ceph-osd', debianPackage: 'ceph-osd' },
  { command: 'radosgw', debianPackage: 'radosgw' },
  // ceph-common and ceph-base come with the daemons.
  { command: 'radosgw-admin', debianPackage: 'ceph-common' },
  { command: 'ceph', debianPackage: 'ceph-common' },
  { command: 'monmaptool', debianPackage: 'ceph-base' },
].map((need) => ({ ...need, withoutRecommends: true }));

/** ceph.conf for a throwaway single-node cluster; each setting is there for a measured reason. */
function cephConf(o: { dir: string; fsid: string; monPort: number; rgwPort: number }): string {
  return `[global]
fsid = ${o.fsid}
mon host = v2:127.0.0.1:${o.monPort}
mon initial members = a
public addr = 127.0.0.1
# msgr2 only: one port per daemon, nothing on the legacy protocol.
ms bind msgr1 = false
# No cephx inside a test cluster; the S3 API still checks every signature.
auth cluster required = none
auth service required = none
auth client required = none
# Without it radosgw loops on "get_initial_auth_request returned -13" when auth is none.
ms mon client mode = crc secure
# One OSD: pools of one copy.
mon allow pool size one = true
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
# Proposals every 50 ms instead of 1 s: creating the gateway's pools takes ~1 s instead of ~8.
paxos propose interval = 0.05
# The monitor refuses to run on a disk with less than 5% free (and warns under 30%): not a test's concern.
mon data avail warn = 1
mon data avail crit = 0
# Objects in memory: no disk to format, a start in milliseconds. Keep test data small (the OSD holds it all).
osd objectstore = memstore
memstore device bytes = ${8 * 1024 ** 3}
# Exit at once on SIGTERM instead of telling a monitor that may already be gone.
osd fast shutdown notify mon = false
mon data = ${o.dir}/mon.$id
osd data = ${o.dir}/osd.$id
log file = ${o.dir}/$name.log
keyring = /dev/null
admin socket =
pid file =

[client.rgw]
# tcp_nodelay: without it small GETs and LISTs wait ~45 ms each for delayed ACKs.
rgw frontends = beast endpoint=127.0.0.1:${o.rgwPort} tcp_nodelay=1
`;
}

async function vmRssBytes(pid: number): Promise<number> {
  try {
    const status = await readFile(`/proc/${pid}/status`, 'utf8');
    return Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? 0) * 1024;
  } catch {
    return 0; // exited
  }
}

async function startOnce(dir: string): Promise<RgwCluster> {
  const [monPort, rgwPort] = [await freePort(), await freePort()];
  const fsid = randomUUID();
  const conf = join(dir, 'ceph.conf');
  await writeFile(conf, cephConf({ dir, fsid, monPort, rgwPort }));
  await Promise.all([mkdir(join(dir, 'mon.a')), mkdir(join(dir, 'osd.0'))]);
  const ceph = (command: string, args: string[]) => run(command, ['-c', conf, ...args], { timeoutMs: START_TIMEOUT_MS });
  const daemon = (name: string, command: string, args: string[]) =>
    // The state is thrown away: no clean shutdown to wait for (radosgw and the OSD take seconds for one).
    startProcess({ name, command, args: ['-f', '-c', conf, ...args], logFile: join(dir, `${name}.out`), stopTimeoutMs: 300 });

  const processes: ManagedProcess[] = [];
  const stop = async () => {
    await Promise.all(processes.map((p) => p.stop()));
  };
  try {
    await run('monmaptool', ['--create', '--add', 'a', `v2:127.0.0.1:${monPort}`, '--fsid', fsid, join(dir, 'monmap')]);
    await ceph('ceph-mon', ['--mkfs', '-i', 'a', '--monmap', join(dir, 'monmap')]);
    processes.push(await daemon('ceph-mon', 'ceph-mon', ['-i', 'a']));
    const uuid = randomUUID();
    // Registers osd.0 in the OSD map (waiting for the monitor to form its quorum of one).
    await ceph('ceph', ['--connect-timeout', '20', 'osd', 'new', uuid, '0']);
    await ceph('ceph-osd', ['--mkfs', '-i', '0', '--osd-uuid', uuid]);
    const osd = await daemon('ceph-osd', 'ceph-osd', ['-i', '0']);
    processes.push(osd);
    // The gateway only once the OSD is up: the placement groups of pools it creates before wait for
    // the monitor's next tick (measured: 6 s to answer when started together, 1.5 s in turn).
    await waitFor(async () => (JSON.parse((await ceph('ceph', ['osd', 'stat', '-f', 'json'])).stdout) as { num_up_osds?: number }).num_up_osds === 1, {
      timeoutMs: START_TIMEOUT_MS,
      description: 'the OSD to be up',
      intervalMs: 50,
      proc: osd,
    });
    const gateway = await daemon('radosgw', 'radosgw', ['-n', 'client.rgw']);
    processes.push(gateway);
    const endpoint = `http://127.0.0.1:${rgwPort}`;
    await waitForHttp(endpoint, START_TIMEOUT_MS, gateway);
    for (const p of processes) if (p.exited) throw new Error(`${p.name} exited during start\n${p.tail()}`);

    const credentials = { accessKeyId: `ARCHWAY${randomBytes(6).toString('hex').toUpperCase()}`, secretAccessKey: randomBytes(24).toString('hex') };
    await ceph('radosgw-admin', ['user', 'create', '--uid=archway', '--display-name=archway tests', `--access-key=${credentials.accessKeyId}`, `--secret=${credentials.secretAccessKey}`]);
    // A copy: the SDK marks the credentials object it is given (a `$source` key).
    const admin = new S3Client({ region: REGION, endpoint, forcePathStyle: true, credentials: { ...credentials } });
    return {
      endpoint,
      region: REGION,
      credentials,
      createBucket: async (name) => {
        await admin.send(new CreateBucketCommand({ Bucket: name }));
      },
      rssBytes: async () => (await Promise.all(processes.map((p) => vmRssBytes(p.pid)))).reduce((a, b) => a + b, 0),
      pids: processes.map((p) => p.pid),
      dir,
      stop: async () => {
        admin.destroy();
        await stop();
      },
    };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** Starts a cluster in a temp directory of its own; stop() ends the daemons and removes it. */
export async function startRgw(): Promise<RgwCluster> {
  await ensureCommands(NEEDS);
  for (let attempt = 1; ; attempt++) {
    const dir = await tempDir('archway-rgw-');
    try {
      const cluster = await startOnce(dir);
      return {
        ...cluster,
        stop: async () => {
          await cluster.stop();
          if (process.env.ARCHWAY_TEST_KEEP_TMP !== '1') await removeDir(dir);
        },
      };
    } catch (err) {
      await removeDir(dir);
      if (attempt >= START_ATTEMPTS) throw err;
    }
  }
}
