import { z } from 'zod';
import { parseDigest, type Digest } from '../oci/digest.ts';
import type { ClusterEventKind, ClusterEventMap } from '../store/cluster-events.ts';

const digest = z.string().transform((v, ctx): Digest => {
  try {
    return parseDigest(v);
  } catch {
    ctx.addIssue({ code: 'custom', message: 'not a digest' });
    return z.NEVER;
  }
});

/**
 * What an event of each kind must look like when it arrives from another
 * replica: messages on the channel are parsed, never trusted (an older or
 * newer archway, or something else publishing there). A kind added to
 * ClusterEventMap fails to compile until it has its schema here.
 */
export const CLUSTER_EVENT_SCHEMAS: { [K in ClusterEventKind]: z.ZodType<ClusterEventMap[K], unknown> } = {
  purge: z.object({
    upstream: z.string(),
    repository: z.string(),
    tags: z.array(z.string()).max(100_000),
    manifests: z.array(digest).max(100_000),
  }),
  reload: z.object({ by: z.string().max(300) }),
  'local-changed': z.object({ repository: z.string().max(1024), tag: z.string().max(128).optional(), deletedManifests: z.array(digest).max(100_000) }),
};

export function isClusterEventKind(kind: unknown): kind is ClusterEventKind {
  return typeof kind === 'string' && Object.hasOwn(CLUSTER_EVENT_SCHEMAS, kind);
}
