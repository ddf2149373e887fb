import type { UpstreamConfig } from '../config/schema.ts';
import { readSecret } from '../config/secrets.ts';
import type { Credentials } from './auth.ts';

/** The upstream's credentials, with the password from the config, a file or the environment. */
export function resolveCredentials(name: string, upstream: UpstreamConfig, env: NodeJS.ProcessEnv = process.env): Credentials | undefined {
  if (!upstream.username) return undefined;
  const password = readSecret(`upstreams.${name}.password`, { value: upstream.password, file: upstream.passwordFile, env: upstream.passwordEnv }, env);
  return { username: upstream.username, password: password ?? '' };
}
