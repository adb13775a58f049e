/**
 * Where one HTTP request (HTTP/1.1 or HTTP/2) goes: the route entry of its Service that matches it, and that
 * entry's weighted backend Service and port; a Service without routes sends it to itself on the port asked for.
 *
 * Owns: turning a request's Service, port, path and headers into a destination, with the waypoint's errors for
 * "no route" (404, NR) and "no usable backend" (500, NC).
 * Must not know about: protocols, sockets, endpoints.
 */
import type http from 'node:http';
import type { MeshState } from '../shared/mesh/mesh-state.ts';
import type { Service } from '../shared/mesh/service.ts';
import { WaypointError } from './errors.ts';
import { matchRoute, pathOf, pickBackend, queryOf } from './http-router.ts';
import type { RouteBackend, RouteEntry, RouteTable } from './route-table.ts';
import { cachedServiceKey } from './service-keys.ts';

export interface RoutedRequest {
  /** The Service to send it to and the port on that Service. */
  destination: Service;
  port: number;
  /** The route entry that matched; absent when the Service has no routes. */
  entry?: RouteEntry;
  /** The weighted backendRef drawn (its filters apply too); absent without routes and for a redirect. */
  backend?: RouteBackend;
}

/**
 * `redirects`: a matched RequestRedirect entry is returned as it is (the caller answers it) instead of needing a
 * backend. `headers` may be a function that makes them (as matchRoute takes them: called only when an entry matches
 * on headers; the HTTP/2 path's head object is made from its list then).
 */
export function routeRequest(routes: RouteTable, state: MeshState, service: Service, servicePort: number, method: string, url: string, headers: http.IncomingHttpHeaders | (() => http.IncomingHttpHeaders), redirects = false): RoutedRequest {
  const entries = routes.entriesFor(cachedServiceKey(service));
  if (entries === undefined) return { destination: service, port: servicePort };
  const entry = matchRoute(entries, servicePort, pathOf(url), headers, method, queryOf(url));
  if (entry === undefined) throw new WaypointError('WAYPOINT_NO_ROUTE', `no route of ${service.hostname} matches ${method} ${url}`);
  if (redirects && entry.redirect) return { destination: service, port: servicePort, entry };
  const backend = pickBackend(entry);
  const destination = backend && state.serviceByKey(backend.service);
  if (!backend || !destination) throw new WaypointError('WAYPOINT_NO_BACKEND', `route ${entry.route} has no usable backend`);
  return { destination, port: backend.port, entry, backend };
}
