// Plain HTTP requests against archway, with the body read whole.
import { request, type Dispatcher } from 'undici';

export interface HttpAnswer {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
  json<T = unknown>(): T;
}

export async function http(
  url: string,
  opts: {
    method?: 'GET' | 'HEAD' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
    headers?: Record<string, string>;
    body?: string;
    /** e.g. `new Agent({ localAddress: "127.0.0.5" })`, to send from another loopback address (undici ignores connect.localAddress). */
    dispatcher?: Dispatcher;
  } = {},
): Promise<HttpAnswer> {
  const res = await request(url, {
    method: opts.method ?? 'GET',
    headers: opts.headers ?? {},
    ...(opts.body !== undefined ? { body: opts.body } : {}),
    ...(opts.dispatcher !== undefined ? { dispatcher: opts.dispatcher } : {}),
  });
  const body = Buffer.from(await res.body.arrayBuffer());
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(res.headers)) if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(', ') : v;
  return { status: res.statusCode, headers, body, json: <T>() => JSON.parse(body.toString('utf8')) as T };
}

/** Accept headers as real clients send them. */
export const ACCEPT = {
  /** docker, containerd: everything */
  all: [
    'application/vnd.oci.image.index.v1+json',
    'application/vnd.docker.distribution.manifest.list.v2+json',
    'application/vnd.oci.image.manifest.v1+json',
    'application/vnd.docker.distribution.manifest.v2+json',
  ].join(', '),
  /** an old client that cannot read indexes */
  imagesOnly: 'application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json',
};
