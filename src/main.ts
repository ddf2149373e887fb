#!/usr/bin/env node
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import pino from 'pino';
import { buildArchway } from './server.ts';
import { verifyCache } from './cli/cache-verify.ts';
import { adminTarget } from './cli/admin-client.ts';
import { cacheStatsCommand, prefetchCommand, purgeCommand } from './cli/admin-commands.ts';
import { formatReport, inspectImage, type InspectOptions } from './cli/inspect.ts';
import { ConfigError, loadConfigFile } from './config/load.ts';
import type { Config } from './config/schema.ts';

const DEFAULT_CONFIG = 'config/default.yaml';
const USAGE = `usage: archway [serve] [--config FILE]
       archway cache verify [--config FILE]
       archway inspect IMAGE [--url URL] [--token TOKEN] [--json] [--config FILE]
       archway prefetch IMAGE [--platform OS/ARCH[/VARIANT]]... [--all-platforms] [--url URL] [--token TOKEN]
       archway purge REGISTRY/NAME[:TAG|@DIGEST] [--url URL] [--token TOKEN]
       archway cache stats [--json] [--url URL] [--token TOKEN]
The admin commands (prefetch, purge, cache stats) talk to a running archway: --url, else
ARCHWAY_URL, else this config's port on 127.0.0.1; --token, else ARCHWAY_ADMIN_TOKEN, else admin.token.`;

/**
 * The command line. Start-up errors a user can fix exit 2 with the reason;
 * nothing else is printed.
 */
async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    options: {
      config: { type: 'string', short: 'c' },
      help: { type: 'boolean', short: 'h' },
      url: { type: 'string' },
      token: { type: 'string' },
      json: { type: 'boolean' },
      platform: { type: 'string', multiple: true },
      'all-platforms': { type: 'boolean' },
    },
    allowPositionals: true,
  });
  if (values.help) return void process.stdout.write(`${USAGE}\n`);
  const configPath = values.config ?? process.env.ARCHWAY_CONFIG ?? DEFAULT_CONFIG;
  let config: Readonly<Config>;
  try {
    config = loadConfigFile(configPath);
  } catch (err) {
    exitOnConfigError(err);
  }
  const command = positionals.join(' ') || 'serve';
  if (command === 'serve') return serve(config, configPath);
  if (command === 'cache verify') return verify(config);
  if (positionals[0] === 'inspect' && positionals.length === 2) {
    return inspect(config, { image: positionals[1] as string, url: values.url ?? process.env.ARCHWAY_URL, token: values.token ?? process.env.ARCHWAY_TOKEN }, values.json ?? false);
  }
  const admin = adminTarget(config, values);
  if (positionals[0] === 'prefetch' && positionals.length === 2) {
    const platforms = values['all-platforms'] || !values.platform?.length ? 'all' : values.platform;
    return exitWith(() => prefetchCommand(admin, positionals[1] as string, platforms, process.stdout));
  }
  if (positionals[0] === 'purge' && positionals.length === 2) return exitWith(async () => (await purgeCommand(admin, positionals[1] as string, process.stdout), true));
  if (command === 'cache stats') return exitWith(async () => (await cacheStatsCommand(admin, values.json ?? false, process.stdout), true));
  process.stderr.write(`archway: unknown command "${command}"\n${USAGE}\n`);
  process.exit(2);
}

async function serve(config: Readonly<Config>, configPath: string): Promise<void> {
  // Building reads the files the config names (passwords, CAs): their errors are config errors too.
  const archway = await buildArchway(config, { configFile: configPath }).catch(exitOnConfigError);
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
    archway.reload().then(
      ({ changes, generation }) =>
        logger.info({ changes, generation }, `SIGHUP: reloaded ${changes.length ? changes.join(', ') : 'the configuration (nothing changed)'}`),
      (err: unknown) =>
        logger.error(
          { err: (err as Error).message, errors: err instanceof ConfigError ? err.issues : undefined },
          'SIGHUP: reload failed; keeping what was in use',
        ),
    );
  });

  const addresses = await archway.listen();
  logger.info({ addresses, upstreams: Object.keys(config.upstreams), cacheDir: config.cache.dir }, 'archway listening');
}

/** Exit 0: the cache is clean. Exit 1: damaged entries were found (and removed). */
async function verify(config: Readonly<Config>): Promise<void> {
  const report = await verifyCache(config, pino({ level: 'warn' }, pino.destination(2)));
  for (const line of report.removed) process.stdout.write(`removed ${line}\n`);
  process.stdout.write(
    `archway cache verify: ${report.blobs.checked} blobs (${report.blobs.bad} bad), ${report.manifests.checked} manifests (${report.manifests.bad} bad) in ${config.cache.dir}\n`,
  );
  process.exit(report.blobs.bad + report.manifests.bad === 0 ? 0 : 1);
}

/** Exit 0 when the command succeeded, 1 when it failed or could not reach archway (the reason on stderr). */
async function exitWith(command: () => Promise<boolean>): Promise<void> {
  let ok = false;
  try {
    ok = await command();
  } catch (err) {
    process.stderr.write(`archway: ${err instanceof Error ? err.message : String(err)}\n`);
  }
  process.exit(ok ? 0 : 1);
}

/** Exit 0 with the report; exit 1 with the reason when the image cannot be inspected. */
async function inspect(config: Readonly<Config>, opts: InspectOptions, json: boolean): Promise<void> {
  try {
    const report = await inspectImage(config, opts);
    process.stdout.write(`${json ? JSON.stringify(report, null, 2) : formatReport(report)}\n`);
  } catch (err) {
    process.stderr.write(`archway inspect: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(1);
  }
  process.exit(0);
}

function exitOnConfigError(err: unknown): never {
  if (err instanceof ConfigError) {
    process.stderr.write(`archway: ${err.message}\n`);
    process.exit(2);
  }
  throw err;
}

main().catch((err: unknown) => {
  process.stderr.write(`archway: failed: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
