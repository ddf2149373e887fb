// The X-Accel-Redirect examples (deploy/compose-accel, deploy/kubernetes-accel)
// hang together: archway's accelRedirect location is nginx's internal location
// and the marker nginx sends, that location aliases the blobs of the very volume
// archway writes its cache to (read-only for nginx), nginx reaches archway where
// it listens, and archway trusts the address nginx connects from. The nginx.conf
// of the compose example is the one the e2e test runs (test/harness/nginx-accel.ts).
import assert from 'node:assert/strict';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parse, parseAllDocuments } from 'yaml';
import { parseConfig } from '../../src/config/load.ts';
import type { Config } from '../../src/config/schema.ts';
import { CidrSet } from '../../src/platform/cidr.ts';

const root = join(import.meta.dirname, '..', '..', 'deploy');
type Doc = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any -- free-form YAML under test

/** What both examples must agree on, between archway's config and nginx's. */
function checkPair(nginx: string, config: Readonly<Config>, nginxCacheMount: string, archwayAddress: string): void {
  const location = config.server.accelRedirect?.location;
  assert.ok(location, 'server.accelRedirect is set');
  // Up to the next location (the block holds a `types { }` of its own).
  const block = new RegExp(`location ${location} \\{([\\s\\S]*?)\\n\\s*location `).exec(nginx)?.[1];
  assert.ok(block, `nginx has a location ${location}`);
  assert.match(block, /^\s*internal;/m, 'the file location is internal: no client reaches it directly');
  assert.match(block, new RegExp(`alias ${nginxCacheMount}/blobs/;`), 'it aliases the blobs of the cache volume');
  assert.match(block, /add_header Docker-Content-Digest \$upstream_http_docker_content_digest always;/);
  assert.match(block, /error_page 403 404 = @archway_direct;/, 'a file gone before nginx opens it goes back to archway');
  assert.match(nginx, /location @archway_direct \{\s*set \$archway_accel "";[^}]*proxy_pass http:\/\/archway\$request_uri;/, 'without the marker, with the client’s URI');
  assert.match(nginx, new RegExp(`set \\$archway_accel ${location};`), 'the marker names the location');
  assert.match(nginx, /proxy_set_header X-Archway-Accel \$archway_accel;/);
  assert.match(nginx, new RegExp(`server ${archwayAddress.replace(/\./g, '\\.')}:${config.server.port};`), 'nginx reaches archway where it listens');
  assert.match(nginx, /proxy_buffering off;/);
}

describe('deploy/compose-accel', () => {
  const dir = join(root, 'compose-accel');
  const compose = parse(readFileSync(join(dir, 'docker-compose.yml'), 'utf8')) as Doc;
  const config = parseConfig(parse(readFileSync(join(dir, 'archway.yaml'), 'utf8')));
  const nginx = readFileSync(join(dir, 'nginx.conf'), 'utf8');
  const mountOf = (service: string, volume: string) =>
    (compose.services[service].volumes as string[]).map((v) => v.split(':')).find(([name]) => name === volume);

  it('archway and nginx agree on the location, the cache volume and archway’s address', () => {
    const archwayCache = mountOf('archway', 'cache');
    const nginxCache = mountOf('nginx', 'cache');
    assert.equal(archwayCache?.[1], config.cache.dir, 'archway writes its cache to the volume');
    assert.ok(nginxCache, 'nginx mounts the same volume');
    assert.equal(nginxCache[2], 'ro', 'read-only for nginx');
    checkPair(nginx, config, nginxCache[1]!, 'archway');
  });

  it('clients reach nginx, not archway; archway trusts the compose network', () => {
    const [published] = compose.services.nginx.ports as string[];
    assert.match(nginx, new RegExp(`listen ${published!.split(':')[1]};`));
    assert.equal(compose.services.archway.ports, undefined);
    assert.ok(new CidrSet(config.server.trustedProxies).has('172.18.0.2'), 'a compose network address');
  });
});

describe('deploy/kubernetes-accel', () => {
  const dir = join(root, 'kubernetes-accel');
  const read = (file: string): Doc[] => parseAllDocuments(readFileSync(join(dir, file), 'utf8')).map((d) => d.toJS() as Doc);
  const kustomization = read('kustomization.yaml')[0]!;
  const resources = (kustomization.resources as string[]).filter((r) => !r.startsWith('..'));
  const patches = (kustomization.patches as Array<{ path: string }>).map((p) => p.path);
  const docs = [...resources, ...patches].flatMap(read);
  const find = (kind: string, name?: string) => docs.find((d) => d.kind === kind && (name === undefined || d.metadata?.name === name));
  const base = parseAllDocuments(readFileSync(join(root, 'kubernetes', 'deployment.yaml'), 'utf8'))[0]!.toJS() as Doc;
  const pod = find('Deployment', base.metadata.name)!.spec.template.spec as Doc;
  const sidecar = (pod.containers as Doc[]).find((c) => c.name === 'nginx')!;
  const config = parseConfig(parse(find('ConfigMap', 'archway-config')!.data['archway.yaml'] as string));
  const nginxConfigMap = find('ConfigMap', (pod.volumes as Doc[]).find((v) => v.name === 'nginx-config')!.configMap.name)!;
  const nginx = nginxConfigMap.data['nginx.conf'] as string;

  it('lists every file of the overlay, over deploy/kubernetes', () => {
    const files = readdirSync(dir).filter((f) => f.endsWith('.yaml') && f !== 'kustomization.yaml').sort();
    assert.deepEqual([...resources, ...patches].sort(), files);
    assert.ok((kustomization.resources as string[]).includes('../kubernetes'));
  });

  it('the sidecar reads the cache volume archway writes, read-only, and its config where it is started with', () => {
    const archway = (base.spec.template.spec.containers as Doc[])[0]!;
    const cacheVolume = (archway.volumeMounts as Doc[]).find((m) => m.mountPath === config.cache.dir)!.name as string;
    const mount = (sidecar.volumeMounts as Doc[]).find((m) => m.name === cacheVolume)!;
    assert.equal(mount.readOnly, true);
    checkPair(nginx, config, mount.mountPath as string, '127.0.0.1');
    const confMount = (sidecar.volumeMounts as Doc[]).find((m) => m.name === 'nginx-config')!;
    const command = sidecar.command as string[];
    assert.equal(command[command.indexOf('-c') + 1], `${confMount.mountPath}/nginx.conf`);
  });

  it('the Service goes to nginx; archway trusts the pod’s loopback, where nginx connects from', () => {
    const front = (sidecar.ports as Doc[]).find((p) => p.name === 'front')!;
    assert.match(nginx, new RegExp(`listen ${front.containerPort};`));
    assert.equal(find('Service', 'archway')!.spec.ports[0].targetPort, 'front');
    assert.ok(new CidrSet(config.server.trustedProxies).has('127.0.0.1'));
    assert.match(nginx, /pid \/tmp\//, 'nginx writes only under /tmp (read-only root filesystem)');
  });
});
