// The Kubernetes manifests in deploy/kubernetes reference each other by name, path,
// key and port; nothing else checks that those references hold, nor that the config
// they carry is one archway accepts. Each test below checks one kind of reference.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, posix } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments, parseDocument } from 'yaml';
import { parseConfig } from '../../src/config/load.ts';
import type { Config } from '../../src/config/schema.ts';

const DIR = fileURLToPath(new URL('../../deploy/kubernetes/', import.meta.url));

// ---- the shapes this test reads (the parts of the Kubernetes API it checks) ----

type Labels = Record<string, string>;
interface Resource {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Labels };
  /** Where it was read from (not part of the object). */
  file: string;
}
interface KeyRef {
  name: string;
  key: string;
}
interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { secretKeyRef?: KeyRef; configMapKeyRef?: KeyRef };
}
interface Probe {
  httpGet?: { path?: string; port: string | number };
}
interface VolumeMount {
  name: string;
  mountPath: string;
  subPath?: string;
  readOnly?: boolean;
}
interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  envFrom?: Array<{ secretRef?: { name: string }; configMapRef?: { name: string } }>;
  ports?: Array<{ name?: string; containerPort: number }>;
  readinessProbe?: Probe;
  livenessProbe?: Probe;
  startupProbe?: Probe;
  resources?: { requests?: Record<string, string | number>; limits?: Record<string, string | number> };
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number; readOnlyRootFilesystem?: boolean; allowPrivilegeEscalation?: boolean };
  volumeMounts?: VolumeMount[];
}
interface KeyToPath {
  key: string;
  path: string;
}
interface Volume {
  name: string;
  configMap?: { name: string; items?: KeyToPath[] };
  secret?: { secretName: string; items?: KeyToPath[]; defaultMode?: number };
  persistentVolumeClaim?: { claimName: string; readOnly?: boolean };
  hostPath?: { path: string; type?: string };
  emptyDir?: object;
}
interface PodSpec {
  containers: Container[];
  initContainers?: Container[];
  volumes?: Volume[];
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number; runAsGroup?: number; fsGroup?: number };
  terminationGracePeriodSeconds?: number;
  enableServiceLinks?: boolean;
  tolerations?: Array<{ operator?: string; key?: string; effect?: string }>;
}
interface Workload extends Resource {
  spec: {
    replicas?: number;
    strategy?: { type?: string };
    selector: { matchLabels?: Labels };
    template: { metadata: { labels?: Labels }; spec: PodSpec };
  };
}
interface DataResource extends Resource {
  data?: Record<string, string>;
  stringData?: Record<string, string>;
}
interface Service extends Resource {
  spec: { type?: string; selector?: Labels; ports: Array<{ name?: string; port: number; targetPort?: string | number }> };
}
interface Claim extends Resource {
  spec: { accessModes: string[]; resources: { requests: { storage: string | number } } };
}

// ---- loading ----

function yamlFiles(dir: string, prefix = ''): string[] {
  return readdirSync(join(dir, prefix), { withFileTypes: true })
    .flatMap((e) => {
      const rel = prefix ? `${prefix}/${e.name}` : e.name;
      if (e.isDirectory()) return yamlFiles(dir, rel);
      return /\.ya?ml$/.test(e.name) ? [rel] : [];
    })
    .sort();
}

const FILES = yamlFiles(DIR);
const yamlErrors: string[] = [];
const documents: Array<Record<string, unknown> & { file: string }> = [];
for (const file of FILES) {
  for (const [i, doc] of parseAllDocuments(readFileSync(join(DIR, file), 'utf8')).entries()) {
    for (const e of [...doc.errors, ...doc.warnings]) yamlErrors.push(`${file} (document ${i + 1}): ${e.message}`);
    if (doc.errors.length > 0) continue;
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) continue; // an empty document, e.g. after a trailing ---
    if (typeof value !== 'object' || Array.isArray(value)) {
      yamlErrors.push(`${file} (document ${i + 1}): not a mapping`);
      continue;
    }
    documents.push({ ...(value as Record<string, unknown>), file });
  }
}

