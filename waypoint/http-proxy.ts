/**
 * The waypoint's HTTP/1.1 path, for Service ports whose appProtocol (or name) says http: the terminated CONNECT
 * stream is answered 200 and served by Node's HTTP server (keep-alive: many requests per stream); each request is
 * routed by the Service's HTTPRoutes (none attached: straight to the Service), its headers modified as the route
 * says, and forwarded to one endpoint of the chosen backend Service over a new stream (HBONE on the pooled
 * connection to that endpoint, or TCP). No matching route: 404 (flag NR); no usable backend: 500; no endpoint or an
 * unreachable one: 503 (UH / UF). Every request is counted in Istio's metrics with reporter="waypoint".
 *
 * Owns: the per-request flow and header handling. Must not know about: how routes are matched or compiled, how
 * endpoints are picked, TLS.
 */
import http from 'node:http';
import type http2 from 'node:http2';
import type { Duplex } from 'node:stream';
import type { HboneRequest } from '../shared/hbone/index.ts';
import type { MeshState } from '../shared/mesh/mesh-state.ts';
import { serviceKey, type Service } from '../shared/mesh/service.ts';
import { workloadIdentity, type Workload } from '../shared/mesh/workload.ts';
import { WaypointError } from './errors.ts';
import { Http2StreamDuplex } from './stream-adapter.ts';
import { matchRoute, pathOf, pickBackend } from './http-router.ts';
import type { RequestLabels, WaypointMetrics } from './metrics.ts';
import type { RouteEntry, RouteTable } from './route-table.ts';
import type { UpstreamStream, Upstreams } from './upstream.ts';
import type { DestinationRequest, DestinationTraffic } from './destination/destination-traffic.ts';

