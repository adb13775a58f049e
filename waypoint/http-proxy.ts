/**
 * The waypoint's HTTP/1.1 path, for Service ports whose appProtocol (or name) says http: the terminated CONNECT
 * stream is answered 200 and served by Node's HTTP server (keep-alive: many requests per stream); each request is
 * routed by the Service's HTTPRoutes (none attached: straight to the Service) and goes, with the route's filters
 * applied, to one endpoint of the chosen backend Service over a kept-alive stream to it (HBONE on the pooled
 * connection to that endpoint, or TCP), tried again as the route's retry says (Istio's default policy when it says
 * nothing), within its timeouts. No matching route: 404 (flag NR);
 * a redirect: answered here; no usable backend: 500; no endpoint or an unreachable one: 503 (UH / UF, URX once
 * retries ran out); a timeout: 504 (UT). Every request is counted in Istio's metrics with reporter="waypoint" and
 * gets one access-log line; `x-request-id` and W3C trace context are passed on (made when absent).
 *
 * The request flow is written against what both `http.IncomingMessage`/`ServerResponse` and the http2 compat
 * `Http2ServerRequest`/`Response` offer (method, url, headers, statusCode, setHeader, writeHead).
 *
 * Owns: the per-request flow. Must not know about: how routes are matched or compiled (http-router.ts), what the
 * filters do (filters.ts), how endpoints are picked or tried (upstream-try.ts), TLS.
 */
import http from 'node:http';
import type http2 from 'node:http2';
import type { Duplex } from 'node:stream';
import type { Logger } from 'pino';
import type { HboneRequest } from '../shared/hbone/index.ts';
import type { SharedReadBuffer } from '../shared/hbone/pooled-reads.ts';
import type { MeshState } from '../shared/mesh/mesh-state.ts';
import type { Service } from '../shared/mesh/service.ts';
import type { Workload } from '../shared/mesh/workload.ts';
import { fillTryFields, logRequest, type RequestRecord as AccessLogRecord } from './access-log.ts';
import { WaypointError } from './errors.ts';
import { applyFault } from './fault.ts';
import { endToEndHeaders, HOP_BY_HOP, modifyHeaders, redirectLocation, rewrittenUrl } from './filters.ts';
import { matchRoute, pathOf, pickBackend, queryOf } from './http-router.ts';
import type { RequestFacts, WaypointMetrics } from './metrics.ts';
import { decisionOf, forgetDecision, type GateRefusal, type GateResponse, type RequestGate } from './authz/request-gate.ts';
import { sendMirror } from './mirror.ts';
import { cachedServiceKey } from './service-keys.ts';
import { bufferBody, ISTIO_DEFAULT_RETRY, MAX_BUFFERED_BODY_BYTES, type BufferedBody } from './retry.ts';
import { RequestAttempts, type AttemptsListener, type AttemptsOptions, type AttemptsResult, type ResponseFacts } from './request-attempts.ts';
import type { RouteBackend, RouteEntry, RouteTable } from './route-table.ts';
import { Http2StreamDuplex } from './stream-adapter.ts';
import { requestIdFrom, requestIdOf, traceContextFrom, traceContextOf, traceparentOf, type TraceContext } from './tracing.ts';
import { UpstreamConnections } from './upstream-connections.ts';
import { TryRequestBase } from './try-request-base.ts';
import { UpstreamTry } from './upstream-try.ts';
import type { Upstreams } from './upstream.ts';
import { proxyUpgrade } from './upgrade.ts';
import type { DestinationRequest, DestinationTraffic } from './destination/destination-traffic.ts';
import { DownstreamConnection, LeanExchange, type ExchangeListener, type LeanHandler, type RelayedHead } from './http1/downstream.ts';
import { FIELD_GRPC_STATUS, FIELD_TRACEPARENT, FIELD_TRACESTATE, FIELD_X_REQUEST_ID } from './http1/head-fields.ts';
import type { Http1Error } from './http1/errors.ts';
import type { RequestHead, ResponseHead } from './http1/heads.ts';
import { LeanTry, type LeanTryRequest } from './http1/lean-try.ts';
import { fieldLineText, requestHeadText, responseHeadText } from './http1/serialize.ts';
import { forwardedRequest, FRAMING_CHUNKED, FRAMING_CLOSE, framingText, relayedResponseHeadBytes, writeRelayedResponseHead } from './http1/forwarded-heads.ts';
import { joinHeadAndBody, type Http1Transport } from './http1/transport.ts';
import { UpstreamHttp1Pool } from './http1/upstream-pool.ts';

/** The request as both HTTP/1.1 and HTTP/2 compat servers hand it over. */
type DownstreamRequest = http.IncomingMessage | http2.Http2ServerRequest;
/** What the records, metrics and access log read of a request: Node's request objects and the lean path's exchange. */
interface RequestLine {
  method?: string | undefined;
  url?: string | undefined;
  httpVersion: string;
  headers: http.IncomingHttpHeaders;
}
/** What the flow uses of a response: common to `http.ServerResponse` and `http2.Http2ServerResponse`. */
interface DownstreamResponse extends NodeJS.WritableStream {
  writeContinue(): void;
  readonly headersSent: boolean;
  readonly writableEnded: boolean;
  writeHead(statusCode: number, headers?: http.OutgoingHttpHeaders): unknown;
  destroy(error?: Error): void;
}

interface StreamContext {
  hbone: HboneRequest;
  service: Service;
  source: Workload | undefined;
  /** The access log's src block, the same for every request on the stream (made by the first). */
  srcBlock?: AccessLogRecord['src'];
  /** The lean path's last request object, made the next request's once released (one request at a time per stream). */
  spareRequest?: LeanRequest;
}

/** What is known about one request as it goes, for its metrics and access-log line. */
interface RequestRecord {
  context: StreamContext;
  started: number;
  requestId: string;
  trace: TraceContext;
  entry: RouteEntry | undefined;
  destination: Service;
  endpoint: Workload | undefined;
  upstreamHost: string;
  attempts: number;
  requestBytes: number;
  responseBytes: number;
  details: string;
  /** Its DestinationRule pool slot and endpoint choice, when a rule applies (waypoint/destination/). */
  destinationRequest?: DestinationRequest;
  /** What fault injection did ('DI', 'FI', 'DI,FI'; '' nothing), joined to the response flags. */
  faultFlags: string;
  /** The status passed on (lean path: known once the head is relayed). */
  status?: number;
}

