/**
 * The waypoint's HTTP/2 path (prior-knowledge h2c, and so gRPC): a terminated CONNECT stream whose client spoke the
 * HTTP/2 preface is handed, as a connection, to one Node HTTP/2 server; each request stream on it is routed like an
 * HTTP/1.1 request (request-target.ts: HTTPRoute and GRPCRoute entries) and forwarded on a pooled HTTP/2 session to
 * one endpoint (h2-upstream.ts). Bodies are piped both ways (HTTP/2 flow control is the back-pressure: nothing
 * buffers a whole message), trailers are carried both ways (gRPC's grpc-status and grpc-message arrive as the
 * endpoint sent them), resets map to resets. When the waypoint itself answers a gRPC request (no route, no
 * endpoint) it answers as Envoy does: HTTP 200, trailers-only, grpc-status mapped from the HTTP status (404 ->
 * 12 UNIMPLEMENTED, 503 -> 14 UNAVAILABLE, 500 -> 2 UNKNOWN) and the reason in grpc-message.
 *
 * A client that sends garbage (a bad preface, a malformed frame) gets a GOAWAY and loses its stream, nothing else.
 *
 * Owns: the per-stream flow, HTTP/2 header handling, the waypoint's own gRPC answers.
 * Must not know about: how routes match, how endpoints are picked, HBONE and TLS.
 */
import http2 from 'node:http2';
import type { Duplex } from 'node:stream';
import type { HboneRequest } from '../shared/hbone/index.ts';
import type { MeshState } from '../shared/mesh/mesh-state.ts';
import type { Service } from '../shared/mesh/service.ts';
import type { Workload } from '../shared/mesh/workload.ts';
import { WaypointError } from './errors.ts';
import { cancelStream, H2_SESSION_WINDOW_BYTES, H2_STREAM_WINDOW_BYTES, type H2SessionPool } from './h2-upstream.ts';
import { requestLabels, type WaypointMetrics } from './metrics.ts';
import { grpcStatusForHttp, isGrpcContentType } from './protocols.ts';
import { routeRequest } from './request-target.ts';
import type { RouteEntry, RouteTable } from './route-table.ts';
import type { Upstreams } from './upstream.ts';
import type { GateRequest, GateResponse, RequestGate } from './authz/request-gate.ts';

const { NGHTTP2_FLAG_END_STREAM, NGHTTP2_NO_ERROR } = http2.constants;

/** Connection-specific headers (RFC 9113 8.2.2): never forwarded (Node refuses them on HTTP/2 anyway). */
const CONNECTION_SPECIFIC = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade', 'http2-settings', 'host']);

/** Limits of the downstream server: as many streams per client connection as the HBONE server allows per tunnel. */
const DOWNSTREAM_MAX_CONCURRENT_STREAMS = 200;

export interface H2StreamContext {
  hbone: HboneRequest;
  service: Service;
  source: Workload | undefined;
}

type HeaderModifier = RouteEntry['requestHeaderModifier'];

/** The request's headers for the endpoint: connection-specific ones dropped, the route's modifier applied. */
export function upstreamRequestHeaders(headers: http2.IncomingHttpHeaders, modifier: HeaderModifier): http2.OutgoingHttpHeaders {
  const result: http2.OutgoingHttpHeaders = {};
  for (const name in headers) if (!CONNECTION_SPECIFIC.has(name)) result[name] = headers[name];
  // HTTP/1.1-style `te` other than trailers is connection-specific too; gRPC's `te: trailers` passes.
  if (result.te !== undefined && result.te !== 'trailers') delete result.te;
  applyModifier(result, modifier);
  return result;
}

/** The endpoint's response headers (or trailers) for the client, with the route's response modifier applied. */
export function downstreamResponseHeaders(headers: http2.IncomingHttpHeaders, modifier: HeaderModifier): http2.OutgoingHttpHeaders {
  const result: http2.OutgoingHttpHeaders = {};
  for (const name in headers) if (!CONNECTION_SPECIFIC.has(name)) result[name] = headers[name];
  applyModifier(result, modifier);
  return result;
}

function applyModifier(headers: http2.OutgoingHttpHeaders, modifier: HeaderModifier): void {
  if (!modifier) return;
  for (const header of modifier.set) headers[header.name.toLowerCase()] = header.value;
  for (const header of modifier.add) {
    const name = header.name.toLowerCase();
    const existing = headers[name];
    headers[name] = existing === undefined ? header.value : `${Array.isArray(existing) ? existing.join(',') : String(existing)},${header.value}`;
  }
  for (const name of modifier.remove) delete headers[name];
}

/** grpc-message is percent-encoded (gRPC over HTTP/2: printable ASCII except '%' stays). */
function grpcMessage(text: string): string {
  return text.replace(/[^\x20-\x24\x26-\x7e]/gu, (character) => encodeURIComponent(character));
}

