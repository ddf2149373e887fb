import type { RequestListener, Server } from 'node:http';
import { hostname } from 'node:os';
import type { Server as HttpsServer } from 'node:https';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { createHttpApp } from './app.ts';
import { ConfigError, loadConfigFile } from './config/load.ts';
import { configChanges, restartOnlyChanges } from './config/reload-diff.ts';
import type { Config } from './config/schema.ts';
import { answerClientError, applyListenerSettings, closeGracefully, createListener, type ListenerSettings } from './http/listener.ts';
import { refuseConnect } from './http/request-hygiene.ts';
import { StalledClients } from './http/stalled-clients.ts';
import { loadTlsPair } from './http/tls.ts';
import type { Metrics } from './observability/metrics.ts';
import { createServices, type Services, type ServicesOptions } from './services.ts';

/** What a reload did: `changes` in words (`upstreams: +ghcr.io`, `listeners: +5001`, `TLS certificate`), for the log line and the admin answer. */
export interface ReloadResult {
  /** The generation now in use (1 is the configuration archway started with). */
  generation: number;
  changes: string[];
  /** Whether the other replicas sharing this cache were told to reload theirs (the admin API's reload). */
  toldReplicas?: boolean;
}

export interface Archway {
  app: FastifyInstance;
  services: Services;
  metrics: Metrics;
  logger: Logger;
  /** Listen on server.port (or `port`) and every server.ports; returns the addresses. */
  listen(port?: number): Promise<string[]>;
  /**
   * SIGHUP and `POST /_archway/reload`: read the whole configuration again
   * (`next`, else the config file, else the configuration in use with the
   * files it names) and put it in use for new requests, atomically; requests
   * in flight finish under the one they began with. Listeners of
   * server.ports open and close to match. Throws a ConfigError naming each
   * wrong field (or each restart-only field it changes), and then nothing
   * changed. One reload runs at a time.
   */
  reload(next?: Readonly<Config>): Promise<ReloadResult>;
  /** Stop accepting, let in-flight responses finish (bounded), stop fills, release upstream connections. */
  close(): Promise<void>;
}

export interface ArchwayOptions extends ServicesOptions {
  /** The file `reload()` reads (main.ts: --config). */
  configFile?: string;
}

/** The services, the HTTP app over them, and the listeners: archway as `archway serve` runs it. */
export async function buildArchway(config: Readonly<Config>, opts: ArchwayOptions = {}): Promise<Archway> {
  const services = await createServices(config, opts);
  try {
    return await createServer(services, opts);
  } catch (err) {
    await services.close();
    throw err;
  }
}

function listenerSettings(config: Readonly<Config>, metrics: Metrics): ListenerSettings {
  return {
    tls: config.server.tls,
    headersTimeout: config.timeouts.clientHeaders,
    bodyTimeout: config.timeouts.clientBody,
    keepAliveTimeout: config.timeouts.clientKeepAlive,
    maxConnections: config.server.maxConnections,
    onDropped: () => metrics.clientsDropped.inc({ reason: 'max-connections' }),
  };
}

/**
 * The listeners of an archway: server.port and every server.ports (one
 * fastify handler, HTTPS when configured, the client timeouts and the
 * stalled-client watchdog on each), with graceful close and reload.
 */
