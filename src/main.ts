#!/usr/bin/env node
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { buildArchway } from './app.ts';
import { ConfigError, loadConfigFile } from './config/load.ts';

const DEFAULT_CONFIG = 'config/default.yaml';

/** Start-up errors a user can fix exit 2 with the reason; nothing else is printed. */
async function main(): Promise<void> {
  const { values } = parseArgs({ options: { config: { type: 'string', short: 'c' } }, allowPositionals: true });
  const configPath = values.config ?? process.env.ARCHWAY_CONFIG ?? DEFAULT_CONFIG;
  let config: ReturnType<typeof loadConfigFile>;
  try {
    config = loadConfigFile(configPath);
  } catch (err) {
    exitOnConfigError(err);
  }
  // Building reads the files the config names (passwords, CAs): their errors are config errors too.
  const archway = await buildArchway(config).catch(exitOnConfigError);
  const { logger } = archway;
  const shutdown = async (signal: string) => {
    logger.info({ signal }, 'shutting down');
    try {
      await archway.close();
      // Fills stopped by shutdown leave temp files; none may outlive the process.
      await rm(join(config.cache.dir, 'tmp'), { recursive: true, force: true });
    } catch (err) {
      logger.error({ err }, 'error during shutdown');
    }
    process.exit(0);
  };
  process.once('SIGTERM', () => void shutdown('SIGTERM'));
  process.once('SIGINT', () => void shutdown('SIGINT'));
  process.on('SIGHUP', () => {
    if (!config.server.tls) return logger.info('SIGHUP: nothing to reload (no server.tls)');
    try {
      archway.reloadTls();
      logger.info('reloaded TLS certificate');
    } catch (err) {
      logger.error({ err: (err as Error).message }, 'TLS reload failed; keeping the current certificate');
    }
  });

  const addresses = await archway.listen();
  logger.info({ addresses, upstreams: Object.keys(config.upstreams), cacheDir: config.cache.dir }, 'archway listening');
}

function exitOnConfigError(err: unknown): never {
  if (err instanceof ConfigError) {
    process.stderr.write(`archway: ${err.message}\n`);
    process.exit(2);
  }
  throw err;
}

main().catch((err: unknown) => {
  process.stderr.write(`archway: failed to start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
