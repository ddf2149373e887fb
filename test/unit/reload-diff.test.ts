// What a reload says it changed, and which changes it refuses (restart-only fields).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseConfig } from '../../src/config/load.ts';
import { configChanges, restartOnlyChanges } from '../../src/config/reload-diff.ts';

const base = {
  cache: { dir: '/tmp/archway-diff' },
  upstreams: { 'docker.io': { url: 'https://registry-1.docker.io' }, 'quay.io': { url: 'https://quay.io' } },
  defaultUpstream: 'docker.io',
  server: { ports: [5001] },
};
const config = (extra: Record<string, unknown> = {}) => parseConfig({ ...base, ...extra });

describe('reload diff', () => {
  it('names nothing when nothing changed', () => {
    assert.deepEqual(configChanges(config(), config()), []);
    assert.deepEqual(restartOnlyChanges(config(), config()), []);
  });

  it('names added, removed and changed upstreams, virtual images, rules and listeners', () => {
    const next = config({
      upstreams: { 'docker.io': { url: 'https://mirror.example.com' }, 'ghcr.io': { url: 'https://ghcr.io' } },
      server: { ports: [5002] },
      platform: { rules: [{ match: { port: 5002 }, platform: 'linux/arm64', mode: 'resolve' }] },
      virtual: { 'multi/node': { members: { 'linux/amd64': 'amd64/node' } } },
      limits: { backgroundFills: 2 },
    });
    assert.deepEqual(configChanges(config(), next), [
      'upstreams: +ghcr.io -quay.io ~docker.io',
      'platform rules',
      'virtual: +multi/node',
      'limits',
      'listeners: +5002 -5001',
    ]);
  });

  it('refuses changes only a restart can make, naming each field', () => {
    const next = config({ cache: { dir: '/tmp/elsewhere', maxSize: '1GiB' }, server: { port: 6000, ports: [5001], trustedProxies: ['10.0.0.1'] } });
    assert.deepEqual(restartOnlyChanges(config(), next), ['server.port', 'server.trustedProxies', 'cache']);
    const https = config({ server: { ports: [5001], tls: { cert: '/c.pem', key: '/k.pem' } } });
    assert.deepEqual(restartOnlyChanges(config(), https), ['server.tls'], 'HTTPS on or off is another listener');
    const otherCert = config({ server: { ports: [5001], tls: { cert: '/c2.pem', key: '/k2.pem' } } });
    assert.deepEqual(restartOnlyChanges(https, otherCert), [], 'other certificate files are fine');
  });

  it('local namespaces reload; the local store’s bound does not', () => {
    const auth = { tokens: [{ name: 'ci', token: 'x'.repeat(16) }] };
    const before = config({ auth, local: { namespaces: [{ repositories: ['team/**'], push: ['ci'] }] } });
    const more = config({ auth, local: { namespaces: [{ repositories: ['team/**', 'ops/**'], push: ['ci'] }] } });
    assert.deepEqual(restartOnlyChanges(before, more), []);
    assert.ok(configChanges(before, more).includes('local'));
    assert.deepEqual(restartOnlyChanges(before, config({ auth, local: { namespaces: [{ repositories: ['team/**'], push: ['ci'] }], maxSize: '2GiB' } })), ['local.maxSize']);
  });
});