/** What a LeanRequest needs of the proxy (one object per proxy, made in its constructor). */
interface LeanOwner {
  readonly upstreams: Upstreams;
  readonly pool: UpstreamHttp1Pool;
  /** The tries' result (the relay of the response, or the waypoint's own answer). */
  answered(request: LeanRequest, result: AttemptsResult<ResponseHead>): void;
  /** The request is over: its metrics, access-log line and DestinationRule slot. */
  finish(request: LeanRequest, status: number, flags: string, details: string): void;
  /** A step threw: 502, or a cut once the head went. */
  failed(exchange: LeanExchange, error: Error): void;
}

/**
 * One request on the lean path, as one object: what is known about it (the record of the metrics and access log),
 * what its tries read (LeanTryRequest, the try loop's options), and the listener of its tries' result and of its
 * exchange's end. Before session s12 these were a record, an options object, a try request per try and five closures
 * per request.
 */
class LeanRequest extends TryRequestBase<ResponseHead, StreamContext> implements RequestRecord, AttemptsOptions<ResponseHead>, AttemptsListener<ResponseHead>, ExchangeListener, LeanTryRequest, RelayedHead {
  exchange: LeanExchange;
  private readonly owner: LeanOwner;
  /**
   * Which of its stream's requests the object is now (renew counts up): a continuation that waited (policy, a fault,
   * a DestinationRule's queue) and a try's outcome go on only while it is still theirs.
   */
  generation = 0;
  /** Its metrics and log line were taken: it may serve the stream's next request (renew). */
  released = false;
  requestBytes = 0;
  status: number | undefined = undefined;
  // What the tries send: set once the route and head are known (#leanTries); the rest is TryRequestBase's.
  wire: Buffer = NO_BYTES;
  headRequest = false;
  /** The try whose response is relayed, and the flags it is relayed with (from #leanAnswered on). */
  relaying: LeanTry | undefined = undefined;
  relayFlags = '-';
  /** The relayed response's head when it goes on as received (writeRelayedHead), and the framing lines added to it. */
  responseHead: ResponseHead | undefined = undefined;
  responseFraming = 0;

  constructor(owner: LeanOwner, context: StreamContext, exchange: LeanExchange) {
    const head = exchange.head;
    super(context, requestIdFrom(head.value(FIELD_X_REQUEST_ID)), traceContextFrom(head.value(FIELD_TRACEPARENT), head.value(FIELD_TRACESTATE)), RESPONSE_HEAD_FACTS);
    this.owner = owner;
    this.exchange = exchange;
  }

  /** The next request on the same client stream, in this object (released, so nothing of the last one is waited for). */
  renew(exchange: LeanExchange): void {
    const head = exchange.head;
    this.renewBase(requestIdFrom(head.value(FIELD_X_REQUEST_ID)), traceContextFrom(head.value(FIELD_TRACEPARENT), head.value(FIELD_TRACESTATE)));
    this.generation++;
    this.released = false;
    this.exchange = exchange;
    this.requestBytes = 0;
    this.status = undefined;
    this.wire = NO_BYTES;
    this.headRequest = false;
    this.relaying = undefined;
    this.relayFlags = '-';
    this.responseHead = undefined;
    this.responseFraming = 0;
  }

  /**
   * The request is over (its metrics and log line taken): its exchange (without the policy outcome the gate left on
   * it) and this object may serve the stream's next request.
   */
  release(): void {
    const exchange = this.exchange;
    forgetDecision(exchange);
    exchange.release();
    this.released = true;
    this.context.spareRequest = this;
  }

  // AttemptsOptions: the try loop's.
  start(avoid: string | undefined): LeanTry {
    return new LeanTry(this.owner.upstreams, this.owner.pool, this, avoid);
  }

  /** The body is always whole here (the lean path takes only bodies the retry buffer holds). */
  replayable(): boolean {
    return !this.exchange.done;
  }

  // AttemptsListener: called from the try's own reading (an endpoint's head): what throws here is this request's alone.
  attemptsDone(result: AttemptsResult<ResponseHead>): void {
    // A finished request's tries (they give their result once, and start none after it: a second guard).
    if ((result.attempt as LeanTry).requestGeneration !== this.generation) return;
    try {
      this.owner.answered(this, result);
    } catch (error) {
      this.owner.failed(this.exchange, error as Error);
    }
  }

  // RelayedHead: the response head as received, written into the buffer of its first write.
  relayedHeadBytes(): number {
    return relayedResponseHeadBytes(this.status!, this.responseHead!, this.responseFraming);
  }

  writeRelayedHead(out: Buffer, offset: number): number {
    return writeRelayedResponseHead(out, offset, this.status!, this.responseHead!, this.responseFraming);
  }

  // ExchangeListener.
  clientGone(): void {
    this.tries?.abort();
    this.owner.finish(this, this.status ?? 0, 'DC', 'downstream_remote_disconnect');
  }

  relayed(whole: boolean): void {
    const current = this.relaying;
    // Only a relayed response's end counts (the waypoint's own answers finish where they are written).
    if (current === undefined) return;
    const tries = this.tries!;
    tries.stop();
    this.responseBytes = current.responseBodyBytes;
    if (whole) this.owner.finish(this, this.status!, this.relayFlags, 'via_upstream');
    else this.owner.finish(this, this.status!, current.timedOut || tries.timedOut ? 'UT' : 'UC', 'upstream_reset_after_response_started');
  }
}

/** What a request forwarded as sent does not pass on of the client's fields: hop-by-hop ones, and the trace fields it sets. */
const NOT_FORWARDED_AS_SENT: ReadonlySet<string> = new Set([...HOP_BY_HOP, 'x-request-id', 'traceparent', 'tracestate']);
const NO_MIRRORS: readonly RouteEntry['mirrors'][number][] = [];
const NO_BYTES = Buffer.alloc(0);
/** The log record's blocks before its first request. */
const UNKNOWN_SRC: AccessLogRecord['src'] = { principal: 'unknown', workload: 'unknown', namespace: 'unknown', address: '' };
const UNKNOWN_DST: AccessLogRecord['dst'] = { principal: 'unknown', workload: 'unknown', namespace: 'unknown', service: '' };

