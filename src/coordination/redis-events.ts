import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import { ClusterEventHandlers, type ClusterEventHandler, type ClusterEventKind, type ClusterEventMap, type ClusterEvents } from '../store/cluster-events.ts';
import { CLUSTER_EVENT_SCHEMAS, isClusterEventKind } from './cluster-event-schemas.ts';

/** A message on the channel: who sent it (to know our own echo), and the event. */
interface Envelope {
  from: string;
  kind: string;
  event: unknown;
}

/** Bigger messages are not archway's (a purge of a whole repository is a few kilobytes per hundred tags). */
const MAX_MESSAGE_BYTES = 8 * 1024 * 1024;

/**
 * Cluster events over Redis pub/sub: PUBLISH on the commands connection, a
 * dedicated subscriber connection (a subscribed connection can do nothing
 * else) that follows the same primary, through Sentinel failovers too.
 * Handlers here run at publish time (not on the echo), so this replica
 * acts at once even if Redis is away. Pub/sub keeps nothing for a
 * subscriber that is not connected: each time the subscriber connection is
 * back after a loss (a restart, a failover), `onGap` handlers run.
 */
export class RedisClusterEvents implements ClusterEvents {
  readonly shared = true;
  private readonly id = randomUUID();
  private readonly handlers: ClusterEventHandlers;
  private readonly subscriber: Redis;
  /** The subscription held once and lost since: the next one is after a gap. */
  private lost = false;
  private subscribed = false;
  private closed = false;

  constructor(
    private readonly redis: Redis,
    private readonly channel: string,
    private readonly logger: Logger,
  ) {
    this.handlers = new ClusterEventHandlers((err, kind) => logger.error({ err, kind }, 'cluster event handler failed'));
    // Its own connection, with the same target and options (sentinels included); subscribed by hand on every ready.
    this.subscriber = redis.duplicate({ autoResubscribe: false });
    this.subscriber.on('error', () => {}); // the commands connection reports Redis being away
    this.subscriber.on('ready', () => void this.listen());
    this.subscriber.on('reconnecting', () => {
      if (this.subscribed) this.lost = true;
      this.subscribed = false;
    });
    this.subscriber.on('messageBuffer', (channel: Buffer, message: Buffer) => {
      if (channel.toString() === this.channel) this.receive(message);
    });
  }

  async publish<K extends ClusterEventKind>(kind: K, event: ClusterEventMap[K]): Promise<void> {
    this.handlers.deliver(kind, event, { self: true });
    const envelope: Envelope = { from: this.id, kind, event };
    try {
      await this.redis.publish(this.channel, JSON.stringify(envelope));
    } catch (err) {
      // The others will be told of a gap when they reconnect only if they were cut off too; say so for the operator.
      this.logger.warn({ err: (err as Error).message, kind }, 'cluster event not delivered to the other replicas (redis unreachable)');
    }
  }

  subscribe<K extends ClusterEventKind>(kind: K, handler: ClusterEventHandler<K>): () => void {
    return this.handlers.add(kind, handler);
  }

  onGap(handler: () => void): () => void {
    return this.handlers.addGap(handler);
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.subscriber.quit().catch(() => this.subscriber.disconnect());
  }

  private async listen(): Promise<void> {
    if (this.closed) return;
    try {
      await this.subscriber.subscribe(this.channel);
    } catch {
      return; // lost again at once: the next ready tries again
    }
    this.subscribed = true;
    if (this.lost) {
      this.lost = false;
      this.logger.info('cluster events resumed; dropping what events missed meanwhile would have invalidated');
      this.handlers.gap();
    }
  }

  private receive(message: Buffer): void {
    if (message.length > MAX_MESSAGE_BYTES) return;
    let envelope: Envelope;
    try {
      envelope = JSON.parse(message.toString('utf8')) as Envelope;
    } catch {
      return;
    }
    if (typeof envelope !== 'object' || envelope === null || envelope.from === this.id) return;
    if (!isClusterEventKind(envelope.kind)) return; // a kind from a newer archway: not for us
    this.deliverParsed(envelope.kind, envelope.event);
  }

  private deliverParsed<K extends ClusterEventKind>(kind: K, raw: unknown): void {
    const parsed = CLUSTER_EVENT_SCHEMAS[kind].safeParse(raw);
    if (!parsed.success) {
      this.logger.warn({ kind }, 'ignored a malformed cluster event');
      return;
    }
    this.handlers.deliver(kind, parsed.data, { self: false });
  }
}
