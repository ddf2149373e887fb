import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { LineCounter, YAMLError, parse as parseYaml } from 'yaml';
import { configSchema, type Config } from './schema.ts';

/** A config that cannot start archway; main.ts prints it and exits 2. */
export class ConfigError extends Error {
  override name = 'ConfigError';

  constructor(
    message: string,
    /** One line per wrong field, `path: what is wrong` (what a reload answers with). */
    readonly issues: readonly string[] = [message],
  ) {
    super(message);
  }
}

/** Validate a parsed config object. Relative paths resolve against `baseDir`. */
export function parseConfig(raw: unknown, baseDir = process.cwd()): Readonly<Config> {
  const result = configSchema.safeParse(raw ?? {});
  if (!result.success) {
    const issues = result.error.issues.map((i) => `${i.path.length ? i.path.join('.') : '(top level)'}: ${i.message}`);
    throw new ConfigError(`invalid configuration:\n${issues.map((l) => `  ${l}`).join('\n')}`, issues);
  }
  const config = result.data;
  config.cache.dir = resolve(baseDir, config.cache.dir);
  return deepFreeze(config);
}

/** Load the YAML file named by --config or ARCHWAY_CONFIG. */
export function loadConfigFile(path: string): Readonly<Config> {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw new ConfigError(`cannot read config file ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const raw = parseYamlText(path, text);
  // cache.dir and friends are relative to where archway runs, as users expect of ./data.
  return parseConfig(raw);
}

/**
 * The yaml package's messages quote the offending line (and some name a key
 * or an alias): a password may be on it. Only the position and the error's
 * code, turned into words, leave this function.
 */
function parseYamlText(path: string, text: string): unknown {
  const lineCounter = new LineCounter();
  try {
    // logLevel error: yaml's warnings go to the console and may quote the file too.
    return parseYaml(text, { lineCounter, prettyErrors: false, logLevel: 'error' });
  } catch (e) {
    if (!(e instanceof YAMLError)) throw new ConfigError(`config file ${path} is not valid YAML`);
    const { line, col } = lineCounter.linePos(e.pos[0]);
    throw new ConfigError(`config file ${path} is not valid YAML at line ${line}, column ${col}: ${e.code.toLowerCase().replaceAll('_', ' ')}`);
  }
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v);
    Object.freeze(o);
  }
  return o;
}
