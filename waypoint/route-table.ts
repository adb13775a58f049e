/**
 * The HTTPRoutes the control plane compiled for each Service (`ambit.waypoint.HttpRoutes` over delta xDS), checked
 * and kept by service key (`<namespace>/<hostname>`).
 *
 * Owns: turning decoded resources into typed route entries (a malformed one is NACKed, the last good kept).
 * Must not know about: HTTP, sockets, how entries are matched.
 */
import { RE2JS } from 're2js';
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
  pathType: 'EXACT' | 'PATH_PREFIX' | 'REGULAR_EXPRESSION';
  path: string;
  /** The compiled `path` when pathType is REGULAR_EXPRESSION (RE2, whole path). */
  pathRegex?: RE2JS;
  /** Lower-case names; exact values, or an RE2 expression the whole value must match. */
  headers: readonly { name: string; exact: string; regex?: RE2JS }[];
  backends: readonly { service: string; port: number; weight: number }[];
  totalWeight: number;
  requestHeaderModifier?: HeaderModifier;
  responseHeaderModifier?: HeaderModifier;
}

export interface HeaderModifier {
  set: readonly HeaderValue[];
  add: readonly HeaderValue[];
  remove: readonly string[];
}

interface DecodedModifier {
  set?: HeaderValue[];
  add?: HeaderValue[];
  remove?: string[];
}

function modifierFromXds(modifier: DecodedModifier | null | undefined): HeaderModifier | undefined {
  if (!modifier || !(modifier.set?.length || modifier.add?.length || modifier.remove?.length)) return undefined;
  return { set: modifier.set ?? [], add: modifier.add ?? [], remove: (modifier.remove ?? []).map((name) => name.toLowerCase()) };
}

/** An RE2 expression from xDS, compiled; a bad one rejects the resource (NACK) naming it. */
function re2(expression: string, what: string): RE2JS {
  try {
    return RE2JS.compile(expression);
  } catch (error) {
    throw new Error(`${what} ${expression} is no RE2 expression: ${(error as Error).message}`, { cause: error });
  }
}

interface DecodedRoutes {
  service?: string;
  entries?: {
    route?: string;
    ruleName?: string;
    port?: number;
    match?: { path?: { type?: string; value?: string } | null; headers?: { name?: string; exact?: string; regex?: string }[] } | null;
    backends?: { service?: string; port?: number; weight?: number }[];
    requestHeaderModifier?: DecodedModifier | null;
    responseHeaderModifier?: DecodedModifier | null;
  }[];
}

function entryFromXds(entry: NonNullable<DecodedRoutes['entries']>[number]): RouteEntry {
  const pathType = entry.match?.path?.type ?? 'PATH_PREFIX';
  if (pathType !== 'EXACT' && pathType !== 'PATH_PREFIX' && pathType !== 'REGULAR_EXPRESSION') throw new Error(`unknown path match type ${String(pathType)}`);
  const path = entry.match?.path?.value || '/';
  if (pathType !== 'REGULAR_EXPRESSION' && !path.startsWith('/')) throw new Error(`path ${path} does not start with /`);
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
    ...(pathType === 'REGULAR_EXPRESSION' ? { pathRegex: re2(path, 'path') } : {}),
    headers: (entry.match?.headers ?? []).map((header) => ({
      name: (header.name ?? '').toLowerCase(),
      exact: header.exact ?? '',
      ...(header.regex ? { regex: re2(header.regex, `header ${header.name ?? ''}`) } : {}),
    })),
    backends,
    totalWeight: backends.reduce((sum, backend) => sum + backend.weight, 0),
  };
  const requestHeaderModifier = modifierFromXds(entry.requestHeaderModifier);
  if (requestHeaderModifier) result.requestHeaderModifier = requestHeaderModifier;
  const responseHeaderModifier = modifierFromXds(entry.responseHeaderModifier);
  if (responseHeaderModifier) result.responseHeaderModifier = responseHeaderModifier;
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
    const shown = (entry: RouteEntry): object => ({
      ...entry,
      pathRegex: undefined,
      headers: entry.headers.map((header) => (header.regex ? { name: header.name, regex: header.regex.pattern() } : header)),
    });
    return Object.fromEntries([...this.#entriesByService].map(([service, entries]) => [service, entries.map(shown)]));
  }
}
