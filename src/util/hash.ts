import { createHash } from 'node:crypto';

/** SHA-256 of a secret, to compare in constant time (timingSafeEqual needs equal lengths). */
export function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}