export async function createServer(services: Services, opts: Pick<ArchwayOptions, 'configFile'> = {}): Promise<Archway> {
  const { config, metrics, logger } = services;
  const current = () => services.current().config;
  // Extra listeners (server.ports) share fastify's request handler, captured here.
  let handler: RequestListener | undefined;
  const app = await createHttpApp(services, {
    serverFactory: (h) => {
      handler = h;
      return createListener(h, listenerSettings(config, metrics));
    },
    reload: () => reloadEverywhere(),
  });
  const stalled = new StalledClients(config.timeouts.clientIdle, () => metrics.clientsDropped.inc({ reason: 'stalled' }));
  const watch = (server: Server) => {
    refuseConnect(server);
    stalled.attach(server);
  };
  watch(app.server);
  /** server.ports listeners, open or opening, by port. */
  const extras = new Map<number, Server>();
  const scheme = config.server.tls ? 'https' : 'http';
  let listening = false;

  const openExtra = async (port: number, settings: ListenerSettings): Promise<Server> => {
    const server = createListener(handler as RequestListener, settings);
    watch(server);
    // fastify answers client errors on its own listener; the others answer alike.
    server.on('clientError', answerClientError);
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, config.server.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    return server;
  };

  const listen = async (port = config.server.port): Promise<string[]> => {
    const addresses = [await app.listen({ host: config.server.host, port })];
    listening = true;
    const settings = listenerSettings(current(), metrics);
    for (const extraPort of current().server.ports) {
      extras.set(extraPort, await openExtra(extraPort, settings));
      addresses.push(`${scheme}://${config.server.host}:${extraPort}`);
    }
    services.start();
    return addresses;
  };

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      await chain;
      await closeGracefully([app.server, ...extras.values()], current().server.shutdownTimeout, (s) =>
        s === app.server ? app.close() : new Promise<void>((resolve) => (s.listening ? s.close(() => resolve()) : resolve())),
      );
      stalled.stop();
      await services.close();
    })());

  const reloadNow = async (given: Readonly<Config> | undefined): Promise<ReloadResult> => {
    if (closing) throw new Error('archway is shutting down');
    const next = given ?? (opts.configFile ? loadConfigFile(opts.configFile) : current());
    const refused = restartOnlyChanges(config, next);
    if (refused.length) {
      throw new ConfigError(
        `a restart is needed to change ${refused.join(', ')}; nothing was changed`,
        refused.map((field) => `${field}: changes only with a restart`),
      );
    }
    const previous = current();
    const settings = listenerSettings(next, metrics);
    const tls = next.server.tls ? loadTlsPair(next.server.tls) : undefined;
    const pending = services.prepare(next);
    const added = listening ? next.server.ports.filter((p) => !extras.has(p)) : [];
    const removed = [...extras.keys()].filter((p) => !next.server.ports.includes(p));
    const opened: Array<[number, Server]> = [];
    for (const port of added) {
      try {
        opened.push([port, await openExtra(port, settings)]);
      } catch (err) {
        await closeGracefully(opened.map(([, s]) => s), 0);
        await pending.abandon();
        throw new ConfigError(`server.ports: cannot listen on ${port} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
      }
    }
    // Nothing below fails: the new configuration goes in use as a whole.
    for (const [port, server] of opened) extras.set(port, server);
    for (const server of [app.server, ...extras.values()]) {
      applyListenerSettings(server, settings);
      // New connections get the new certificate; open ones keep theirs.
      if (tls) (server as HttpsServer).setSecureContext(tls);
    }
    stalled.setIdle(next.timeouts.clientIdle);
    const notes = pending.commit();
    for (const port of removed) {
      const server = extras.get(port) as Server;
      extras.delete(port);
      void closeGracefully([server], next.server.shutdownTimeout);
    }
    return { generation: pending.generation.id, changes: [...(tls ? ['TLS certificate'] : []), ...notes, ...configChanges(previous, next)] };
  };
  // SIGHUP and the admin API may ask at once: one reload after the other, each against the last.
  let chain: Promise<unknown> = Promise.resolve();
  const reload = (next?: Readonly<Config>): Promise<ReloadResult> => {
    const run = chain.then(() => reloadNow(next));
    chain = run.then(
      () => metrics.configReloads.inc({ outcome: 'applied' }),
      () => metrics.configReloads.inc({ outcome: 'refused' }),
    );
    return run;
  };

  // The admin API's reload is one call for every replica sharing the cache: once this
  // one has put its file in use, the others reload their own files (a file that does not
  // validate here tells nobody). A SIGHUP is for its own process only.
  const events = services.stores.events;
  const self = `${hostname()}:${process.pid}`;
  const reloadEverywhere = async (): Promise<ReloadResult> => {
    const result = await reload();
    if (events.shared) await events.publish('reload', { by: self });
    return { ...result, toldReplicas: events.shared };
  };
  const stopHearing = events.subscribe('reload', ({ by }, origin) => {
    if (origin.self) return;
    reload().then(
      ({ generation, changes }) => logger.info({ by, generation, changes }, `reload asked by ${by}: ${changes.length ? changes.join(', ') : 'no changes'}`),
      (err: Error) => logger.error({ by, errors: err instanceof ConfigError ? err.issues : [err.message] }, `reload asked by ${by} refused; keeping what was in use`),
    );
  });
  const closeAll = async () => {
    stopHearing();
    await close();
  };

  return { app, services, metrics, logger, listen, close: closeAll, reload };
}
