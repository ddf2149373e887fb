import type { RequestListener, Server } from 'node:http';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { createHttpApp } from './app.ts';
import type { Config } from './config/schema.ts';
import { answerClientError, createListener, type ListenerSettings } from './http/listener.ts';
import { refuseConnect } from './http/request-hygiene.ts';
import { StalledClients } from './http/stalled-clients.ts';
import { reloadTls } from './http/tls.ts';
import type { Metrics } from './observability/metrics.ts';
import { createServices, type Services, type ServicesOptions } from './services.ts';

export interface Archway {
  app: FastifyInstance;
  services: Services;
  metrics: Metrics;
  logger: Logger;
  /** Listen on server.port (or `port`) and every server.ports; returns the addresses. */
  listen(port?: number): Promise<string[]>;
  /**
   * SIGHUP: re-read server.tls certificate and key and the auth.htpasswd file.
   * Returns what was reloaded; throws (keeping what was in use) on a bad file.
   */
  reload(): string[];
  /** Stop accepting, let in-flight responses finish (bounded), stop fills, release upstream connections. */
  close(): Promise<void>;
}

/** The services, the HTTP app over them, and the listeners: archway as `archway serve` runs it. */
export async function buildArchway(config: Readonly<Config>, opts: ServicesOptions = {}): Promise<Archway> {
  const services = await createServices(config, opts);
  try {
    return await createServer(services);
  } catch (err) {
    await services.close();
    throw err;
  }
}

/**
 * The listeners of an archway: server.port and every server.ports (one
 * fastify handler, HTTPS when configured, the client timeouts and the
 * stalled-client watchdog on each), with graceful close and SIGHUP reload.
 */
export async function createServer(services: Services): Promise<Archway> {
  const { config, metrics, logger } = services;
  const settings: ListenerSettings = {
    tls: config.server.tls,
    headersTimeout: config.timeouts.clientHeaders,
    bodyTimeout: config.timeouts.clientBody,
    keepAliveTimeout: config.timeouts.clientKeepAlive,
    maxConnections: config.server.maxConnections,
    onDropped: () => metrics.clientsDropped.inc({ reason: 'max-connections' }),
  };
  // Extra listeners (server.ports) share fastify's request handler, captured here.
  let handler: RequestListener | undefined;
  const app = await createHttpApp(services, {
    serverFactory: (h) => {
      handler = h;
      return createListener(h, settings);
    },
  });
  const extras = config.server.ports.map((port) => ({ port, server: createListener(handler as RequestListener, settings) }));
  const servers: Server[] = [app.server, ...extras.map((e) => e.server)];
  const stalled = new StalledClients(config.timeouts.clientIdle, () => metrics.clientsDropped.inc({ reason: 'stalled' }));
  for (const server of servers) {
    refuseConnect(server);
    stalled.attach(server);
  }
  // fastify answers client errors on its own listener; the others answer alike.
  for (const { server } of extras) server.on('clientError', answerClientError);
  const scheme = config.server.tls ? 'https' : 'http';

  const listen = async (port = config.server.port): Promise<string[]> => {
    const addresses = [await app.listen({ host: config.server.host, port })];
    for (const extra of extras) {
      await new Promise<void>((resolve, reject) => {
        extra.server.once('error', reject);
        extra.server.listen(extra.port, config.server.host, () => resolve());
      });
      addresses.push(`${scheme}://${config.server.host}:${extra.port}`);
    }
    services.start();
    return addresses;
  };

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      // Connections busy at close become idle when their response ends: close them then,
      // and cut whatever is still running when the bounded wait is over.
      const idle = setInterval(() => servers.forEach((s) => s.closeIdleConnections()), 100);
      const timer = setTimeout(() => servers.forEach((s) => s.closeAllConnections()), config.server.shutdownTimeout);
      try {
        await Promise.all([app.close(), ...extras.map((e) => (e.server.listening ? new Promise<void>((resolve) => e.server.close(() => resolve())) : undefined))]);
      } finally {
        clearInterval(idle);
        clearTimeout(timer);
      }
      stalled.stop();
      await services.close();
    })());

  const reload = (): string[] => {
    const done: string[] = [];
    // Both read before either is swapped in: a bad file changes nothing.
    const useUsers = services.prepareUserReload();
    if (config.server.tls) {
      reloadTls(servers, config.server.tls);
      done.push('TLS certificate');
    }
    done.push(...useUsers());
    return done;
  };

  return { app, services, metrics, logger, listen, close, reload };
}
