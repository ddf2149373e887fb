import { createHash } from 'node:crypto';
import { RegistryError } from '../errors.ts';

/** The algorithms a digest may name, with the length of their hex encoding. */
const ALGORITHMS = { sha256: 64, sha512: 128 } as const;
export type DigestAlgorithm = keyof typeof ALGORITHMS;

/** A validated content digest, `algorithm:hex`. Branded so raw strings cannot slip in. */
export type Digest = string & { readonly __digest: unique symbol };

const DIGEST_SHAPE = /^([a-z0-9]+(?:[.+_-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/;

export function isDigestLike(s: string): boolean {
  return s.includes(':');
}

/** Parse a digest; anything else is DIGEST_INVALID (unknown algorithms included). */
export function parseDigest(s: string): Digest {
  const m = DIGEST_SHAPE.exec(s);
  if (!m) throw new RegistryError('DIGEST_INVALID', 'invalid digest', { detail: { digest: s } });
  const algorithm = m[1] as string;
  const hex = m[2] as string;
  if (!(algorithm in ALGORITHMS)) {
    throw new RegistryError('DIGEST_INVALID', `unsupported digest algorithm ${algorithm}`, { detail: { digest: s } });
  }
  const length = ALGORITHMS[algorithm as DigestAlgorithm];
  if (hex.length !== length || !/^[a-f0-9]+$/.test(hex)) {
    throw new RegistryError('DIGEST_INVALID', 'invalid digest', { detail: { digest: s } });
  }
  return s as Digest;
}

export function digestAlgorithm(d: Digest): DigestAlgorithm {
  return d.slice(0, d.indexOf(':')) as DigestAlgorithm;
}

export function digestHex(d: Digest): string {
  return d.slice(d.indexOf(':') + 1);
}

export function digestOf(bytes: Uint8Array, algorithm: DigestAlgorithm = 'sha256'): Digest {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}` as Digest;
}
