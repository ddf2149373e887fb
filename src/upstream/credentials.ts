import { readFileSync } from 'node:fs';
import type { UpstreamConfig } from '../config/schema.ts';
import { ConfigError } from '../config/load.ts';
import type { Credentials } from './auth.ts';

/** The upstream's credentials, with the password from the config, a file or the environment. */
export function resolveCredentials(name: string, upstream: UpstreamConfig, env: NodeJS.ProcessEnv = process.env): Credentials | undefined {
  if (!upstream.username) return undefined;
  let password = upstream.password;
  if (upstream.passwordFile) {
    try {
      password = readFileSync(upstream.passwordFile, 'utf8').replace(/\r?\n$/, '');
    } catch (e) {
      throw new ConfigError(`upstreams.${name}.passwordFile: cannot read ${upstream.passwordFile} (${(e as NodeJS.ErrnoException).code})`);
    }
  }
  if (upstream.passwordEnv) {
    password = env[upstream.passwordEnv];
    if (password === undefined) throw new ConfigError(`upstreams.${name}.passwordEnv: environment variable ${upstream.passwordEnv} is not set`);
  }
  return { username: upstream.username, password: password ?? '' };
}
