/**
 * The HTTPRoutes the control plane compiled for each Service (`ambit.waypoint.HttpRoutes` over delta xDS), checked
 * and kept by service key (`<namespace>/<hostname>`).
 *
 * Owns: turning decoded resources into typed route entries (a malformed one is NACKed, the last good kept).
 * Must not know about: HTTP, sockets, how entries are matched.
 */
import type { XdsRejection, XdsResourceUpdate } from '../shared/xds/client.ts';

export interface HeaderValue {
  name: string;
  value: string;
}

export interface RouteEntry {
  route: string;
  ruleName: string;
  /** The Service port it applies to; 0: every port. */
  port: number;
  pathType: 'EXACT' | 'PATH_PREFIX';
  path: string;
  /** Lower-case names, exact values. */
  headers: readonly { name: string; exact: string }[];
  backends: readonly { service: string; port: number; weight: number }[];
  totalWeight: number;
  requestHeaderModifier?: { set: readonly HeaderValue[]; add: readonly HeaderValue[]; remove: readonly string[] };
}

interface DecodedRoutes {
  service?: string;
  entries?: {
    route?: string;
    ruleName?: string;
    port?: number;
    match?: { path?: { type?: string; value?: string } | null; headers?: { name?: string; exact?: string }[] } | null;
    backends?: { service?: string; port?: number; weight?: number }[];
    requestHeaderModifier?: { set?: HeaderValue[]; add?: HeaderValue[]; remove?: string[] } | null;
  }[];
}

function entryFromXds(entry: NonNullable<DecodedRoutes['entries']>[number]): RouteEntry {
  const pathType = entry.match?.path?.type ?? 'PATH_PREFIX';
  if (pathType !== 'EXACT' && pathType !== 'PATH_PREFIX') throw new Error(`unknown path match type ${String(pathType)}`);
  const path = entry.match?.path?.value || '/';
  if (!path.startsWith('/')) throw new Error(`path ${path} does not start with /`);
  const backends = (entry.backends ?? []).map((backend) => {
    if (!backend.service || !backend.port || backend.port > 65535) throw new Error(`backend ${backend.service ?? ''}:${backend.port ?? ''} is not a service port`);
    return { service: backend.service, port: backend.port, weight: backend.weight ?? 0 };
  });
  const result: RouteEntry = {
    route: entry.route ?? '',
    ruleName: entry.ruleName ?? '',
    port: entry.port ?? 0,
    pathType,
    path,
    headers: (entry.match?.headers ?? []).map((header) => ({ name: (header.name ?? '').toLowerCase(), exact: header.exact ?? '' })),
    backends,
    totalWeight: backends.reduce((sum, backend) => sum + backend.weight, 0),
  };
  const modifier = entry.requestHeaderModifier;
  if (modifier && (modifier.set?.length || modifier.add?.length || modifier.remove?.length)) {
    result.requestHeaderModifier = { set: modifier.set ?? [], add: modifier.add ?? [], remove: (modifier.remove ?? []).map((name) => name.toLowerCase()) };
  }
  return result;
}

export class RouteTable {
  readonly #entriesByService = new Map<string, readonly RouteEntry[]>();
  readonly #serviceByResourceName = new Map<string, string>();

  /** Route entries of a service, in precedence order; undefined when it has no HTTPRoute. */
  entriesFor(serviceKey: string): readonly RouteEntry[] | undefined {
    return this.#entriesByService.get(serviceKey);
  }

  /** The delta xDS handler for HTTP_ROUTES_TYPE_URL. */
  readonly apply = (added: XdsResourceUpdate<unknown>[], removed: string[]): { rejected?: XdsRejection[] } | undefined => {
    const rejected: XdsRejection[] = [];
    for (const update of added) {
      const decoded = update.resource as DecodedRoutes;
      try {
        if (!decoded.service) throw new Error('no service');
        const entries = (decoded.entries ?? []).map(entryFromXds);
        const previous = this.#serviceByResourceName.get(update.name);
        if (previous !== undefined && previous !== decoded.service) this.#entriesByService.delete(previous);
        this.#serviceByResourceName.set(update.name, decoded.service);
        this.#entriesByService.set(decoded.service, entries);
      } catch (error) {
        rejected.push({ name: update.name, reason: (error as Error).message });
      }
    }
    for (const name of removed) {
      const service = this.#serviceByResourceName.get(name);
      if (service === undefined) continue;
      this.#serviceByResourceName.delete(name);
      this.#entriesByService.delete(service);
    }
    return rejected.length > 0 ? { rejected } : undefined;
  };

  view(): object {
    return Object.fromEntries(this.#entriesByService);
  }
}
