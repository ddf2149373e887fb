import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { RegistryError } from '../../src/errors.ts';
import { Router } from '../../src/routing/router.ts';
import type { Upstream } from '../../src/upstream/upstream.ts';

const client = (name: string) => ({ name }) as Upstream;
const router = new Router(
  new Map([
    ['docker.io', { client: client('docker.io'), aliases: ['index.docker.io', 'registry-1.docker.io'] }],
    ['ghcr.io', { client: client('ghcr.io'), aliases: [] }],
    ['registry.internal:5443', { client: client('registry.internal:5443'), aliases: [] }],
  ]),
  'docker.io',
);

const where = (name: string, ns?: string) => {
  const r = router.resolve(name, ns);
  return `${r.upstream.name} ${r.repository} ${r.via}`;
};

function refused(name: string, ns?: string): string {
  try {
    router.resolve(name, ns);
  } catch (err) {
    assert.ok(err instanceof RegistryError);
    return `${err.status} ${err.code}`;
  }
  return 'routed';
}

describe('routing', () => {
  it('unqualified names go to the default upstream, with Docker Hub’s library/ rule', () => {
    assert.equal(where('alpine'), 'docker.io library/alpine default');
    assert.equal(where('bitnami/redis'), 'docker.io bitnami/redis default');
  });

  it('?ns= names the registry (containerd mirrors), aliases included', () => {
    assert.equal(where('org/app', 'ghcr.io'), 'ghcr.io org/app ns');
    assert.equal(where('alpine', 'docker.io'), 'docker.io library/alpine ns');
    assert.equal(where('alpine', 'registry-1.docker.io'), 'docker.io library/alpine ns');
    assert.equal(where('alpine', 'INDEX.DOCKER.IO'), 'docker.io library/alpine ns');
  });

  it('a host prefix in the path routes there, with the rest as the name', () => {
    assert.equal(where('ghcr.io/org/app'), 'ghcr.io org/app prefix');
    assert.equal(where('docker.io/library/alpine'), 'docker.io library/alpine prefix');
    assert.equal(where('docker.io/alpine'), 'docker.io library/alpine prefix');
    assert.equal(where('index.docker.io/alpine'), 'docker.io library/alpine prefix');
    assert.equal(where('ghcr.io/app'), 'ghcr.io app prefix', 'the library/ rule is Docker Hub’s alone');
    assert.equal(where('registry.internal:5443/org/app'), 'registry.internal:5443 org/app prefix', 'hosts with a port too');
  });

  it('anything not configured is NAME_UNKNOWN and never the default upstream', () => {
    for (const ns of ['evil.example', '127.0.0.1', '127.0.0.1:6000', 'user:pw@ghcr.io', 'http://ghcr.io', 'ghcr.io.', 'localhost']) {
      assert.equal(refused('org/app', ns), '404 NAME_UNKNOWN', `ns=${ns}`);
    }
    for (const name of ['evil.example/org/app', '169.254.169.254/latest', 'localhost/app', 'quay.io/org/app']) {
      assert.equal(refused(name), '404 NAME_UNKNOWN', name);
    }
  });
});