/**
 * Whether a head goes on from its own field lines (FieldFacts.fieldText): nothing read its map (which policy, a JWT
 * rule or a route may have changed), and no first-wins field (Host, Authorization, Content-Type, ...) came twice
 * (the map keeps only the first, which is what policy and routes saw, so only that one may go on).
 */
function forwardedAsReceived(head: RequestHead | ResponseHead): boolean {
  return !head.mapRead && !head.firstWinsRepeated;
}

/** The request id and trace context fields every forwarded request carries (as #upstreamHeaders sets them). */
function traceFieldLines(record: RequestRecord): string {
  const lines = fieldLineText('x-request-id', record.requestId) + fieldLineText('traceparent', traceparentOf(record.trace));
  return record.trace.tracestate === undefined ? lines : lines + fieldLineText('tracestate', record.trace.tracestate);
}

/** The gate's refusal written as a raw HTTP/1.1 response on an upgrade request's connection, which then closes. */
function rawResponseOn(socket: Duplex): GateResponse {
  let head = '';
  return {
    writeHead(status, headers) {
      head = `HTTP/1.1 ${status} ${http.STATUS_CODES[status] ?? ''}\r\n`;
      for (const name in headers) head += `${name}: ${headers[name]}\r\n`;
      head += 'connection: close\r\n\r\n';
    },
    end(body = '') {
      if (socket.writable) socket.end(head + body);
      else socket.destroy();
    },
  };
}

function plainAddress(address: string): string {
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}

/** What the try loop reads of an HTTP/1.1 response, and how it drops one that is retried. */
const INCOMING_MESSAGE_FACTS: ResponseFacts<http.IncomingMessage> = {
  status: (response) => response.statusCode ?? 502,
  // A gRPC answer's status in its (trailers-only) head, for the gRPC retry conditions.
  grpcStatus: (response) => {
    const value = response.headers['grpc-status'];
    return typeof value === 'string' && /^\d+$/.test(value) ? Number(value) : undefined;
  },
  discard: (response) => response.resume(),
};

/** The same for the lean path's parsed response heads (a retried one's connection is closed by the try's abort). */
const RESPONSE_HEAD_FACTS: ResponseFacts<ResponseHead> = {
  status: (head) => head.status,
  grpcStatus: (head) => {
    const value = head.value(FIELD_GRPC_STATUS);
    return value !== undefined && /^\d+$/.test(value) ? Number(value) : undefined;
  },
  discard: () => undefined,
};

/** What fault injection needs of a response (fault.ts), on a lean exchange: the client's going is its 'close'. */
function faultResponseOf(exchange: LeanExchange): Parameters<typeof applyFault>[1] {
  let onClose: (() => void) | undefined;
  exchange.listener = { clientGone: () => onClose?.(), relayed: () => undefined };
  return {
    get headersSent() {
      return exchange.headersSent;
    },
    writeHead: (status, headers) => exchange.writeHead(status, headers),
    end: (text) => exchange.end(text),
    once: (_event, listener) => (onClose = listener),
    off: () => (onClose = undefined),
    get destroyed() {
      return exchange.clientGone;
    },
  };
}

