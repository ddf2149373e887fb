// ESLint: typescript-eslint's recommended rules, no import cycles, and the
// layering of src/ (docs/architecture.md): a folder imports only from the
// folders below it. Run by `npm test` before the tests.
import importX from 'eslint-plugin-import-x';
import tseslint from 'typescript-eslint';

/**
 * src/ from the top down. Each entry may import from the entries after it,
 * never from one before it. Entries on one line (an array) are side by side:
 * they may not import each other either.
 */
const LAYERS = [
  'main.ts',
  'cli',
  'server.ts',
  'app.ts',
  'services.ts',
  'generation.ts',
  'stores.ts',
  ['http', 'admin'],
  'inspect',
  ['virtual', 'local'],
  'registry',
  'coordination',
  'fill',
  'store',
  'routing',
  'upstream',
  'access',
  'config',
  'platform',
  'oci',
  ['observability', 'util', 'errors.ts'],
];

const path = (entry) => `./src/${entry}`;

/** For each entry: the entries above it (and beside it) are out of bounds. */
function layerZones() {
  const zones = [];
  const levels = LAYERS.map((l) => (Array.isArray(l) ? l : [l]));
  levels.forEach((level, i) => {
    const above = levels.slice(0, i).flat();
    for (const entry of level) {
      const beside = level.filter((e) => e !== entry);
      const from = [...above, ...beside];
      if (from.length === 0) continue;
      zones.push({
        target: path(entry),
        from: from.map(path),
        message: `src/${entry} sits below these in the layering (docs/architecture.md): dependencies point down`,
      });
    }
  });
  return zones;
}

export default tseslint.config(
  { ignores: ['dist/**', 'node_modules/**'] },
  // TypeScript's rules for the TypeScript sources (a .cjs harness file loads with require()).
  ...tseslint.configs.recommended.map((c) => ({ ...c, files: ['**/*.ts'] })),
  {
    files: ['**/*.ts'],
    plugins: { 'import-x': importX },
    settings: {
      'import-x/resolver': { node: { extensions: ['.ts', '.js'] } },
      'import-x/extensions': ['.ts', '.js'],
    },
    rules: {
      'import-x/no-cycle': ['error', { ignoreExternal: true }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
    },
  },
  {
    files: ['src/**/*.ts'],
    rules: {
      'import-x/no-restricted-paths': ['error', { zones: layerZones() }],
    },
  },
);