/** The gate's answer written on an HTTP/2 stream: as HTTP, or as a gRPC status for gRPC requests. */
function gateResponseOn(stream: http2.ServerHttp2Stream, grpc: boolean): GateResponse {
  let status = 0;
  let responseHeaders: Record<string, string | number> = {};
  return {
    writeHead(code, headers) {
      status = code;
      responseHeaders = headers;
    },
    end(body = '') {
      if (stream.closed || stream.destroyed || stream.headersSent) return;
      if (grpc) {
        stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': String(grpcStatusForHttp(status)), 'grpc-message': grpcMessage(body) }, { endStream: true });
        return;
      }
      stream.respond({ ...responseHeaders, ':status': status });
      stream.end(body);
    },
  };
}

export class H2Proxy {
  readonly #server: http2.Http2Server;
  readonly #contexts = new WeakMap<http2.Http2Session, H2StreamContext>();
  readonly #clientSessions = new Set<http2.ServerHttp2Session>();
  #connecting: H2StreamContext | undefined;
  readonly #upstreams: Upstreams;
  readonly #sessions: H2SessionPool;
  readonly #routes: RouteTable;
  readonly #state: MeshState;
  readonly #metrics: WaypointMetrics;
  readonly #gate: RequestGate | undefined;
  /** Client connections that ended in a protocol error (garbage preface or frame), for config_dump and tests. */
  protocolErrors = 0;