export class HttpProxy {
  readonly #server: http.Server;
  readonly #contexts = new WeakMap<Duplex, StreamContext>();
  readonly #upstreams: Upstreams;
  readonly #connections: UpstreamConnections;
  readonly #routes: RouteTable;
  readonly #state: MeshState;
  readonly #metrics: WaypointMetrics;
  readonly #log: Logger | undefined;
  readonly #gate: RequestGate | undefined;
  readonly #destinations: DestinationTraffic | undefined;
  /** Kept-alive HTTP/1.1 connections to endpoints for the lean path (http1/upstream-pool.ts). */
  readonly #pool: UpstreamHttp1Pool;
  /** What each lean request needs of the proxy. */
  readonly #leanOwner: LeanOwner;
  /** The access-log record every request's line is written from (filled in per request: no object per request). */
  readonly #logRecord: AccessLogRecord = {
    method: '', path: '', protocol: '', authority: '', status: 0, flags: '', details: '', durationMs: 0, bytesReceived: 0, bytesSent: 0, upstreamHost: '', upstreamCluster: '',
    attempts: 0, routeName: '', ruleName: '', requestId: '', traceId: '', spanId: '', src: UNKNOWN_SRC, dst: UNKNOWN_DST, authz: undefined,
  };
  /** The metrics' facts of a request (made by the first, filled in per request after it). */
  #metricFacts: RequestFacts | undefined;
  /** Requests served by the lean path (and of those, in a reused request object), streams handed to Node's server, heads refused (config dump). */
  readonly #leanCounts = { leanRequests: 0, reusedRequests: 0, handedToNode: 0, refusedHeads: 0 };

  constructor(options: { upstreams: Upstreams; routes: RouteTable; state: MeshState; metrics: WaypointMetrics; log?: Logger; gate?: RequestGate; destinations?: DestinationTraffic }) {
    this.#gate = options.gate;
    this.#destinations = options.destinations;
    this.#upstreams = options.upstreams;
    this.#connections = new UpstreamConnections(options.upstreams);
    this.#pool = new UpstreamHttp1Pool(options.upstreams);
    this.#leanOwner = {
      upstreams: options.upstreams,
      pool: this.#pool,
      answered: (request, result) => this.#leanAnswered(request, result),
      finish: (request, status, flags, details) => this.#finish(request.exchange, undefined, request, status, flags, details),
      failed: (exchange, error) => this.#leanFailed(exchange, error),
    };
    this.#routes = options.routes;
    this.#state = options.state;
    this.#metrics = options.metrics;
    this.#log = options.log;
    this.#server = http.createServer({ keepAlive: true }, (request, response) => {
      // A request that throws anywhere in its flow (a peer's odd input, a header value Node refuses) ends with 502
      // or a cut response; the waypoint and the other requests carry on.
      this.#handle(request, response).catch((error: Error) => {
        this.#log?.warn({ err: error.message, method: request.method, path: request.url }, 'request failed in the waypoint');
        if (response.headersSent) response.destroy();
        else response.writeHead(502, { 'content-type': 'text/plain' }).end('the waypoint could not forward the request\n');
      });
    });
    // Expect: 100-continue is forwarded; the client gets 100 when the endpoint sends it (#forward), not before.
    this.#server.on('checkContinue', (request, response) => {
      this.#handle(request, response).catch((error: Error) => {
        this.#log?.warn({ err: error.message, method: request.method, path: request.url }, 'request failed in the waypoint');
        if (response.headersSent) response.destroy();
        else response.writeHead(502, { 'content-type': 'text/plain' }).end('the waypoint could not forward the request\n');
      });
    });
    this.#server.on('upgrade', (request: http.IncomingMessage, socket: Duplex, head: Buffer) => void this.#upgrade(request, socket, head));
    // A client's malformed request gets 400 and its stream closes; nothing else is affected.
    this.#server.on('clientError', (_error, socket: Duplex) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n');
      else socket.destroy();
    });
  }

  /** Answers the CONNECT and serves HTTP/1.1 on the stream until the client closes it. */
  serve(hbone: HboneRequest, stream: http2.ServerHttp2Stream, service: Service): void {
    stream.respond({ ':status': 200 });
    this.serveConnection(hbone, new Http2StreamDuplex(stream), service);
  }

  /** Serves HTTP/1.1 on a terminated stream already answered 200 (http-entry.ts hands it over after the sniff). */
  serveConnection(hbone: HboneRequest, connection: Duplex, service: Service): void {
    this.#contexts.set(connection, { hbone, service, source: this.#state.workloadByIp(plainAddress(hbone.remoteAddress)) });
    this.#server.emit('connection', connection);
  }

  /**
   * Serves HTTP/1.1 on a terminated stream already answered 200 with the lean path (http1/): `firstBytes` are what
   * the sniff read. Requests it does not serve hand the stream to Node's server (serveConnection).
   */
  serveLean(hbone: HboneRequest, transport: Http1Transport, service: Service, firstBytes: Buffer | undefined, firstShared: SharedReadBuffer | undefined): void {
    const context: StreamContext = { hbone, service, source: this.#state.workloadByIp(plainAddress(hbone.remoteAddress)) };
    const handler: LeanHandler = {
      accepts: (head) => this.#leanServes(head),
      serve: (exchange) => {
        this.#leanCounts.leanRequests++;
        try {
          this.#serveLean(exchange, context);
        } catch (error) {
          this.#leanFailed(exchange, error as Error);
        }
      },
      handOver: (handed, bytes) => {
        this.#leanCounts.handedToNode++;
        const connection = new Http2StreamDuplex(handed);
        if (bytes !== undefined) connection.unshift(bytes);
        if (handed.readableEnded) connection.push(null);
        this.serveConnection(hbone, connection, service);
      },
      refused: (error: Http1Error) => {
        this.#leanCounts.refusedHeads++;
        this.#log?.debug({ code: error.code, err: error.message }, 'HTTP/1.1 request refused');
      },
    };
    new DownstreamConnection(transport, firstBytes, handler, {}, firstShared);
  }

  close(): void {
    this.#server.close();
    this.#connections.close();
    this.#pool.close();
  }

  /** Streams to endpoints, open and idle, for the config dump (both paths' pools, by endpoint). */
  connectionsView(): object {
    const view: Record<string, { open: number; idle: number }> = this.#connections.view();
    for (const [key, pool] of Object.entries(this.#pool.view())) {
      const entry = (view[key] ??= { open: 0, idle: 0 });
      entry.open += pool.open;
      entry.idle += pool.idle;
    }
    return view;
  }

  /** How many requests each HTTP/1.1 path took, for the config dump. */
  pathsView(): { leanRequests: number; reusedRequests: number; handedToNode: number; refusedHeads: number } {
    return { ...this.#leanCounts };
  }

  /**
   * Whether the lean path serves a request with this head: HTTP/1.1, no Upgrade or CONNECT, no Expect, a body of
   * known length that the retry buffer holds whole (so every try and mirror can send it again). Decided before
   * anything was forwarded.
   */
  #leanServes(head: RequestHead): boolean {
    return head.httpVersion === '1.1' && !head.upgrade && head.method !== 'CONNECT' && head.expect === '' && !head.chunked && head.contentLength <= MAX_BUFFERED_BODY_BYTES;
  }

  /**
   * One request on the lean path: the same flow as #handle and #forward, on a LeanExchange, in steps that run one
   * after the other in the same turn (no promise, no microtask) unless one has to wait: the gate verifying a token
   * never seen, a fault's delay, a DestinationRule's queue, a retry's back-off. A step that throws ends the request
   * with 502 (or a cut, after the head): #leanFailed, called by every step's caller.
   */
  #serveLean(exchange: LeanExchange, context: StreamContext): void {
    const spare = context.spareRequest;
    let record: LeanRequest;
    if (spare !== undefined && spare.released) {
      context.spareRequest = undefined;
      spare.renew(exchange);
      record = spare;
      this.#leanCounts.reusedRequests++;
    } else {
      record = new LeanRequest(this.#leanOwner, context, exchange);
    }
    record.requestBytes = exchange.bodyBytes;
    const checked = this.#gate?.check(exchange, exchange, context.hbone, context.service);
    if (checked instanceof Promise) {
      const generation = record.generation;
      checked.then((refusal) => record.generation === generation && this.#leanChecked(exchange, record, refusal)).catch((error: Error) => record.generation === generation && this.#leanFailed(exchange, error));
      return;
    }
    this.#leanChecked(exchange, record, checked);
  }

  /** A request that threw in the waypoint: 502, or a cut once its head went. */
  #leanFailed(exchange: LeanExchange, error: Error): void {
    this.#log?.warn({ err: error.message, method: exchange.method, path: exchange.url }, 'request failed in the waypoint');
    if (exchange.done) return;
    if (exchange.headersSent) exchange.cut();
    else exchange.writeHead(502, { 'content-type': 'text/plain' }).end('the waypoint could not forward the request\n');
  }

  /** After policy: the route, and its fault (which may wait). */
  #leanChecked(exchange: LeanExchange, record: LeanRequest, refusal: GateRefusal | undefined): void {
    if (refusal) {
      this.#finish(exchange, undefined, record, refusal.status, refusal.responseFlags, refusal.details);
      return;
    }
    if (exchange.clientGone) return;
    const context = record.context;
    const url = exchange.url;
    const path = pathOf(url);
    const query = queryOf(url);
    const entries = this.#routes.entriesFor(cachedServiceKey(context.service));
    if (entries === undefined) {
      this.#leanRouted(exchange, record, path, query);
      return;
    }
    const entry = matchRoute(entries, context.hbone.target.port, path, () => exchange.headers, exchange.method, query);
    record.entry = entry;
    if (entry === undefined) {
      this.#answerLean(exchange, record, new WaypointError('WAYPOINT_NO_ROUTE', `no route of ${context.service.hostname} matches ${exchange.method} ${url}`), 'route_not_found');
      return;
    }
    if (!entry.fault) {
      this.#leanRouted(exchange, record, path, query);
      return;
    }
    const generation = record.generation;
    applyFault(entry.fault, faultResponseOf(exchange))
      .then((fault) => {
        if (record.generation !== generation) return;
        exchange.listener = undefined;
        record.faultFlags = fault.flags;
        if (fault.clientGone || fault.abortedWith !== undefined) {
          this.#finish(exchange, undefined, record, fault.abortedWith ?? 0, fault.clientGone ? 'DC' : '-', fault.clientGone ? 'downstream_remote_disconnect' : 'fault_filter_abort');
          return;
        }
        this.#leanRouted(exchange, record, path, query);
      })
      .catch((error: Error) => record.generation === generation && this.#leanFailed(exchange, error));
  }

  /** After the route (and its fault): a redirect, or the backend, the head to send, mirrors, the DestinationRule's slot. */
  #leanRouted(exchange: LeanExchange, record: LeanRequest, path: string, query: string): void {
    const context = record.context;
    const entry = record.entry;
    const servicePort = context.hbone.target.port;
    let port = servicePort;
    let backend: RouteBackend | undefined;
    if (entry !== undefined) {
      if (entry.redirect) {
        const location = redirectLocation(entry, { host: exchange.authority, path, query, servicePort });
        exchange.writeHead(entry.redirect.statusCode, { location }).end();
        this.#finish(exchange, undefined, record, entry.redirect.statusCode, '-', 'direct_response');
        return;
      }
      backend = pickBackend(entry);
      const backendService = backend && this.#state.serviceByKey(backend.service);
      if (!backend || !backendService) {
        exchange.writeHead(500, { 'content-type': 'text/plain' }).end(`route ${entry.route} has no usable backend\n`);
        this.#finish(exchange, undefined, record, 500, '-', 'no_usable_backend');
        return;
      }
      record.destination = backendService;
      port = backend.port;
    }
    const url = exchange.url;
    const upstreamUrl = entry ? rewrittenUrl(entry, path, query) : url;
    // A request no filter changes (no header modifier, no Host rewrite, no mirror that takes the headers as an object)
    // goes on from its own field lines (nothing read its map) or from the client's header map, without a copy of it.
    const asSent = (entry === undefined || (entry.mirrors.length === 0 && !entry.requestHeaderModifier && !entry.urlRewrite?.hostname)) && !backend?.requestHeaderModifier;
    const headers = asSent ? undefined : this.#upstreamHeaders(exchange, record, backend);
    // The request as every try sends it, head and body in one buffer: as received, written as bytes (forwarded-heads.ts);
    // from a map (filters, or something read the fields), as text.
    const wire = headers !== undefined
      ? joinHeadAndBody(requestHeadText(exchange.method, upstreamUrl, headers), exchange.body)
      : forwardedAsReceived(exchange.head)
        ? forwardedRequest(exchange.method, upstreamUrl, exchange.head, record.requestId, record.trace, exchange.body, exchange.bodyBytes)
        : joinHeadAndBody(requestHeadText(exchange.method, upstreamUrl, exchange.headers, NOT_FORWARDED_AS_SENT, traceFieldLines(record)), exchange.body);
    const vip = context.hbone.target.host;
    if (headers !== undefined) {
      for (const mirror of entry?.mirrors ?? NO_MIRRORS) {
        const service = this.#state.serviceByKey(mirror.service);
        if (!service || (mirror.fraction < 1 && Math.random() >= mirror.fraction)) continue;
        sendMirror(this.#upstreams, { service, servicePort: mirror.port, vip, method: exchange.method, url: upstreamUrl, headers, body: { chunks: exchange.body, bytes: exchange.bodyBytes, complete: true } }, (message) => this.#log?.debug({ mirror: mirror.service, err: message }, 'mirror request failed'));
      }
    }
    // DestinationRule hook, as #forward's: a pool slot (or 503 UO), the rule's endpoint choice, outlier detection.
    const traffic = this.#destinations?.forService(cachedServiceKey(record.destination));
    const subset = backend?.subset !== undefined ? traffic?.subsetPods(backend.subset) : undefined;
    if (backend?.subset !== undefined && subset === undefined) {
      this.#answerLean(exchange, record, new WaypointError('WAYPOINT_UNKNOWN_SUBSET', `no DestinationRule of ${record.destination.hostname} defines subset ${backend.subset}`), 'cluster_not_found');
      return;
    }
    if (!traffic) {
      this.#leanTries(exchange, record, backend, port, wire);
      return;
    }
    let begun: DestinationRequest | Promise<DestinationRequest>;
    try {
      begun = traffic.begin({ headers: exchange.headers, url, sourceIp: plainAddress(context.hbone.remoteAddress) }, subset);
    } catch (error) {
      this.#leanOverflowed(exchange, record, error);
      return;
    }
    if (begun instanceof Promise) {
      const generation = record.generation;
      begun
        .then(
          (admitted) => (record.generation === generation ? this.#leanAdmitted(exchange, record, backend, port, wire, admitted) : admitted.done(undefined)),
          (error: unknown) => record.generation === generation && this.#leanOverflowed(exchange, record, error),
        )
        .catch((error: Error) => record.generation === generation && this.#leanFailed(exchange, error));
      return;
    }
    this.#leanAdmitted(exchange, record, backend, port, wire, begun);
  }

  /** The DestinationRule's pool refused the request: 503 UO with x-envoy-overloaded, as Envoy's circuit breaker. */
  #leanOverflowed(exchange: LeanExchange, record: LeanRequest, error: unknown): void {
    if (!(error instanceof WaypointError)) throw error;
    this.#destinations!.overflowed(cachedServiceKey(record.destination));
    this.#answerLean(exchange, record, error, 'upstream_overflow', error.responseFlags, { 'x-envoy-overloaded': 'true' });
  }

  #leanAdmitted(exchange: LeanExchange, record: LeanRequest, backend: RouteBackend | undefined, port: number, wire: Buffer, admitted: DestinationRequest): void {
    record.destinationRequest = admitted;
    // The client left while this request waited for the slot: the slot goes back.
    if (exchange.clientGone) {
      admitted.done(undefined);
      return;
    }
    this.#leanTries(exchange, record, backend, port, wire);
  }

  /** The tries (request-attempts.ts), told their outcome without a promise (runThen), then the relay. */
  #leanTries(exchange: LeanExchange, record: LeanRequest, backend: RouteBackend | undefined, port: number, wire: Buffer): void {
    const entry = record.entry;
    record.backend = backend;
    record.servicePort = port;
    record.wire = wire;
    record.headRequest = exchange.method === 'HEAD';
    record.policy = entry?.retry ?? ISTIO_DEFAULT_RETRY;
    record.requestTimeoutMs = entry?.requestTimeoutMs ?? 0;
    // The request is the tries' options and the listener of their result and of the client's going.
    const tries = new RequestAttempts<ResponseHead>(record);
    record.tries = tries;
    exchange.listener = record;
    tries.runThen(record);
  }

  /** The tries' result: the waypoint's own answer, or the relay of the response's head (with the response filters) and body. */
  #leanAnswered(record: LeanRequest, result: AttemptsResult<ResponseHead>): void {
    const { exchange, entry, backend, headRequest } = record;
    const tries = record.tries!;
    const current = result.attempt as LeanTry;
    record.attempts = tries.attempts;
    record.endpoint = current.endpoint;
    record.upstreamHost = current.address;
    if (exchange.clientGone) return;
    if (result.kind === 'timeout') {
      this.#answerLean(exchange, record, result.error, 'request_timeout');
      return;
    }
    if (result.kind === 'error') {
      this.#answerLean(exchange, record, result.error, result.error.code === 'WAYPOINT_BACKEND_TIMEOUT' ? 'upstream_per_try_timeout' : 'upstream_reset_before_response_started', result.flags);
      return;
    }
    // The relay: the head with the response filters, then the body as it comes (its framing passed on as it came).
    const head = result.response;
    const bodyless = headRequest || head.status === 204 || head.status === 304;
    const closeDelimited = !bodyless && !head.chunked && head.contentLength < 0;
    const framing = (head.chunked && !bodyless ? FRAMING_CHUNKED : 0) | (closeDelimited || exchange.closeAfter ? FRAMING_CLOSE : 0);
    if (closeDelimited) exchange.closeAfterResponse();
    const status = head.status;
    record.status = status;
    // From now on the exchange's end is the relayed response's (LeanRequest.relayed).
    record.relayFlags = result.flags;
    record.relaying = current;
    exchange.source = current;
    // Without a response header modifier the endpoint's own fields are written, less the hop-by-hop ones: from its
    // lines when nothing read its map.
    if (!entry?.responseHeaderModifier && !backend?.responseHeaderModifier) {
      if (forwardedAsReceived(head)) {
        record.responseHead = head;
        record.responseFraming = framing;
        exchange.sendRelayedHead(record);
      } else {
        exchange.sendHead(responseHeadText(status, head.headers, framingText(framing), HOP_BY_HOP));
      }
    } else {
      const responseHeaders = endToEndHeaders(head.headers);
      modifyHeaders(responseHeaders, entry?.responseHeaderModifier);
      modifyHeaders(responseHeaders, backend?.responseHeaderModifier);
      exchange.sendHead(responseHeadText(status, responseHeaders, framingText(framing)));
    }
    // The body bytes that came with the head go out in the head's write; a body still to come does not hold it.
    current.relayBody(exchange);
    exchange.flushHead();
  }

  /** The lean path's own error response (the body says why); after a relayed head, a cut. */
  #answerLean(exchange: LeanExchange, record: RequestRecord, error: WaypointError, details: string, flags = error.responseFlags, extraHeaders?: Record<string, string>): void {
    if (exchange.headersSent) exchange.cut();
    else exchange.writeHead(error.status, { 'content-type': 'text/plain', ...extraHeaders }).end(`${error.message}\n`);
    this.#finish(exchange, undefined, record, error.status, flags, details);
  }

  async #handle(request: DownstreamRequest, response: DownstreamResponse): Promise<void> {
    const context = this.#contexts.get(request.socket as Duplex);
    if (!context) {
      response.writeHead(500);
      response.end();
      return;
    }
    const record = this.#record(context, request);
    // L7 policy (waypoint/authz/): RequestAuthentication, AuthorizationPolicy, local rate limits; a refusal is
    // already answered.
    const refusal = this.#gate && (await this.#gate.check(request, response, context.hbone, context.service));
    if (refusal) {
      this.#finish(request, response, record, refusal.status, refusal.responseFlags, refusal.details);
      return;
    }
    const url = request.url ?? '/';
    const path = pathOf(url);
    const query = queryOf(url);
    const servicePort = context.hbone.target.port;
    let port = servicePort;
    let backend: RouteBackend | undefined;
    const entries = this.#routes.entriesFor(cachedServiceKey(context.service));
    if (entries !== undefined) {
      const entry = matchRoute(entries, servicePort, path, request.headers, request.method, query);
      record.entry = entry;
      if (entry === undefined) {
        this.#answer(request, response, record, new WaypointError('WAYPOINT_NO_ROUTE', `no route of ${context.service.hostname} matches ${request.method} ${url}`), 'route_not_found');
        return;
      }
      // VirtualService fault injection (fault.ts), before anything goes upstream, as Envoy's fault filter.
      if (entry.fault) {
        const fault = await applyFault(entry.fault, response);
        record.faultFlags = fault.flags;
        if (fault.clientGone || fault.abortedWith !== undefined) {
          request.resume();
          this.#finish(request, response, record, fault.abortedWith ?? 0, fault.clientGone ? 'DC' : '-', fault.clientGone ? 'downstream_remote_disconnect' : 'fault_filter_abort');
          return;
        }
      }
      if (entry.redirect) {
        const location = redirectLocation(entry, { host: String(request.headers.host ?? request.headers[':authority'] ?? ''), path, query, servicePort });
        request.resume();
        response.writeHead(entry.redirect.statusCode, { location, 'content-length': '0' });
        response.end();
        this.#finish(request, response, record, entry.redirect.statusCode, '-', 'direct_response');
        return;
      }
      backend = pickBackend(entry);
      const backendService = backend && this.#state.serviceByKey(backend.service);
      if (!backend || !backendService) {
        request.resume();
        response.writeHead(500, { 'content-type': 'text/plain' });
        response.end(`route ${entry.route} has no usable backend\n`);
        this.#finish(request, response, record, 500, '-', 'no_usable_backend');
        return;
      }
      record.destination = backendService;
      port = backend.port;
    }
    await this.#forward(request, response, record, port, backend, url, path, query);
  }

  /** The request's headers as the backend gets them: end-to-end ones, the filters', the request id and trace context. */
  #upstreamHeaders(request: RequestLine, record: RequestRecord, backend: RouteBackend | undefined): http.OutgoingHttpHeaders {
    const headers = endToEndHeaders(request.headers);
    // HTTP/2 clients send :authority instead of Host.
    if (headers.host === undefined && request.headers[':authority'] !== undefined) headers.host = String(request.headers[':authority']);
    const entry = record.entry;
    if (entry?.urlRewrite?.hostname) headers.host = entry.urlRewrite.hostname;
    modifyHeaders(headers, entry?.requestHeaderModifier);
    modifyHeaders(headers, backend?.requestHeaderModifier);
    headers['x-request-id'] = record.requestId;
    headers.traceparent = traceparentOf(record.trace);
    if (record.trace.tracestate !== undefined) headers.tracestate = record.trace.tracestate;
    else delete headers.tracestate;
    return headers;
  }

  async #forward(request: DownstreamRequest, response: DownstreamResponse, record: RequestRecord, port: number, backend: RouteBackend | undefined, url: string, path: string, query: string): Promise<void> {
    const entry = record.entry;
    const method = request.method ?? 'GET';
    const upstreamUrl = entry ? rewrittenUrl(entry, path, query) : url;
    const headers = this.#upstreamHeaders(request, record, backend);
    const vip = record.context.hbone.target.host;
    // Retries and mirrors need the body again: read it ahead (up to the limit); otherwise it streams to the one try.
    const retryPolicy = entry?.retry ?? ISTIO_DEFAULT_RETRY;
    // A client that sent `Expect: 100-continue` sends its body only after the endpoint's 100: nothing to read ahead.
    const expectsContinue = String(request.headers.expect ?? '').toLowerCase() === '100-continue';
    const needsBody = !expectsContinue && (retryPolicy.attempts > 0 || (entry !== undefined && entry.mirrors.length > 0));
    const body: BufferedBody = needsBody ? await bufferBody(request, MAX_BUFFERED_BODY_BYTES) : { chunks: [], bytes: 0, complete: false, source: request };
    record.requestBytes = body.bytes;
    // The client left while its body was being read: nothing to send, nobody to answer.
    if (!body.complete && (request.socket as Duplex | null)?.destroyed) return;
    for (const mirror of entry?.mirrors ?? []) {
      const service = this.#state.serviceByKey(mirror.service);
      if (!service || (mirror.fraction < 1 && Math.random() >= mirror.fraction)) continue;
      sendMirror(this.#upstreams, { service, servicePort: mirror.port, vip, method, url: upstreamUrl, headers, body }, (message) => this.#log?.debug({ mirror: mirror.service, err: message }, 'mirror request failed'));
    }
    // ---- DestinationRule hook (waypoint/destination/, issue 13 item 3): a pool slot for the request (or 503 UO), the
    // rule's endpoint choice for each try, and the outcome for outlier detection when the request ends (#finish). ----
    const traffic = this.#destinations?.forService(cachedServiceKey(record.destination));
    // A VirtualService destination's subset: its pods, as the backend's DestinationRule defines it (none: 503 NC).
    const subset = backend?.subset !== undefined ? traffic?.subsetPods(backend.subset) : undefined;
    if (backend?.subset !== undefined && subset === undefined) {
      this.#answer(request, response, record, new WaypointError('WAYPOINT_UNKNOWN_SUBSET', `no DestinationRule of ${record.destination.hostname} defines subset ${backend.subset}`), 'cluster_not_found');
      return;
    }
    if (traffic) {
      let admitted: DestinationRequest;
      try {
        const begun = traffic.begin({ headers: request.headers, url, sourceIp: plainAddress(record.context.hbone.remoteAddress) }, subset);
        admitted = begun instanceof Promise ? await begun : begun;
      } catch (error) {
        if (!(error instanceof WaypointError)) throw error;
        this.#destinations!.overflowed(cachedServiceKey(record.destination));
        // Envoy marks a circuit breaker's 503 with x-envoy-overloaded.
        this.#answer(request, response, record, error, 'upstream_overflow', error.responseFlags, { 'x-envoy-overloaded': 'true' });
        return;
      }
      record.destinationRequest = admitted;
      // The slot goes back when the client goes, also if it went while this request waited for the slot.
      response.once('close', () => admitted.done(undefined));
      if ((request.socket as Duplex | null)?.destroyed) {
        admitted.done(undefined);
        return;
      }
    }
    // ---- end of hook ----
    const onBodyChunk = (chunk: Buffer): void => {
      record.requestBytes += chunk.length;
    };
    // The tries, the request timeout and the retries (request-attempts.ts, shared with the HTTP/2 path).
    const tries = new RequestAttempts<http.IncomingMessage>({
      policy: retryPolicy,
      requestTimeoutMs: entry?.requestTimeoutMs ?? 0,
      facts: INCOMING_MESSAGE_FACTS,
      replayable: () => body.complete && !response.writableEnded,
      ...(record.destinationRequest ? { onRetried: (outcome: number | 'connect-failure') => record.destinationRequest?.tryEnded(outcome) } : {}),
      start: (avoid) =>
        new UpstreamTry(this.#upstreams, this.#connections, {
          service: record.destination, servicePort: port, vip, method, url: upstreamUrl, headers, body, timeoutMs: entry?.backendRequestTimeoutMs ?? 0, onBodyChunk,
          ...(expectsContinue ? { onContinue: () => response.writeContinue() } : {}),
          ...(avoid !== undefined ? { avoid } : {}),
          ...(record.destinationRequest ? { choose: record.destinationRequest.choose } : {}),
        }),
    });
    // The client went away: no try goes on for it.
    response.once('close', () => tries.abort());
    const result = await tries.run();
    const current = result.attempt as UpstreamTry;
    record.attempts = tries.attempts;
    record.endpoint = current.endpoint;
    record.upstreamHost = current.address;
    if (result.kind === 'timeout') {
      this.#answer(request, response, record, result.error, 'request_timeout');
      return;
    }
    if (result.kind === 'error') {
      this.#answer(request, response, record, result.error, result.error.code === 'WAYPOINT_BACKEND_TIMEOUT' ? 'upstream_per_try_timeout' : 'upstream_reset_before_response_started', result.flags);
      return;
    }
    this.#relay(request, response, record, result.response, current, backend, result.flags, () => tries.timedOut, () => tries.stop());
  }

  /** Passes the backend's response on (with the response header filters); a cut upstream cuts the client's. */
  #relay(request: DownstreamRequest, response: DownstreamResponse, record: RequestRecord, upstreamResponse: http.IncomingMessage, current: UpstreamTry, backend: RouteBackend | undefined, flags: string, requestTimedOut: () => boolean, stopTimer: () => void): void {
    const headers = endToEndHeaders(upstreamResponse.headers);
    modifyHeaders(headers, record.entry?.responseHeaderModifier);
    modifyHeaders(headers, backend?.responseHeaderModifier);
    const status = upstreamResponse.statusCode ?? 502;
    response.writeHead(status, headers);
    upstreamResponse.on('data', (chunk: Buffer) => {
      record.responseBytes += chunk.length;
    });
    upstreamResponse.once('close', () => {
      stopTimer();
      if (!upstreamResponse.complete) {
        // Cut after the head: the client must not take a short body for a whole one.
        response.destroy();
        this.#finish(request, response, record, status, current.timedOut || requestTimedOut() ? 'UT' : 'UC', 'upstream_reset_after_response_started');
      }
    });
    upstreamResponse.pipe(response);
    response.once('finish', () => {
      stopTimer();
      this.#finish(request, response, record, status, flags, 'via_upstream');
    });
  }

  /** Answers with the waypoint's own error response (the body says why). */
  #answer(request: DownstreamRequest, response: DownstreamResponse, record: RequestRecord, error: WaypointError, details: string, flags = error.responseFlags, extraHeaders?: http.OutgoingHttpHeaders): void {
    request.resume();
    if (response.headersSent) {
      response.destroy();
    } else {
      response.writeHead(error.status, { 'content-type': 'text/plain', ...extraHeaders });
      response.end(`${error.message}\n`);
    }
    this.#finish(request, response, record, error.status, flags, details);
  }

  #record(context: StreamContext, request: RequestLine): RequestRecord {
    return {
      context, started: performance.now(), requestId: requestIdOf(request.headers), trace: traceContextOf(request.headers), entry: undefined, destination: context.service,
      endpoint: undefined, upstreamHost: '', attempts: 0, requestBytes: 0, responseBytes: 0, details: 'via_upstream', faultFlags: '',
    };
  }

  /** An `Upgrade` request (WebSocket): L7 policy first, as for any request, then upgrade.ts routes and joins it. */
  async #upgrade(request: http.IncomingMessage, socket: Duplex, head: Buffer): Promise<void> {
    const context = this.#contexts.get(socket);
    if (!context) {
      socket.destroy();
      return;
    }
    const record = this.#record(context, request);
    const refusal = this.#gate && (await this.#gate.check(request, rawResponseOn(socket), context.hbone, context.service));
    if (refusal) {
      this.#finish(request, undefined, record, refusal.status, refusal.responseFlags, refusal.details);
      return;
    }
    await proxyUpgrade(request, socket, head, {
      routes: this.#routes,
      state: this.#state,
      upstreams: this.#upstreams,
      service: context.service,
      servicePort: context.hbone.target.port,
      vip: context.hbone.target.host,
      done: (outcome) => {
        record.destination = outcome.destination;
        record.endpoint = outcome.endpoint;
        this.#finish(request, undefined, record, outcome.status, outcome.flags, outcome.status === 101 ? 'via_upstream' : 'upgrade_failed');
      },
    });
  }

  #finish(request: RequestLine, _response: DownstreamResponse | undefined, record: RequestRecord, status: number, answerFlags: string, details: string): void {
    const { context, endpoint, destination } = record;
    const flags = record.faultFlags === '' ? answerFlags : answerFlags === '-' ? record.faultFlags : `${record.faultFlags},${answerFlags}`;
    // DestinationRule hook: the slot goes back; what the endpoint did goes to outlier detection (a reset, a failed
    // connect or a timeout counts as a gateway error, as Envoy's local-origin errors do).
    record.destinationRequest?.done(/U[FCT]/.test(flags) ? 'connect-failure' : details === 'via_upstream' ? status : undefined);
    const source = context.source;
    const durationMs = performance.now() - record.started;
    // One facts object for every request, filled in here (the metrics read it during the call only).
    const facts = (this.#metricFacts ??= { source, peer: context.hbone.peerIdentity, endpoint, service: destination, protocol: 'http', status, flags });
    facts.source = source;
    facts.peer = context.hbone.peerIdentity;
    facts.endpoint = endpoint;
    facts.service = destination;
    facts.status = status;
    facts.flags = flags;
    this.#metrics.requestCounted(facts, durationMs, record.requestBytes, record.responseBytes);
    if (this.#log) {
      // One record for every request's line, filled in here (logRequest keeps nothing of it).
      const line = this.#logRecord;
      line.method = request.method ?? '';
      line.path = request.url ?? '';
      line.protocol = request.httpVersion === '1.1' ? 'HTTP/1.1' : `HTTP/${request.httpVersion === '2.0' ? '2' : request.httpVersion}`;
      line.authority = request instanceof LeanExchange ? request.authority : String(request.headers.host ?? request.headers[':authority'] ?? '');
      line.status = status;
      line.flags = flags;
      line.details = details;
      line.durationMs = durationMs;
      fillTryFields(line, record, record.requestBytes, decisionOf(request));
      logRequest(this.#log, line);
    }
    // Nothing reads the lean request's objects after this: they may serve the stream's next request.
    if (record instanceof LeanRequest) record.release();
  }
}