const kustomizations = documents.filter((d) => d.kind === 'Kustomization');
const kustomization = kustomizations[0] as (Record<string, unknown> & { file: string; resources?: string[]; namespace?: string }) | undefined;
const resources = documents.filter((d) => d.kind !== 'Kustomization') as unknown as Resource[];

const namespaceOf = (r: Resource): string => r.metadata.namespace ?? kustomization?.namespace ?? 'default';
const describeRes = (r: Resource): string => `${r.kind} ${namespaceOf(r)}/${r.metadata.name} (${r.file})`;
const CLUSTER_SCOPED = new Set(['Namespace', 'ClusterRole', 'ClusterRoleBinding', 'PersistentVolume', 'StorageClass', 'PriorityClass']);

function findResource<T extends Resource>(kind: string, name: string, namespace: string): T | undefined {
  return resources.find((r) => r.kind === kind && r.metadata.name === name && namespaceOf(r) === namespace) as T | undefined;
}

function onlyOne<T extends Resource>(kind: string, filter: (r: T) => boolean = () => true): T {
  const found = resources.filter((r) => r.kind === kind).map((r) => r as T).filter(filter);
  assert.equal(found.length, 1, `expected exactly one ${kind} here, found ${found.length}: ${found.map(describeRes).join(', ')}`);
  return found[0] as T;
}

const workloads = (): Workload[] => resources.filter((r) => ['Deployment', 'DaemonSet', 'StatefulSet', 'Job'].includes(r.kind)) as Workload[];
const containersOf = (pod: PodSpec): Container[] => [...(pod.initContainers ?? []), ...pod.containers];
const keysOf = (r: DataResource): string[] => [...Object.keys(r.data ?? {}), ...Object.keys(r.stringData ?? {})];
const valueOf = (r: DataResource, key: string): string | undefined => r.stringData?.[key] ?? r.data?.[key];

/** archway's Deployment: the one whose container is started with --config. */
function archway(): { deployment: Workload; pod: PodSpec; container: Container } {
  const deployment = onlyOne<Workload>('Deployment', (d) => d.spec.template.spec.containers.some((c) => (c.args ?? []).includes('--config')));
  const pod = deployment.spec.template.spec;
  const container = pod.containers.find((c) => (c.args ?? []).includes('--config')) as Container;
  return { deployment, pod, container };
}

function configPath(container: Container): string {
  const args = container.args ?? [];
  const path = args[args.indexOf('--config') + 1];
  assert.ok(path, `the archway container's args ${JSON.stringify(args)} give no path after --config`);
  return path;
}

/** The file a path inside the container is, in terms of the volume it is on. */
function fileOnVolume(pod: PodSpec, container: Container, path: string): { mount: VolumeMount; volume: Volume; relative: string } | undefined {
  const mounts = (container.volumeMounts ?? [])
    .filter((m) => path === m.mountPath || path.startsWith(`${m.mountPath.replace(/\/$/, '')}/`))
    .sort((a, b) => b.mountPath.length - a.mountPath.length);
  const mount = mounts[0];
  if (!mount) return undefined;
  const volume = (pod.volumes ?? []).find((v) => v.name === mount.name);
  if (!volume) return undefined;
  const rest = posix.relative(mount.mountPath, path);
  const relative = mount.subPath ? posix.join(mount.subPath, rest) : rest;
  return { mount, volume, relative };
}

/** The ConfigMap or Secret key that a file on such a volume shows, honouring `items`. */
function keyOfFile(items: KeyToPath[] | undefined, relative: string): string | undefined {
  if (items) return items.find((i) => posix.normalize(i.path) === relative)?.key;
  return relative.includes('/') || relative === '' ? undefined : relative;
}

function archwayConfigMap(): { configMap: DataResource; key: string } {
  const { pod, container, deployment } = archway();
  const path = configPath(container);
  const file = fileOnVolume(pod, container, path);
  assert.ok(file?.volume.configMap, `--config ${path} is not on a mounted ConfigMap volume`);
  const key = keyOfFile(file.volume.configMap.items, file.relative);
  assert.ok(key, `--config ${path} is not a key of the ConfigMap volume ${file.volume.name} (items: ${JSON.stringify(file.volume.configMap.items)})`);
  const configMap = findResource<DataResource>('ConfigMap', file.volume.configMap.name, namespaceOf(deployment));
  assert.ok(configMap, `ConfigMap ${file.volume.configMap.name} (mounted for --config) does not exist`);
  return { configMap, key };
}

