// The scale-out examples (deploy/compose-replicas, deploy/kubernetes-replicas)
// hang together: names, ports, mounts and the archway config they carry,
// validated with archway's own config schema.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { parse, parseAllDocuments } from 'yaml';
import { parseConfig } from '../../src/config/load.ts';

const root = join(import.meta.dirname, '..', '..', 'deploy');
type Doc = Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any -- free-form YAML under test

describe('deploy/compose-replicas', () => {
  const dir = join(root, 'compose-replicas');
  const compose = parse(readFileSync(join(dir, 'docker-compose.yml'), 'utf8')) as Doc;
  const config = parseConfig(parse(readFileSync(join(dir, 'archway.yaml'), 'utf8')));
  const nginx = readFileSync(join(dir, 'nginx.conf'), 'utf8');
  const replicas = Object.keys(compose.services).filter((s) => s.startsWith('archway-'));

  it('runs three replicas of one image with the same config file', () => {
    assert.equal(replicas.length, 3);
    for (const r of replicas) {
      const service = compose.services[r] as Doc;
      assert.deepEqual(service.command, ['--config', '/etc/archway/archway.yaml'], r);
      assert.ok((service.volumes as string[]).includes('./archway.yaml:/etc/archway/archway.yaml:ro'), r);
    }
  });

  it('balances over exactly those replicas on the port archway listens on', () => {
    const servers = [...nginx.matchAll(/server (archway-\d+):(\d+)/g)];
    assert.deepEqual(servers.map((m) => m[1]).sort(), replicas.sort());
    for (const m of servers) assert.equal(Number(m[2]), config.server.port);
    assert.match(nginx, /proxy_buffering off/);
  });

  it('points archway at the compose services for the bucket and Redis', () => {
    assert.equal(config.storage.type, 's3');
    const s3 = config.storage.s3!;
    assert.ok(compose.services[new URL(s3.endpoint!).hostname], 'the S3 endpoint is a service');
    assert.ok(String(compose.services['minio-bucket'].command).includes(`local/${s3.bucket}`), 'the bucket archway uses is created');
    assert.equal(s3.secretAccessKey, compose.services.minio.environment.MINIO_ROOT_PASSWORD);
    assert.ok(compose.services[new URL(config.redis?.url ?? '').hostname], 'the Redis URL names a service');
  });
});

describe('deploy/kubernetes-replicas', () => {
  const dir = join(root, 'kubernetes-replicas');
  const kustomization = parse(readFileSync(join(dir, 'kustomization.yaml'), 'utf8')) as Doc;
  const docs: Doc[] = (kustomization.resources as string[]).flatMap((file) =>
    parseAllDocuments(readFileSync(join(dir, file), 'utf8')).map((d) => {
      assert.equal(d.errors.length, 0, `${file}: ${d.errors.join(', ')}`);
      return d.toJS() as Doc;
    }),
  );
  const find = (kind: string, name: string) => docs.find((d) => d.kind === kind && d.metadata?.name === name);
  const deployment = find('Deployment', 'archway')!;
  const pod = deployment.spec.template.spec as Doc;
  const container = pod.containers[0] as Doc;
  const configMap = find('ConfigMap', pod.volumes.find((v: Doc) => v.name === 'config').configMap.name)!;
  const config = parseConfig(parse(configMap.data['archway.yaml'] as string));

  it('runs several replicas, each with scratch space at cache.dir and the config mounted where --config points', () => {
    assert.ok(deployment.spec.replicas >= 2);
    const mountOf = (name: string) => container.volumeMounts.find((m: Doc) => m.name === name).mountPath as string;
    assert.equal(mountOf('scratch'), config.cache.dir);
    assert.equal(`${mountOf('config')}/archway.yaml`, container.args[container.args.indexOf('--config') + 1]);
    for (const m of container.volumeMounts as Doc[]) assert.ok((pod.volumes as Doc[]).some((v) => v.name === m.name), m.name);
  });

  it('uses the bucket and the Redis Service of the example, with keys from its Secret', () => {
    assert.equal(config.storage.type, 's3');
    const redis = new URL(config.redis?.url ?? '');
    const redisService = find('Service', redis.hostname);
    assert.ok(redisService, 'the Redis URL names a Service');
    assert.equal(redisService.spec.ports[0].port, Number(redis.port));
    const secret = find('Secret', container.envFrom[0].secretRef.name)!;
    assert.ok(secret.stringData.AWS_ACCESS_KEY_ID && secret.stringData.AWS_SECRET_ACCESS_KEY, 'credentials for the standard AWS chain');
  });

  it('probes /readyz and /healthz and serves the port archway listens on', () => {
    const port = container.ports.find((p: Doc) => p.name === 'http');
    assert.equal(port.containerPort, config.server.port);
    assert.equal(container.readinessProbe.httpGet.path, '/readyz');
    assert.equal(container.livenessProbe.httpGet.path, '/healthz');
    const service = find('Service', 'archway')!;
    assert.equal(service.spec.ports[0].targetPort, 'http');
    assert.deepEqual(service.spec.selector, deployment.spec.template.metadata.labels);
  });
});
