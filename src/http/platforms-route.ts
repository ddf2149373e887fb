import type { FastifyInstance, FastifyRequest } from 'fastify';
import { RegistryError } from '../errors.ts';
import { parseImageReference } from '../oci/image-reference.ts';
import type { PlatformInspector } from '../inspect/platform-inspector.ts';
import type { Router } from '../routing/router.ts';
import { checkGrants } from './grants.ts';
import type { VirtualCatalog } from '../virtual/virtual-catalog.ts';
import type { LocalCatalog } from '../local/local-catalog.ts';

function decodeName(raw: string): string {
  try {
    return decodeURIComponent(raw);
  } catch {
    throw new RegistryError('NAME_INVALID', 'invalid repository name', { detail: { name: raw } });
  }
}

/** Path of the platform inspector; the access hook gives it the same client authentication as /v2. */
export const PLATFORMS_ROUTE = '/_archway/platforms/*';

/**
 * `GET /_archway/platforms/<name>:<tag>` (or `@<digest>`; `?ns=` and registry
 * prefixes route as on /v2): every platform the image offers, as JSON (what
 * `archway inspect` prints). Errors use the registry's error envelope.
 */
export function registerPlatformsRoute(
  app: FastifyInstance,
  servicesFor: (request: FastifyRequest) => { router: Router; virtualCatalog: VirtualCatalog; localCatalog: LocalCatalog; inspector: PlatformInspector },
): void {
  app.get(PLATFORMS_ROUTE, async (request, reply) => {
    const services = servicesFor(request);
    request.archway.route = 'platforms';
    const [path = '', query = ''] = request.url.split('?');
    const image = decodeName(path.slice('/_archway/platforms/'.length));
    const { name, reference } = parseImageReference(image);
    const route = services.router.resolve(name, new URLSearchParams(query).get('ns') ?? undefined);
    const local = services.localCatalog.match(route);
    const virtual = local ? undefined : services.virtualCatalog.match(route);
    checkGrants(request.principal, name, route, virtual);
    const report = await services.inspector.inspect({ image, reference, route, virtual, local: local && { repository: local, router: services.router } });
    return reply.header('cache-control', 'no-store').send(report);
  });
}
