import { readFileSync } from 'node:fs';
import { ConfigError } from './load.ts';

/**
 * A secret given inline, in a file (a mounted secret) or in an environment
 * variable, so it can stay out of the config file. `field` names it in errors.
 */
export function readSecret(field: string, source: { value?: string | undefined; file?: string | undefined; env?: string | undefined }, env: NodeJS.ProcessEnv = process.env): string | undefined {
  if (source.file) {
    try {
      return readFileSync(source.file, 'utf8').replace(/\r?\n$/, '');
    } catch (e) {
      throw new ConfigError(`${field}File: cannot read ${source.file} (${(e as NodeJS.ErrnoException).code})`);
    }
  }
  if (source.env) {
    const value = env[source.env];
    if (value === undefined) throw new ConfigError(`${field}Env: environment variable ${source.env} is not set`);
    return value;
  }
  return source.value;
}