  constructor(options: { upstreams: Upstreams; sessions: H2SessionPool; routes: RouteTable; state: MeshState; metrics: WaypointMetrics; gate?: RequestGate }) {
    this.#gate = options.gate;
    this.#upstreams = options.upstreams;
    this.#sessions = options.sessions;
    this.#routes = options.routes;
    this.#state = options.state;
    this.#metrics = options.metrics;
    this.#server = http2.createServer({
      settings: { initialWindowSize: H2_STREAM_WINDOW_BYTES, maxConcurrentStreams: DOWNSTREAM_MAX_CONCURRENT_STREAMS, enablePush: false },
    });
    // The session is made synchronously inside emit('connection'): that is where it learns whose connection it is.
    this.#server.on('session', (session: http2.ServerHttp2Session) => {
      if (this.#connecting) this.#contexts.set(session, this.#connecting);
      this.#clientSessions.add(session);
      session.once('close', () => this.#clientSessions.delete(session));
      // A client whose preface is garbage has its session destroyed before 'connect' handlers run.
      session.once('connect', () => {
        if (!session.destroyed) session.setLocalWindowSize(H2_SESSION_WINDOW_BYTES);
      });
    });
    this.#server.on('stream', (stream, headers, flags) => void this.#handle(stream, headers, flags));
    // A client's bad preface or frame: nghttp2 answers GOAWAY PROTOCOL_ERROR and the session (one HBONE stream) ends.
    this.#server.on('sessionError', () => this.protocolErrors++);
  }

  /** Serves HTTP/2 on `connection` (the terminated HBONE stream, already answered 200) until the client closes it. */
  serveConnection(hbone: HboneRequest, connection: Duplex, service: Service, source: Workload | undefined): void {
    this.#connecting = { hbone, service, source };
    try {
      this.#server.emit('connection', connection);
    } finally {
      this.#connecting = undefined;
    }
  }

  /** Sends every client GOAWAY (their open streams finish; new requests go to a new connection) and stops. */
  close(): void {
    for (const session of this.#clientSessions) session.close();
    this.#server.close();
  }

  async #handle(stream: http2.ServerHttp2Stream, headers: http2.IncomingHttpHeaders, flags: number): Promise<void> {
    const started = performance.now();
    stream.on('error', () => {
      // a reset or a broken connection: 'close' follows and cancels the upstream
    });
    const context = this.#contexts.get(stream.session!);
    const grpc = isGrpcContentType(headers['content-type']);
    if (!context) {
      stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
      return;
    }
    const endStream = (flags & NGHTTP2_FLAG_END_STREAM) !== 0;
    const method = headers[':method'] ?? '';
    let url = headers[':path'] ?? '/';
    if (this.#gate) {
      // L7 policy (waypoint/authz/), as on the HTTP/1.1 path: a refusal is answered here (in gRPC for gRPC requests,
      // as Envoy's local replies are: 403 -> PERMISSION_DENIED, 401 -> UNAUTHENTICATED, 429 -> UNAVAILABLE).
      const gateRequest: GateRequest = { method, url, headers, resume: () => stream.resume() };
      const refusal = await this.#gate.check(gateRequest, gateResponseOn(stream, grpc), context.hbone, context.service);
      if (refusal) {
        this.#finish(context, context.service, undefined, grpc, refusal.status, refusal.responseFlags, started);
        return;
      }
      // The gate normalises the path it decided on (`/a/../b` -> `/b`); the endpoint gets the same path.
      if (gateRequest.url !== undefined && gateRequest.url !== url) headers[':path'] = url = gateRequest.url;
    }
    let destination = context.service;
    let entry: RouteEntry | undefined;
    let upstream: http2.ClientHttp2Stream;
    let endpoint: Workload | undefined;
    try {
      const routed = routeRequest(this.#routes, this.#state, context.service, context.hbone.target.port, method, url, headers);
      destination = routed.destination;
      entry = routed.entry;
      const picked = this.#upstreams.pick(destination, routed.port, context.hbone.target.host);
      endpoint = picked.endpoint;
      upstream = await this.#sessions.request(destination, picked, upstreamRequestHeaders(headers, entry?.requestHeaderModifier), endStream);
    } catch (error) {
      const waypointError = error instanceof WaypointError ? error : new WaypointError('WAYPOINT_UPSTREAM_CONNECT_FAILED', (error as Error).message, { cause: error });
      this.#answer(stream, grpc, waypointError);
      this.#finish(context, destination, endpoint, grpc, waypointError.status, waypointError.responseFlags, started);
      return;
    }
    upstream.on('error', () => {
      // resets and broken sessions: handled on 'close' below
    });
    if (stream.closed || stream.destroyed) {
      cancelStream(upstream);
      return;
    }
    // Request: body piped (flow control both sides is the back-pressure), trailers passed on at its end.
    let requestTrailers: http2.IncomingHttpHeaders | undefined;
    if (!endStream) {
      stream.once('trailers', (trailers: http2.IncomingHttpHeaders) => (requestTrailers = trailers));
      upstream.once('wantTrailers', () => upstream.sendTrailers(requestTrailers ? upstreamRequestHeaders(requestTrailers, undefined) : {}));
      // Ended by hand: Node ends a stream's readable side on RST_STREAM too, and a reset client must not look like
      // a finished request to the endpoint (it gets the reset below, never END_STREAM).
      stream.pipe(upstream, { end: false });
      stream.once('end', () => {
        if (stream.rstCode === undefined || stream.rstCode === NGHTTP2_NO_ERROR) upstream.end();
      });
    }
    // Response: headers, informational headers, body, trailers.
    let status = 0;
    let responseTrailers: http2.IncomingHttpHeaders | undefined;
    const responseModifier = entry?.responseHeaderModifier;
    upstream.on('headers', (informational: http2.IncomingHttpHeaders) => {
      if (!stream.headersSent && !stream.closed) stream.additionalHeaders(downstreamResponseHeaders(informational, undefined));
    });
    upstream.once('response', (responseHeaders: http2.IncomingHttpHeaders, responseFlags: number) => {
      if (stream.closed || stream.destroyed) return;
      status = Number(responseHeaders[':status'] ?? 502);
      if ((responseFlags & NGHTTP2_FLAG_END_STREAM) !== 0) {
        stream.respond(downstreamResponseHeaders(responseHeaders, responseModifier), { endStream: true });
        return;
      }
      stream.respond(downstreamResponseHeaders(responseHeaders, responseModifier), { waitForTrailers: true });
      upstream.pipe(stream);
    });
    upstream.once('trailers', (trailers: http2.IncomingHttpHeaders) => (responseTrailers = trailers));
    stream.once('wantTrailers', () => stream.sendTrailers(responseTrailers ? downstreamResponseHeaders(responseTrailers, undefined) : {}));
    // Resets map to resets: an upstream reset before a response is the waypoint's 503 (UF); after it, the client's
    // stream is reset with the endpoint's code. A client reset cancels the upstream stream.
    upstream.once('close', () => {
      const code = upstream.rstCode ?? NGHTTP2_NO_ERROR;
      if (stream.closed || stream.destroyed) return;
      if (!stream.headersSent) {
        const error = new WaypointError('WAYPOINT_UPSTREAM_CONNECT_FAILED', `the endpoint reset the stream (HTTP/2 error ${code}) before answering`);
        status = error.status;
        this.#answer(stream, grpc, error);
      } else if (code !== NGHTTP2_NO_ERROR) {
        stream.close(code);
      }
    });
    stream.once('close', () => {
      if (!upstream.closed) cancelStream(upstream);
      const reset = stream.rstCode !== undefined && stream.rstCode !== NGHTTP2_NO_ERROR;
      this.#finish(context, destination, endpoint, grpc, status || 503, reset && status === 0 ? 'DC' : '-', started);
    });
  }

  /** The waypoint's own answer: an HTTP status, or for gRPC a trailers-only response with the mapped grpc-status. */
  #answer(stream: http2.ServerHttp2Stream, grpc: boolean, error: WaypointError): void {
    if (stream.closed || stream.destroyed || stream.headersSent) return;
    if (grpc) {
      stream.respond({ ':status': 200, 'content-type': 'application/grpc', 'grpc-status': String(grpcStatusForHttp(error.status)), 'grpc-message': grpcMessage(error.message) }, { endStream: true });
    } else {
      stream.respond({ ':status': error.status, 'content-type': 'text/plain' });
      stream.end(`${error.message}\n`);
    }
  }

  #finish(context: H2StreamContext, service: Service, endpoint: Workload | undefined, grpc: boolean, status: number, flags: string, started: number): void {
    const labels = requestLabels({ source: context.source, peer: context.hbone.peerIdentity, endpoint, service, protocol: grpc ? 'grpc' : 'http', status, flags });
    this.#metrics.request(labels, performance.now() - started);
  }

}
