/**
 * HTTP/1.1 `Upgrade` (WebSocket and the like) through the waypoint: the upgrade request is routed like any request
 * (request-target.ts), sent to one endpoint with its `Connection: upgrade` and `Upgrade` headers kept, and when the
 * endpoint answers 101 its answer goes to the client as it came and the two connections are joined byte for byte
 * (half-close carried, a reset on one side ends the other). An endpoint that declines (any other status) has its
 * answer passed on and the client connection closed; the waypoint's own refusals (no route, no endpoint) are
 * answered as for any request.
 *
 * Owns: the upgrade handshake and the join. Must not know about: route matching, endpoint choice, HBONE.
 */
import http from 'node:http';
import type { Duplex } from 'node:stream';
import type { MeshState } from '../shared/mesh/mesh-state.ts';
import type { Service } from '../shared/mesh/service.ts';
import type { Workload } from '../shared/mesh/workload.ts';
import { WaypointError } from './errors.ts';
import { routeRequest } from './request-target.ts';
import type { RouteTable } from './route-table.ts';
import type { Upstreams } from './upstream.ts';

/** Hop-by-hop headers an upgrade request still must not carry on (Connection and Upgrade are kept). */
const HOP_BY_HOP = new Set(['keep-alive', 'proxy-connection', 'transfer-encoding', 'te', 'trailer', 'proxy-authorization', 'proxy-authenticate']);

export interface UpgradeOutcome {
  destination: Service;
  endpoint: Workload | undefined;
  status: number;
  flags: string;
}

export interface UpgradeOptions {
  routes: RouteTable;
  state: MeshState;
  upstreams: Upstreams;
  /** The Service and port the client asked for (the HBONE `:authority`). */
  service: Service;
  servicePort: number;
  vip: string;
  /** Called once, when the upgrade was refused or answered (not when the joined connection ends). */
  done: (outcome: UpgradeOutcome) => void;
}

/** Framing headers of a declined answer, whose body is passed on decoded and ended by closing the connection. */
const DECLINED_FRAMING = new Set(['connection', 'keep-alive', 'transfer-encoding']);

/** The response head as it came from the endpoint (raw header names and order kept), less `skip`, plus `extra`. */
function responseHead(response: http.IncomingMessage, skip?: ReadonlySet<string>, extra = ''): string {
  let head = `HTTP/1.1 ${response.statusCode ?? 502} ${response.statusMessage ?? ''}\r\n`;
  const raw = response.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) if (!skip?.has(raw[i]!.toLowerCase())) head += `${raw[i]}: ${raw[i + 1]}\r\n`;
  return `${head}${extra}\r\n`;
}

function refuse(downstream: Duplex, error: WaypointError): void {
  const body = `${error.message}\n`;
  downstream.end(`HTTP/1.1 ${error.status} ${http.STATUS_CODES[error.status] ?? ''}\r\ncontent-type: text/plain\r\ncontent-length: ${Buffer.byteLength(body)}\r\nconnection: close\r\n\r\n${body}`);
}

function join(a: Duplex, b: Duplex): void {
  const end = (): void => {
    if (!a.destroyed) a.destroy();
    if (!b.destroyed) b.destroy();
  };
  a.on('error', end);
  b.on('error', end);
  a.once('close', end);
  b.once('close', end);
  a.pipe(b);
  b.pipe(a);
}

export async function proxyUpgrade(request: http.IncomingMessage, downstream: Duplex, head: Buffer, options: UpgradeOptions): Promise<void> {
  downstream.on('error', () => {
    // the join or the refusal ends it
  });
  let destination = options.service;
  let connection: Duplex;
  let endpoint: Workload | undefined;
  try {
    const routed = routeRequest(options.routes, options.state, options.service, options.servicePort, request.method ?? 'GET', request.url ?? '/', request.headers);
    destination = routed.destination;
    const upstream = await options.upstreams.open(destination, routed.port, options.vip);
    endpoint = upstream.endpoint;
    connection = upstream.kind === 'hbone' ? upstream.stream : upstream.socket;
  } catch (error) {
    const waypointError = error instanceof WaypointError ? error : new WaypointError('WAYPOINT_UPSTREAM_CONNECT_FAILED', (error as Error).message, { cause: error });
    refuse(downstream, waypointError);
    options.done({ destination, endpoint, status: waypointError.status, flags: waypointError.responseFlags });
    return;
  }
  const headers: http.OutgoingHttpHeaders = {};
  for (const name in request.headers) if (!HOP_BY_HOP.has(name)) headers[name] = request.headers[name];
  const outgoing = http.request({ method: request.method, path: request.url, headers, createConnection: () => connection as never });
  outgoing.once('upgrade', (response: http.IncomingMessage, upstreamSocket: Duplex, upstreamHead: Buffer) => {
    downstream.write(responseHead(response));
    if (upstreamHead.length > 0) downstream.write(upstreamHead);
    if (head.length > 0) upstreamSocket.write(head);
    join(downstream, upstreamSocket);
    options.done({ destination, endpoint, status: response.statusCode ?? 101, flags: '-' });
  });
  outgoing.once('response', (response: http.IncomingMessage) => {
    // Declined: its answer as it came, then the client connection closes (it asked to leave HTTP).
    downstream.write(responseHead(response, DECLINED_FRAMING, 'connection: close\r\n'));
    response.pipe(downstream);
    options.done({ destination, endpoint, status: response.statusCode ?? 502, flags: '-' });
  });
  outgoing.once('error', (error) => {
    if (downstream.destroyed) return;
    refuse(downstream, new WaypointError('WAYPOINT_UPSTREAM_CONNECT_FAILED', `upstream failed: ${error.message}`, { cause: error }));
    options.done({ destination, endpoint, status: 503, flags: 'UF' });
    connection.destroy();
  });
  outgoing.end();
}