/** The YAML archway reads at --config, parsed and validated by archway's own schema. */
function archwayConfig(): { raw: Record<string, unknown>; config: Readonly<Config> } {
  const { configMap, key } = archwayConfigMap();
  const text = valueOf(configMap, key);
  assert.ok(text, `ConfigMap ${configMap.metadata.name} has no key ${key}`);
  const doc = parseDocument(text);
  assert.deepEqual(
    [...doc.errors, ...doc.warnings].map((e) => e.message),
    [],
    `${configMap.metadata.name}/${key} is not valid YAML`,
  );
  const raw = doc.toJS() as Record<string, unknown>;
  return { raw, config: parseConfig(raw, '/') };
}

/** A Kubernetes quantity (`512Mi`, `50Gi`, `250m`, `2`) as a number of units. */
function quantity(q: string | number): number {
  if (typeof q === 'number') return q;
  const m = /^(\d+(?:\.\d+)?)(Ki|Mi|Gi|Ti|Pi|Ei|m|k|M|G|T|P|E)?$/.exec(q);
  assert.ok(m, `${q} is not a Kubernetes quantity`);
  const factor: Record<string, number> = {
    Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60,
    m: 1e-3, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18,
  };
  return Number(m[1]) * (m[2] ? (factor[m[2]] as number) : 1);
}

function containerPort(container: Container, port: string | number | undefined): number | undefined {
  const ports = container.ports ?? [];
  if (typeof port === 'number') return ports.find((p) => p.containerPort === port)?.containerPort;
  if (typeof port === 'string') return ports.find((p) => p.name === port)?.containerPort;
  return undefined;
}

const selects = (selector: Labels | undefined, labels: Labels | undefined): boolean =>
  selector !== undefined && Object.keys(selector).length > 0 && Object.entries(selector).every(([k, v]) => labels?.[k] === v);

type TomlValue = string | number | boolean | TomlValue[] | { [key: string]: TomlValue };
type TomlTable = { [key: string]: TomlValue };

/**
 * Just enough TOML for containerd's hosts.toml: comments, `[a."b".c]` tables, and
 * `key = value` with strings, numbers, booleans and flat arrays. Anything else throws.
 */
