// Deterministic pseudo-random bytes: the same seed gives the same layer (so
// digests are reproducible) yet gzip cannot shrink it (so sizes are real).
// AES-256-CTR over zeros is a fast keystream: ~1 GB/s, fine for big layers.
import { createCipheriv, createHash } from 'node:crypto';

export function deterministicBytes(seed: string, size: number): Buffer {
  const key = createHash('sha256').update(`archway-test:${seed}`).digest();
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  return Buffer.concat([cipher.update(Buffer.alloc(size)), cipher.final()]);
}
