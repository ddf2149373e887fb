import { request } from 'undici';
import type { Config } from '../config/schema.ts';

/** Where the admin commands find a running archway, and the token they show it. */
export interface AdminTarget {
  url: string;
  token: string | undefined;
}

/** --url, else ARCHWAY_URL, else this config's own port on loopback; --token, else ARCHWAY_ADMIN_TOKEN, else admin.token. */
export function adminTarget(config: Readonly<Config>, flags: { url?: string | undefined; token?: string | undefined }): AdminTarget {
  const scheme = config.server.tls ? 'https' : 'http';
  return {
    url: flags.url ?? process.env.ARCHWAY_URL ?? `${scheme}://127.0.0.1:${config.server.port}`,
    token: flags.token ?? (process.env.ARCHWAY_ADMIN_TOKEN || undefined) ?? config.admin.token,
  };
}

/** One admin API call; a non-2xx answer throws with the registry error's code and message. */
export async function adminCall<T>(target: AdminTarget, method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown): Promise<T> {
  const res = await request(new URL(path, target.url), {
    method,
    headers: {
      ...(target.token ? { authorization: `Bearer ${target.token}` } : {}),
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
    },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  const text = await res.body.text();
  if (res.statusCode < 200 || res.statusCode >= 300) throw new Error(`${target.url} answered ${res.statusCode}: ${errorText(text)}`);
  return JSON.parse(text) as T;
}

export function errorText(body: string): string {
  try {
    const first = (JSON.parse(body) as { errors?: Array<{ code?: string; message?: string }> }).errors?.[0];
    if (first) return `${first.code}: ${first.message}`;
  } catch {
    // not the registry's envelope
  }
  return body.slice(0, 200);
}