/** Hop-by-hop headers (RFC 9110 7.6.1): never forwarded. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'te', 'trailer', 'proxy-authorization', 'proxy-authenticate']);

interface StreamContext {
  hbone: HboneRequest;
  service: Service;
  source: Workload | undefined;
}

function forwardedHeaders(headers: http.IncomingHttpHeaders, modifier: RouteEntry['requestHeaderModifier']): http.OutgoingHttpHeaders {
  const result: http.OutgoingHttpHeaders = {};
  for (const name in headers) if (!HOP_BY_HOP.has(name)) result[name] = headers[name];
  if (modifier) {
    for (const header of modifier.set) result[header.name.toLowerCase()] = header.value;
    for (const header of modifier.add) {
      const name = header.name.toLowerCase();
      const existing = result[name];
      result[name] = existing === undefined ? header.value : `${Array.isArray(existing) ? existing.join(',') : String(existing)},${header.value}`;
    }
    for (const name of modifier.remove) delete result[name];
  }
  return result;
}

function responseHeaders(headers: http.IncomingHttpHeaders): http.OutgoingHttpHeaders {
  const result: http.OutgoingHttpHeaders = {};
  for (const name in headers) if (!HOP_BY_HOP.has(name)) result[name] = headers[name];
  return result;
}

function plainAddress(address: string): string {
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}

export class HttpProxy {
  readonly #server: http.Server;
  readonly #contexts = new WeakMap<Duplex, StreamContext>();
  readonly #upstreams: Upstreams;
  readonly #routes: RouteTable;
  readonly #state: MeshState;
  readonly #metrics: WaypointMetrics;
  readonly #destinations: DestinationTraffic | undefined;

  constructor(options: { upstreams: Upstreams; routes: RouteTable; state: MeshState; metrics: WaypointMetrics; destinations?: DestinationTraffic }) {
    this.#destinations = options.destinations;
    this.#upstreams = options.upstreams;
    this.#routes = options.routes;
    this.#state = options.state;
    this.#metrics = options.metrics;
    this.#server = http.createServer({ keepAlive: true }, (request, response) => void this.#handle(request, response));
    // A client's malformed request gets 400 and its stream closes; nothing else is affected.
    this.#server.on('clientError', (_error, socket: Duplex) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      else socket.destroy();
    });
  }

  /** Answers the CONNECT and serves HTTP/1.1 on the stream until the client closes it. */
  serve(hbone: HboneRequest, stream: http2.ServerHttp2Stream, service: Service): void {
    stream.respond({ ':status': 200 });
    const connection = new Http2StreamDuplex(stream);
    this.#contexts.set(connection, { hbone, service, source: this.#state.workloadByIp(plainAddress(hbone.remoteAddress)) });
    this.#server.emit('connection', connection);
  }

  close(): void {
    this.#server.close();
  }

  async #handle(request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
    const started = performance.now();
    const context = this.#contexts.get(request.socket);
    if (!context) {
      response.writeHead(500).end();
      return;
    }
    let destination = context.service;
    let port = context.hbone.target.port;
    let entry: RouteEntry | undefined;
    let upstream: UpstreamStream;
    let destinationRequest: DestinationRequest | undefined;
    try {
      const entries = this.#routes.entriesFor(serviceKey(context.service));
      if (entries !== undefined) {
        entry = matchRoute(entries, port, pathOf(request.url ?? '/'), request.headers);
        if (entry === undefined) throw new WaypointError('WAYPOINT_NO_ROUTE', `no route of ${context.service.hostname} matches ${request.method ?? ''} ${request.url ?? ''}`);
        const backend = pickBackend(entry);
        const backendService = backend && this.#state.serviceByKey(backend.service);
        if (!backend || !backendService) {
          request.resume();
          response.writeHead(500, { 'content-type': 'text/plain' }).end(`route ${entry.route} has no usable backend\n`);
          this.#finish(context, destination, undefined, 500, '-', started);
          return;
        }
        destination = backendService;
        port = backend.port;
      }
      // ---- DestinationRule hook (waypoint/destination/, issue 13 item 3): a pool slot (or 503 UO), then the rule's
      // endpoint choice; the outcome is reported where the response status is known (below). ----
      const traffic = this.#destinations?.forService(serviceKey(destination));
      if (traffic) {
        const admitted = traffic.begin({ headers: request.headers, url: request.url ?? '/', sourceIp: plainAddress(context.hbone.remoteAddress) });
        const held = admitted instanceof Promise ? await admitted : admitted;
        destinationRequest = held;
        // The slot goes back when the client goes, also if it went while this request waited for the slot.
        response.once('close', () => held.done(undefined));
        if (response.destroyed || request.destroyed) {
          held.done(undefined);
          return;
        }
      }
      // ---- end of hook ----
      upstream = await this.#upstreams.open(destination, port, context.hbone.target.host, destinationRequest?.choose);
    } catch (error) {
      const waypointError = error instanceof WaypointError ? error : new WaypointError('WAYPOINT_UPSTREAM_CONNECT_FAILED', (error as Error).message, { cause: error });
      // DestinationRule hook: release the slot; a failed connect counts against the endpoint.
      destinationRequest?.done(waypointError.code === 'WAYPOINT_UPSTREAM_CONNECT_FAILED' ? 'connect-failure' : undefined);
      if (waypointError.code === 'WAYPOINT_UPSTREAM_OVERFLOW') this.#destinations?.overflowed(serviceKey(destination));
      request.resume();
      // Envoy marks a circuit breaker's 503 with x-envoy-overloaded (DestinationRule hook).
      const overloaded = waypointError.code === 'WAYPOINT_UPSTREAM_OVERFLOW' ? { 'x-envoy-overloaded': 'true' } : {};
      response.writeHead(waypointError.status, { 'content-type': 'text/plain', ...overloaded }).end(`${waypointError.message}\n`);
      this.#finish(context, destination, undefined, waypointError.status, waypointError.responseFlags, started);
      return;
    }
    const connection: Duplex = upstream.kind === 'hbone' ? upstream.stream : upstream.socket;
    const outgoing = http.request({
      method: request.method,
      path: request.url,
      headers: forwardedHeaders(request.headers, entry?.requestHeaderModifier),
      // No agent (not `agent: false`, which makes a fresh one that dials itself): this stream carries the request,
      // with `connection: close`; the pooled HBONE connection is what is reused.
      createConnection: () => connection as never,
    });
    outgoing.on('response', (upstreamResponse) => {
      response.writeHead(upstreamResponse.statusCode ?? 502, responseHeaders(upstreamResponse.headers));
      upstreamResponse.pipe(response);
      response.once('finish', () => {
        destinationRequest?.done(upstreamResponse.statusCode ?? 502); // DestinationRule hook: outcome for outlier detection
        this.#finish(context, destination, upstream.endpoint, upstreamResponse.statusCode ?? 502, '-', started);
      });
    });
    outgoing.on('error', (error) => {
      destinationRequest?.done('connect-failure'); // DestinationRule hook: a reset upstream counts as a gateway error
      if (!response.headersSent) {
        response.writeHead(503, { 'content-type': 'text/plain' }).end(`upstream failed: ${error.message}\n`);
        this.#finish(context, destination, upstream.endpoint, 503, 'UF', started);
      } else {
        response.destroy();
      }
      connection.destroy();
    });
    request.pipe(outgoing);
  }

  #finish(context: StreamContext, service: Service, endpoint: Workload | undefined, status: number, flags: string, started: number): void {
    const source = context.source;
    const labels: RequestLabels = {
      reporter: 'waypoint',
      source_workload: source?.workloadName ?? 'unknown',
      source_workload_namespace: source?.namespace ?? context.hbone.peerIdentity.namespace,
      source_principal: context.hbone.peerIdentity.uri,
      destination_workload: endpoint?.workloadName ?? 'unknown',
      destination_workload_namespace: endpoint?.namespace ?? 'unknown',
      destination_principal: endpoint ? workloadIdentity(endpoint).uri : 'unknown',
      destination_service: service.hostname,
      destination_service_name: service.name,
      destination_service_namespace: service.namespace,
      request_protocol: 'http',
      response_code: String(status),
      response_flags: flags,
      connection_security_policy: 'mutual_tls',
    };
    this.#metrics.request(labels, performance.now() - started);
  }
}