function parseHostsToml(text: string): TomlTable {
  const root: TomlTable = {};
  let table = root;
  const key = String.raw`(?:[A-Za-z0-9_-]+|"[^"]*")`;
  const splitKey = (k: string): string[] => [...k.matchAll(new RegExp(key, 'g'))].map((m) => m[0].replace(/^"|"$/g, ''));
  const scalar = (v: string): TomlValue => {
    if (/^"[^"]*"$/.test(v)) return v.slice(1, -1);
    if (v === 'true' || v === 'false') return v === 'true';
    if (/^-?\d+$/.test(v)) return Number(v);
    throw new Error(`unsupported TOML value: ${v}`);
  };
  for (const [n, line] of text.split('\n').entries()) {
    const l = line.replace(/^\s+|\s+$/g, '').replace(/\s+#[^"]*$/, '');
    if (l === '' || l.startsWith('#')) continue;
    const header = new RegExp(String.raw`^\[(${key}(?:\.${key})*)\]$`).exec(l);
    if (header) {
      table = root;
      for (const part of splitKey(header[1] as string)) table = (table[part] ??= {}) as TomlTable;
      continue;
    }
    const kv = new RegExp(String.raw`^(${key})\s*=\s*(.+)$`).exec(l);
    if (!kv) throw new Error(`line ${n + 1}: not TOML this test understands: ${line}`);
    const raw = (kv[2] as string).trim();
    const name = splitKey(kv[1] as string)[0] as string;
    if (name in table) throw new Error(`line ${n + 1}: ${name} is given twice`);
    table[name] = raw.startsWith('[')
      ? raw.replace(/^\[|\]$/g, '').split(',').map((s) => s.trim()).filter((s) => s !== '').map(scalar)
      : scalar(raw);
  }
  return root;
}

/** The DaemonSet that writes hosts.toml onto the nodes, and where its files come from. */
function containerdMirror(): { daemonSet: Workload; container: Container; hostsDir: VolumeMount; sources: DataResource; files: Record<string, string> } {
  const daemonSet = onlyOne<Workload>('DaemonSet');
  const pod = daemonSet.spec.template.spec;
  assert.equal(pod.containers.length, 1, `${describeRes(daemonSet)} should have one container`);
  const container = pod.containers[0] as Container;
  const env = (name: string): string => {
    const value = container.env?.find((e) => e.name === name)?.value;
    assert.ok(value, `${describeRes(daemonSet)}: env ${name} is not set`);
    return value;
  };
  const hostsDir = fileOnVolume(pod, container, env('HOSTS_DIR'));
  assert.ok(hostsDir, `HOSTS_DIR ${env('HOSTS_DIR')} is not on a mounted volume`);
  assert.equal(hostsDir.relative, '', `HOSTS_DIR ${env('HOSTS_DIR')} should be a volume's mount path, not a path inside it`);
  assert.ok(hostsDir.volume.hostPath, `HOSTS_DIR ${env('HOSTS_DIR')} should be a hostPath volume (the node's certs.d)`);
  const source = fileOnVolume(pod, container, env('SOURCE_DIR'));
  assert.ok(source?.volume.configMap, `SOURCE_DIR ${env('SOURCE_DIR')} is not a mounted ConfigMap`);
  const sources = findResource<DataResource>('ConfigMap', source.volume.configMap.name, namespaceOf(daemonSet));
  assert.ok(sources, `ConfigMap ${source.volume.configMap.name} (the hosts.toml files) does not exist`);
  const files: Record<string, string> = {};
  for (const key of keysOf(sources)) files[key] = valueOf(sources, key) as string;
  assert.ok(Object.keys(files).length > 0, `ConfigMap ${sources.metadata.name} holds no hosts.toml`);
  // The script is what turns SOURCE_DIR and HOSTS_DIR into files on the node.
  const script = [...(container.command ?? []), ...(container.args ?? [])].join('\n');
  assert.match(script, /\$\{?SOURCE_DIR\b/, 'the DaemonSet script does not read SOURCE_DIR');
  assert.match(script, /\$\{?HOSTS_DIR\b/, 'the DaemonSet script does not write to HOSTS_DIR');
  assert.match(script, /hosts\.toml/, 'the DaemonSet script does not write hosts.toml files');
  return { daemonSet, container, hostsDir: hostsDir.mount, sources, files };
}

function serviceUrl(): string {
  const service = onlyOne<Service>('Service');
  const port = service.spec.ports[0];
  assert.ok(port, `${describeRes(service)} has no ports`);
  return `http://${service.metadata.name}.${namespaceOf(service)}.svc.cluster.local:${port.port}`;
}

// ---- the checks ----

describe('deploy/kubernetes manifests', () => {
  it('every file is valid YAML and every document is a Kubernetes object', () => {
    assert.ok(FILES.length > 0, `no YAML files under ${DIR}`);
    assert.deepEqual(yamlErrors, [], 'YAML errors');
    for (const r of resources) {
      assert.ok(typeof r.apiVersion === 'string' && typeof r.kind === 'string', `${r.file}: a document without apiVersion and kind`);
      assert.ok(typeof r.metadata?.name === 'string' && r.metadata.name !== '', `${r.file}: a ${r.kind} without metadata.name`);
    }
    assert.equal(kustomizations.length, 1, 'expected one kustomization.yaml');
  });

  it('no two resources share kind, namespace and name', () => {
    const seen = new Map<string, Resource>();
    for (const r of resources) {
      const id = `${r.kind}/${namespaceOf(r)}/${r.metadata.name}`;
      assert.ok(!seen.has(id), `${describeRes(r)} is also defined in ${seen.get(id)?.file}`);
      seen.set(id, r);
    }
  });

  it('every namespaced resource is in a Namespace these manifests create', () => {
    for (const r of resources.filter((r) => !CLUSTER_SCOPED.has(r.kind))) {
      const created = resources.some((n) => n.kind === 'Namespace' && n.metadata.name === namespaceOf(r));
      assert.ok(created, `${describeRes(r)}: namespace ${namespaceOf(r)} is not created here`);
    }
  });

  it('kustomization.yaml lists every manifest file, and nothing else', () => {
    assert.ok(kustomization, 'no kustomization.yaml');
    const listed = (kustomization.resources ?? []).map((f) => posix.normalize(f)).sort();
    const manifests = FILES.filter((f) => f !== kustomization.file).sort();
    assert.deepEqual(listed, manifests, `${kustomization.file} resources must be exactly the manifest files`);
  });

  it('every configMap, secret and persistentVolumeClaim volume names a resource (and keys) that exist in its namespace', () => {
    for (const w of workloads()) {
      for (const v of w.spec.template.spec.volumes ?? []) {
        const where = `${describeRes(w)} volume ${v.name}`;
        const refs: Array<[string, string | undefined, KeyToPath[] | undefined]> = [
          ['ConfigMap', v.configMap?.name, v.configMap?.items],
          ['Secret', v.secret?.secretName, v.secret?.items],
          ['PersistentVolumeClaim', v.persistentVolumeClaim?.claimName, undefined],
        ];
        for (const [kind, name, items] of refs) {
          if (name === undefined) continue;
          const target = findResource<DataResource>(kind, name, namespaceOf(w));
          assert.ok(target, `${where}: ${kind} ${namespaceOf(w)}/${name} does not exist`);
          for (const item of items ?? []) assert.ok(keysOf(target).includes(item.key), `${where}: ${kind} ${name} has no key ${item.key}`);
        }
      }
    }
  });

  it('every volumeMount names a declared volume, and no two share a mount path', () => {
    for (const w of workloads()) {
      const pod = w.spec.template.spec;
      const volumes = new Set((pod.volumes ?? []).map((v) => v.name));
      for (const c of containersOf(pod)) {
        const paths = new Set<string>();
        for (const m of c.volumeMounts ?? []) {
          assert.ok(volumes.has(m.name), `${describeRes(w)} container ${c.name}: volumeMount ${m.name} (${m.mountPath}) names no volume of the pod (${[...volumes].join(', ')})`);
          assert.ok(!paths.has(m.mountPath), `${describeRes(w)} container ${c.name}: two mounts at ${m.mountPath}`);
          paths.add(m.mountPath);
        }
      }
    }
  });

  it('every env secretKeyRef / configMapKeyRef names a resource and key that exist; ARCHWAY_ADMIN_TOKEN comes from the Secret', () => {
    for (const w of workloads()) {
      for (const c of containersOf(w.spec.template.spec)) {
        for (const e of c.env ?? []) {
          for (const [kind, ref] of [['Secret', e.valueFrom?.secretKeyRef], ['ConfigMap', e.valueFrom?.configMapKeyRef]] as const) {
            if (!ref) continue;
            const target = findResource<DataResource>(kind, ref.name, namespaceOf(w));
            assert.ok(target, `${describeRes(w)} env ${e.name}: ${kind} ${ref.name} does not exist`);
            assert.ok(keysOf(target).includes(ref.key), `${describeRes(w)} env ${e.name}: ${kind} ${ref.name} has no key ${ref.key}`);
          }
        }
        for (const from of c.envFrom ?? []) {
          if (from.secretRef) assert.ok(findResource('Secret', from.secretRef.name, namespaceOf(w)), `${describeRes(w)} envFrom: Secret ${from.secretRef.name} does not exist`);
          if (from.configMapRef) assert.ok(findResource('ConfigMap', from.configMapRef.name, namespaceOf(w)), `${describeRes(w)} envFrom: ConfigMap ${from.configMapRef.name} does not exist`);
        }
      }
    }
    const { container } = archway();
    const admin = container.env?.find((e) => e.name === 'ARCHWAY_ADMIN_TOKEN');
    assert.ok(admin?.valueFrom?.secretKeyRef, 'archway gets ARCHWAY_ADMIN_TOKEN from a Secret (valueFrom.secretKeyRef)');
  });

  it("the archway container's --config path is a key of a mounted ConfigMap", () => {
    const { configMap, key } = archwayConfigMap();
    assert.ok(keysOf(configMap).includes(key), `ConfigMap ${configMap.metadata.name} has no key ${key}`);
  });

  it("the ConfigMap's archway config is valid YAML that archway's config schema accepts", () => {
    try {
      archwayConfig();
    } catch (e) {
      assert.fail(`archway would not start with this config: ${(e as Error).message}`);
    }
  });

  it('every upstream passwordFile is a key of a mounted Secret the archway user can read', () => {
    const { pod, container, deployment } = archway();
    const { config } = archwayConfig();
    const withFiles = Object.entries(config.upstreams).filter(([, u]) => u.passwordFile !== undefined);
    assert.ok(withFiles.length > 0, 'no upstream has a passwordFile');
    for (const [name, u] of withFiles) {
      const path = u.passwordFile as string;
      const file = fileOnVolume(pod, container, path);
      assert.ok(file?.volume.secret, `upstreams.${name}.passwordFile ${path} is not on a mounted Secret volume`);
      const key = keyOfFile(file.volume.secret.items, file.relative);
      assert.ok(key, `upstreams.${name}.passwordFile ${path} is not a file of Secret volume ${file.volume.name} (items: ${JSON.stringify(file.volume.secret.items)})`);
      const secret = findResource<DataResource>('Secret', file.volume.secret.secretName, namespaceOf(deployment));
      assert.ok(secret, `Secret ${file.volume.secret.secretName} does not exist`);
      assert.ok(keysOf(secret).includes(key), `upstreams.${name}.passwordFile ${path}: Secret ${secret.metadata.name} has no key ${key}`);
      // Secret files are root-owned; with fsGroup the group can read them only if the mode lets it.
      const mode = file.volume.secret.defaultMode ?? 0o644;
      assert.ok(mode & 0o040, `Secret volume ${file.volume.name} mode ${mode.toString(8)} is not group-readable: uid ${pod.securityContext?.runAsUser} cannot read ${path}`);
    }
  });

  it("cache.dir is the PersistentVolumeClaim's mount path, mounted writable", () => {
    const { pod, container } = archway();
    const { config } = archwayConfig();
    const mount = (container.volumeMounts ?? []).find((m) => m.mountPath.replace(/\/$/, '') === config.cache.dir);
    assert.ok(mount, `cache.dir ${config.cache.dir} is not a mount path of the archway container`);
    const volume = (pod.volumes ?? []).find((v) => v.name === mount.name);
    assert.ok(volume?.persistentVolumeClaim, `cache.dir ${config.cache.dir} is mounted from volume ${mount.name}, which is not a PersistentVolumeClaim`);
    assert.ok(!mount.readOnly && !volume.persistentVolumeClaim.readOnly, `cache.dir ${config.cache.dir} is mounted read-only`);
    assert.equal(mount.subPath, undefined, 'the cache volume is mounted whole (archway keeps tmp/ beside the blobs)');
  });

  it('cache.maxSize fits in the PersistentVolumeClaim with at least 10% headroom', () => {
    const { pod, deployment } = archway();
    const { config } = archwayConfig();
    const claimName = pod.volumes?.find((v) => v.persistentVolumeClaim)?.persistentVolumeClaim?.claimName as string;
    const claim = findResource<Claim>('PersistentVolumeClaim', claimName, namespaceOf(deployment));
    assert.ok(claim, `PersistentVolumeClaim ${claimName} does not exist`);
    const storage = quantity(claim.spec.resources.requests.storage);
    assert.ok(config.cache.maxSize <= storage * 0.9, `cache.maxSize ${config.cache.maxSize} bytes leaves less than 10% of the ${claim.spec.resources.requests.storage} claim (${storage} bytes) for manifests, downloads in progress and filesystem overhead`);
  });

  it("the config's server.port is the container port named http", () => {
    const { container } = archway();
    const { config } = archwayConfig();
    assert.equal(containerPort(container, 'http'), config.server.port, `server.port ${config.server.port} is not the containerPort named http (${JSON.stringify(container.ports)})`);
  });

  it('readiness probes GET /readyz and liveness (and startup) GET /healthz on a declared container port', () => {
    const { container } = archway();
    const probes: Array<[string, Probe | undefined, string, boolean]> = [
      ['readinessProbe', container.readinessProbe, '/readyz', true],
      ['livenessProbe', container.livenessProbe, '/healthz', true],
      ['startupProbe', container.startupProbe, '/healthz', false],
    ];
    for (const [name, probe, path, required] of probes) {
      if (!probe && !required) continue;
      assert.ok(probe?.httpGet, `${name} must be an httpGet probe`);
      assert.equal(probe.httpGet.path, path, `${name} path`);
      assert.ok(containerPort(container, probe.httpGet.port) !== undefined, `${name} port ${probe.httpGet.port} is not a containerPort of the archway container`);
    }
  });

  it("the Service's targetPort is a container port of archway", () => {
    const { container } = archway();
    const service = onlyOne<Service>('Service');
    for (const p of service.spec.ports) {
      const target = p.targetPort ?? p.port;
      assert.ok(containerPort(container, target) !== undefined, `${describeRes(service)} port ${p.port}: targetPort ${target} is not a containerPort of archway (${JSON.stringify(container.ports)})`);
    }
  });

  it("the Service's selector picks archway's pods and no others; the Deployment's selector matches its template", () => {
    const { deployment } = archway();
    const service = onlyOne<Service>('Service');
    const labels = deployment.spec.template.metadata.labels;
    assert.ok(selects(deployment.spec.selector.matchLabels, labels), `${describeRes(deployment)}: selector ${JSON.stringify(deployment.spec.selector.matchLabels)} does not match its pod labels ${JSON.stringify(labels)}`);
    assert.ok(selects(service.spec.selector, labels), `${describeRes(service)}: selector ${JSON.stringify(service.spec.selector)} does not match archway's pod labels ${JSON.stringify(labels)}`);
    for (const w of workloads().filter((w) => w !== deployment)) {
      assert.ok(!selects(service.spec.selector, w.spec.template.metadata.labels), `${describeRes(service)} would also send traffic to the pods of ${describeRes(w)}`);
      assert.ok(!selects(w.spec.selector.matchLabels, labels), `${describeRes(w)}'s selector also matches archway's pods`);
    }
  });

  it('terminationGracePeriodSeconds is longer than server.shutdownTimeout', () => {
    const { pod } = archway();
    const { config } = archwayConfig();
    const grace = pod.terminationGracePeriodSeconds ?? 30;
    assert.ok(grace * 1000 > config.server.shutdownTimeout, `terminationGracePeriodSeconds ${grace}s does not exceed server.shutdownTimeout ${config.server.shutdownTimeout / 1000}s: the kubelet would kill archway mid-shutdown`);
  });

  it('one replica, Recreate, on a ReadWriteOnce claim (the cache is one pod’s filesystem)', () => {
    const { deployment, pod } = archway();
    assert.equal(deployment.spec.replicas ?? 1, 1, 'replicas: the filesystem cache belongs to one pod');
    assert.equal(deployment.spec.strategy?.type, 'Recreate', 'strategy: a rolling update would start a second pod on the ReadWriteOnce volume');
    const claimName = pod.volumes?.find((v) => v.persistentVolumeClaim)?.persistentVolumeClaim?.claimName as string;
    const claim = findResource<Claim>('PersistentVolumeClaim', claimName, namespaceOf(deployment));
    assert.deepEqual(claim?.spec.accessModes, ['ReadWriteOnce'], `PersistentVolumeClaim ${claimName} access modes`);
  });

  it('archway runs as uid/gid 1000, non-root, with a read-only root filesystem and writable volumes where it writes', () => {
    const { pod, container } = archway();
    const { config } = archwayConfig();
    assert.equal(pod.securityContext?.runAsNonRoot, true, 'pod securityContext.runAsNonRoot');
    assert.equal(container.securityContext?.runAsUser ?? pod.securityContext?.runAsUser, 1000, 'runAsUser: the image’s node user');
    assert.equal(pod.securityContext?.fsGroup, 1000, 'pod securityContext.fsGroup: makes the cache volume writable by uid 1000');
    assert.equal(container.securityContext?.readOnlyRootFilesystem, true, 'container securityContext.readOnlyRootFilesystem');
    assert.equal(container.securityContext?.allowPrivilegeEscalation, false, 'container securityContext.allowPrivilegeEscalation');
    for (const path of [config.cache.dir, '/tmp']) {
      const file = fileOnVolume(pod, container, path);
      assert.ok(file && !file.mount.readOnly && (file.volume.persistentVolumeClaim || file.volume.emptyDir), `${path} must be a writable volume: the root filesystem is read-only`);
    }
  });

  it('memory limit of at least 512Mi, requests within limits', () => {
    const { container } = archway();
    const { requests = {}, limits = {} } = container.resources ?? {};
    assert.ok(limits.memory !== undefined, 'archway has no memory limit');
    assert.ok(quantity(limits.memory) >= 512 * 2 ** 20, `memory limit ${limits.memory} is below 512Mi (peak RSS under cold load is ~200 MiB)`);
    for (const r of ['cpu', 'memory']) {
      assert.ok(requests[r] !== undefined, `archway has no ${r} request`);
      const limit = limits[r];
      if (limit !== undefined) assert.ok(quantity(requests[r]) <= quantity(limit), `${r} request ${requests[r]} exceeds its limit ${limit}`);
    }
  });

  it('archway gets no Service-link variables (ARCHWAY_PORT=tcp://… beside its own ARCHWAY_* settings)', () => {
    const { pod } = archway();
    assert.equal(pod.enableServiceLinks, false, 'enableServiceLinks: false (the Service is named archway)');
  });

  it("the containerd DaemonSet writes into the node's /etc/containerd/certs.d on every node", () => {
    const { daemonSet, hostsDir } = containerdMirror();
    const pod = daemonSet.spec.template.spec;
    const volume = pod.volumes?.find((v) => v.name === hostsDir.name);
    assert.equal(volume?.hostPath?.path, '/etc/containerd/certs.d', 'HOSTS_DIR must be the hostPath /etc/containerd/certs.d');
    assert.ok(!hostsDir.readOnly, 'the certs.d hostPath is mounted read-only');
    assert.ok(pod.tolerations?.some((t) => t.operator === 'Exists' && t.key === undefined), 'tolerations: { operator: Exists } so that tainted nodes get the mirror too');
  });

  it("each hosts.toml sends pulls to archway's Service (DNS name and port) and falls back to the real registry", () => {
    const { files } = containerdMirror();
    const url = serviceUrl();
    for (const [registry, text] of Object.entries(files)) {
      let toml: TomlTable;
      try {
        toml = parseHostsToml(text);
      } catch (e) {
        assert.fail(`hosts.toml for ${registry}: ${(e as Error).message}`);
      }
      assert.match(String(toml.server), /^https:\/\//, `${registry}: server = "https://…" (the real registry, the fallback)`);
      if (registry === 'docker.io') assert.equal(toml.server, 'https://registry-1.docker.io', 'docker.io: server');
      const hosts = (toml.host ?? {}) as Record<string, TomlTable>;
      assert.ok(url in hosts, `${registry}: no [host."${url}"] (found ${Object.keys(hosts).map((h) => `[host."${h}"]`).join(', ') || 'none'})`);
      const capabilities = hosts[url]?.capabilities;
      assert.ok(Array.isArray(capabilities) && capabilities.includes('pull') && capabilities.includes('resolve'), `${registry}: [host."${url}"] capabilities must include "pull" and "resolve", got ${JSON.stringify(capabilities)}`);
    }
  });

  it('every registry the nodes send to archway is one of its upstreams, and SERVICE_NAME is the Service', () => {
    const { files, container } = containerdMirror();
    const { config } = archwayConfig();
    const registries = new Set(Object.entries(config.upstreams).flatMap(([key, u]) => [key, ...u.aliases]));
    for (const registry of Object.keys(files)) {
      assert.ok(registries.has(registry), `hosts.toml for ${registry}: archway has no upstream for it (upstreams: ${[...registries].join(', ')}) and would answer 404`);
    }
    const serviceName = container.env?.find((e) => e.name === 'SERVICE_NAME')?.value;
    assert.equal(`http://${serviceName}:${new URL(serviceUrl()).port}`, serviceUrl(), 'SERVICE_NAME (what USE_CLUSTER_IP replaces) is the Service DNS name in the hosts.toml files');
  });
});
