// What a configuration does not use is not loaded: the AWS SDK and ioredis are
// about 40 MiB of a process, and the shipped config (a filesystem cache, no
// Redis) needs neither. They are reached only through `await import()` of
// src/store/s3/s3-modules.ts and src/coordination/redis-modules.ts; this walks
// the static import graph from src/main.ts and fails if any file on it
// imports them statically.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const HEAVY = [/^@aws-sdk\//, /^ioredis$/];

/**
 * The specifiers a module loads when it is loaded: `import ... from 'x'`,
 * `import 'x'` and `export ... from 'x'`, over several lines too. `import type`
 * and `export type` are erased (verbatimModuleSyntax keeps every other import,
 * even one of types only); `import('x')` is dynamic and not followed.
 */
function staticImports(source: string): string[] {
  const found: string[] = [];
  const statement = /^\s*(import|export)\s+(type\s+)?(?:[^'";]*?\s+from\s+)?['"]([^'"]+)['"]/gm;
  for (const m of source.matchAll(statement)) {
    if (m[2]) continue;
    found.push(m[3] as string);
  }
  return found;
}

/** Every source file reached from `entry` by static imports, with what each imports from packages. */
function staticGraph(entry: string): Map<string, string[]> {
  const graph = new Map<string, string[]>();
  const pending = [resolve(ROOT, entry)];
  while (pending.length) {
    const file = pending.pop() as string;
    if (graph.has(file)) continue;
    const packages: string[] = [];
    graph.set(file, packages);
    for (const spec of staticImports(readFileSync(file, 'utf8'))) {
      if (spec.startsWith('.')) pending.push(join(dirname(file), spec));
      else if (!spec.startsWith('node:')) packages.push(spec);
    }
  }
  return graph;
}

describe('lazy loading of what a configuration does not use', () => {
  it('reads static, multi-line and re-exporting imports, and skips type-only and dynamic ones', () => {
    const source = [
      "import { a } from './a.ts';",
      'import {',
      '  b,',
      '  c,',
      "} from '@aws-sdk/client-s3';",
      "import type { D } from 'ioredis';",
      "import './side-effect.ts';",
      "export { e } from './e.ts';",
      "export type { F } from './f.ts';",
      "  const g = await import('./g.ts');",
    ].join('\n');
    assert.deepEqual(staticImports(source), ['./a.ts', '@aws-sdk/client-s3', './side-effect.ts', './e.ts']);
  });

  it('the S3 and Redis modules do import the AWS SDK and ioredis (what the walk below must not reach)', () => {
    const s3 = staticGraph('src/store/s3/s3-modules.ts');
    assert.ok([...s3.values()].flat().some((p) => p.startsWith('@aws-sdk/')));
    const redis = staticGraph('src/coordination/redis-modules.ts');
    assert.ok([...redis.values()].flat().includes('ioredis'));
  });

  it('nothing statically imported from src/main.ts imports the AWS SDK or ioredis', () => {
    const graph = staticGraph('src/main.ts');
    // The walk covers the server: the composition root and the stores are on it.
    for (const f of ['src/server.ts', 'src/services.ts', 'src/stores.ts', 'src/store/fs-blob-store.ts', 'src/cli/cache-verify.ts']) {
      assert.ok(graph.has(resolve(ROOT, f)), `${f} is reached from src/main.ts`);
    }
    const offenders = [...graph].flatMap(([file, packages]) =>
      packages.filter((p) => HEAVY.some((h) => h.test(p))).map((p) => `${relative(ROOT, file)} imports ${p}`),
    );
    assert.deepEqual(offenders, [], 'load these with await import() only when the config uses them');
  });
});
