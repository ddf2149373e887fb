import { CidrSet } from './cidr.ts';
import { detectPlatform } from './detect.ts';
import { globToRegExp } from './glob.ts';
import { parsePlatform, type Platform } from './platform.ts';

export type PlatformMode = 'passthrough' | 'resolve' | 'filter';

/** What a request needs to be matched against the rules. */
export interface ClientFacts {
  /** The listener port the request arrived on. */
  port: number;
  /** Host header, without the port. */
  host: string | undefined;
  /** Client address (X-Forwarded-For honoured only from trusted proxies). */
  address: string;
  userAgent: string | undefined;
  /** The names the repository goes by: as the client wrote it, at the upstream, and upstream-qualified. */
  repositories: readonly string[];
}

export interface PlatformDecision {
  mode: PlatformMode;
  /** The platform a rewrite answers with, and what a client that cannot read indexes gets. */
  platform: Platform;
  source: 'rule' | 'detected' | 'default';
  /** Index of the matching rule in platform.rules, for logs. */
  rule?: number;
}

export interface PlatformRuleConfig {
  match: { port?: number | undefined; host?: string | undefined; clientCidr?: string | string[] | undefined; userAgent?: string | undefined; repository?: string | undefined };
  platform: string;
  mode: PlatformMode;
}

interface CompiledRule {
  port: number | undefined;
  host: string | undefined;
  cidr: CidrSet | undefined;
  userAgent: RegExp | undefined;
  repository: RegExp | undefined;
  /** undefined: the detected platform. */
  platform: Platform | undefined;
  mode: PlatformMode;
}

/**
 * Decides, per request, which platform a client gets and how: the first rule
 * whose conditions all hold; without one, the index passes through untouched
 * (so `docker pull --platform` and multi-platform builds work) and only
 * clients that cannot read indexes get a platform chosen for them.
 */
export class PlatformPolicy {
  private readonly rules: CompiledRule[];
  private readonly fallback: Platform;

  constructor(config: { default: string; rules: readonly PlatformRuleConfig[] }) {
    this.fallback = parsePlatform(config.default);
    this.rules = config.rules.map((r) => ({
      port: r.match.port,
      host: r.match.host?.toLowerCase(),
      cidr: r.match.clientCidr === undefined ? undefined : new CidrSet(Array.isArray(r.match.clientCidr) ? r.match.clientCidr : [r.match.clientCidr]),
      userAgent: r.match.userAgent === undefined ? undefined : new RegExp(r.match.userAgent),
      repository: r.match.repository === undefined ? undefined : globToRegExp(r.match.repository),
      platform: r.platform === 'detected' ? undefined : parsePlatform(r.platform),
      mode: r.mode,
    }));
  }

  decide(client: ClientFacts): PlatformDecision {
    const detected = detectPlatform(client.userAgent);
    for (const [i, rule] of this.rules.entries()) {
      if (!matches(rule, client)) continue;
      const platform = rule.platform ?? detected;
      // A rule for the detected platform cannot rewrite for a client that reports none.
      if (!platform) return { mode: 'passthrough', platform: this.fallback, source: 'default', rule: i };
      return { mode: rule.mode, platform, source: rule.platform ? 'rule' : 'detected', rule: i };
    }
    return detected ? { mode: 'passthrough', platform: detected, source: 'detected' } : { mode: 'passthrough', platform: this.fallback, source: 'default' };
  }
}

function matches(rule: CompiledRule, client: ClientFacts): boolean {
  if (rule.port !== undefined && rule.port !== client.port) return false;
  if (rule.host !== undefined && rule.host !== client.host?.toLowerCase()) return false;
  if (rule.cidr && !rule.cidr.has(client.address)) return false;
  if (rule.userAgent && !rule.userAgent.test(client.userAgent ?? '')) return false;
  if (rule.repository && !client.repositories.some((r) => rule.repository?.test(r))) return false;
  return true;
}
