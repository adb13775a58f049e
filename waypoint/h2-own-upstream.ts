/**
 * HTTP/2 to endpoints on ambit's own HTTP/2 layer (shared/hbone/h2/), the lean alternative to h2-upstream.ts's
 * node:http2 sessions: one H2Connection per endpoint run straight on the upstream HBONE stream's chunks (or on the
 * TCP socket of an endpoint outside the mesh), no JS socket wrapper, no nghttp2 session nested in the HBONE one.
 * Each request stream is handed to the try as an OwnUpstreamStream, which behaves as the subset of node:http2's
 * ClientHttp2Stream the waypoint drives (UpstreamH2Stream): 'response' (headers, flags; and 'responseFields' with the
 * layer's list instead of the object, which is made only for a 'response' listener), 'trailers' (the list kept as
 * `trailerFields`, the object made only for a listener), 'data' while
 * flowing (held while paused or before a reader is attached), 'end', 'close' after them, 'drain', 'wantTrailers'
 * on end, rstCode. What the layer does not do here: 1xx heads are not passed on (the layer drops them).
 * The default; `AMBIT_WAYPOINT_H2_UPSTREAM=node` puts h2-upstream.ts's node:http2 sessions back (config.ts). An endpoint's
 * RST_STREAM NO_ERROR after its answer began ends the answer, as node:http2's client takes it (see onClose).
 *
 * Owns: the connections per endpoint, their stream counts and idle close; the header conversions both ways.
 * Must not know about: routes, downstream streams, which endpoint to pick (upstream.ts picks; this dials through it).
 * Hot path: a chunk goes from the layer's DATA handler to one 'data' emit; nothing is allocated per chunk here.
 */
import http2 from 'node:http2';
import type { Duplex } from 'node:stream';
import { H2Connection } from '../shared/hbone/h2/connection.ts';
import { H2DuplexStream } from '../shared/hbone/h2/duplex.ts';
import { H2StreamTransport } from '../shared/hbone/h2/stream-transport.ts';
import { deferToTurnEnd } from '../shared/hbone/read-turn.ts';
import type { HeaderList } from '../shared/hbone/h2/hpack.ts';
import type { H2Stream, H2StreamHandler } from '../shared/hbone/h2/stream.ts';
import { FlowingStreamEvents } from './h2-stream-events.ts';
import type { Service } from '../shared/mesh/service.ts';
import { workloadIdentity } from '../shared/mesh/workload.ts';
import { WaypointError } from './errors.ts';
import { H2_MAX_STREAMS_PER_SESSION, H2_SESSION_WINDOW_BYTES, H2_STREAM_WINDOW_BYTES, H2_UPSTREAM_IDLE_MS, type H2Sessions, type UpstreamH2Stream } from './h2-upstream.ts';
import type { UpstreamRequestHead } from './h2-upstream-head.ts';
import type { UpstreamTarget, Upstreams } from './upstream.ts';

const { NGHTTP2_FLAG_END_STREAM } = http2.constants;


const H2_PROTOCOL_ERROR = http2.constants.NGHTTP2_PROTOCOL_ERROR;
const H2_NO_ERROR = http2.constants.NGHTTP2_NO_ERROR;
/** Fields that never go in HTTP/2 trailers (RFC 9113 8.2.2, and transfer-encoding's relatives). */
const CONNECTION_SPECIFIC_TRAILERS = new Set(['connection', 'keep-alive', 'proxy-connection', 'transfer-encoding', 'upgrade']);

/** Bytes a field name may hold (RFC 9110's token characters, lower-case, and ':' for pseudo-headers): 1 at each. */
const FIELD_NAME_BYTES = new Uint8Array(128);
for (const character of "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz:") FIELD_NAME_BYTES[character.charCodeAt(0)] = 1;

/** A field name or value node:http2 would refuse to send (it throws ERR_INVALID_HTTP_TOKEN / ERR_INVALID_CHAR). */
export function badField(name: string, value: string): boolean {
  for (let index = 0; index < value.length; index++) {
    const code = value.charCodeAt(index);
    if (code === 0 || code === 0x0a || code === 0x0d) return true;
  }
  if (name.length === 0) return true;
  for (let index = 0; index < name.length; index++) {
    const code = name.charCodeAt(index);
    if (code >= 128 || FIELD_NAME_BYTES[code] === 0) return true;
  }
  return false;
}

/**
 * `headers` (node:http2's outgoing object) as the layer's flat list: pseudo-headers first, names lower-cased,
 * arrays as repeated fields. Throws WAYPOINT_BAD_HEADER for a field Node would refuse. `pseudoDefaults`: pseudo-header
 * names and values (or functions making the value, called only when the header is absent) added when absent.
 */
export function headerListOf(headers: http2.OutgoingHttpHeaders, pseudoDefaults: ReadonlyArray<string | (() => string)> = []): string[] {
  return fieldListOf(headers, pseudoDefaults, undefined);
}

/** A response head's fields for the layer (which writes `:status` itself): headerListOf's list without `:status`. */
export function responseFieldListOf(headers: http2.OutgoingHttpHeaders): string[] {
  return fieldListOf(headers, [], ':status');
}

function fieldListOf(headers: http2.OutgoingHttpHeaders, pseudoDefaults: ReadonlyArray<string | (() => string)>, omitted: string | undefined): string[] {
  // One list made at its size (a list grown by push is copied at 17 and 41 slots: a head of twelve fields made three
  // backing stores), filled in two passes over the object (pseudo-headers, then the rest).
  let size = 0;
  for (const key in headers) {
    const value = headers[key];
    if (value !== undefined) size += Array.isArray(value) ? value.length : 1;
  }
  for (let index = 0; index < pseudoDefaults.length; index += 2) if (headers[pseudoDefaults[index] as string] === undefined) size++;
  const list = new Array<string>(2 * size);
  let at = 0;
  let regular = false;
  for (const key in headers) {
    if (key.charCodeAt(0) === 58 /* : */) at = putValue(list, at, lowerName(key), headers[key], omitted);
    else regular = true;
  }
  for (let index = 0; index < pseudoDefaults.length; index += 2) {
    const name = pseudoDefaults[index] as string;
    if (headers[name] !== undefined) continue;
    const value = pseudoDefaults[index + 1]!;
    list[at++] = name;
    list[at++] = typeof value === 'string' ? value : value();
  }
  if (regular) {
    for (const key in headers) if (key.charCodeAt(0) !== 58) at = putValue(list, at, lowerName(key), headers[key], omitted);
  }
  // The omitted name's slots, if it was there (a response head's :status).
  while (list.length > at) list.pop();
  return list;
}

/**
 * `name` lower-cased: itself when it has no upper-case letter (every name the decoder and the proxy make), without
 * `toLowerCase`, which builds a new string for it even then.
 */
export function lowerName(name: string): string {
  for (let index = 0; index < name.length; index++) {
    const code = name.charCodeAt(index);
    if (code >= 65 && code <= 90) return name.toLowerCase();
  }
  return name;
}

/** Puts one header's value at `at` (repeated fields for an array) unless it is undefined or the omitted name; the next free index. */
export function putValue(list: string[], at: number, name: string, value: http2.OutgoingHttpHeaders[string], omitted: string | undefined): number {
  if (value === undefined || name === omitted) return at;
  if (typeof value === 'string') return putField(list, at, name, value);
  if (Array.isArray(value)) {
    for (let index = 0; index < value.length; index++) at = putField(list, at, name, String(value[index]));
    return at;
  }
  return putField(list, at, name, String(value));
}

/** Puts one field at `at`, or throws WAYPOINT_BAD_HEADER for a field Node would refuse; the next free index. */
function putField(list: string[], at: number, name: string, text: string): number {
  if (badField(name, text)) throw new WaypointError('WAYPOINT_UPSTREAM_CONNECT_FAILED', `header ${JSON.stringify(name)} cannot be sent to the endpoint: invalid name or value`);
  list[at] = name;
  list[at + 1] = text;
  return at + 2;
}

/** The layer's flat list as node:http2's incoming object: repeated set-cookie as an array, other repeats joined by ', '. */
export function headersObjectOf(list: HeaderList): http2.IncomingHttpHeaders {
  const result: http2.IncomingHttpHeaders = {};
  for (let index = 0; index < list.length; index += 2) {
    const name = list[index]!;
    const value = list[index + 1]!;
    const existing = result[name];
    if (existing === undefined) result[name] = name === 'set-cookie' ? [value] : value;
    else if (Array.isArray(existing)) existing.push(value);
    else result[name] = `${existing}, ${value}`;
  }
  return result;
}

/** True when received trailers are malformed: a pseudo-header, a bad name or value, or a connection-specific field. */
export function trailersProblem(trailers: HeaderList): boolean {
  for (let index = 0; index < trailers.length; index += 2) {
    const name = trailers[index]!;
    if (name.charCodeAt(0) === 58 || CONNECTION_SPECIFIC_TRAILERS.has(name) || badField(name, trailers[index + 1]!)) return true;
  }
  return false;
}

/** Trailers for the layer: no pseudo-headers, no connection-specific fields. */
export function trailerListOf(trailers: http2.OutgoingHttpHeaders): string[] {
  // Made at its size, as fieldListOf's list.
  let size = 0;
  for (const key in trailers) {
    const value = trailers[key];
    if (value !== undefined) size += Array.isArray(value) ? value.length : 1;
  }
  const list = new Array<string>(2 * size);
  let at = 0;
  for (const key in trailers) {
    if (key.charCodeAt(0) === 58 /* : */) continue;
    const name = lowerName(key);
    if (name !== 'connection' && name !== 'transfer-encoding') at = putValue(list, at, name, trailers[key], undefined);
  }
  while (list.length > at) list.pop();
  return list;
}

/** One request stream on an own-layer connection, driven as a node:http2 ClientHttp2Stream is (see the top comment). */
export class OwnUpstreamStream extends FlowingStreamEvents implements H2StreamHandler, UpstreamH2Stream {
  stream: H2Stream | undefined;
  /** Called once when the layer closes the stream (before 'close', which waits for the data to be read). */
  onClosed: ((stream: OwnUpstreamStream) => void) | undefined;
  /** The pool's record of the connection this stream is on (the pool's own, opaque here). */
  pooled: unknown;
  /** The endpoint address counted in flight for this stream (least request). */
  inFlightAddress = '';
  /** The answer's trailers as the layer's list (checked: no pseudo-header, connection field or bad field), once they came. */
  trailerFields: HeaderList | undefined;
  rstCode: number | undefined;
  closed = false;
  destroyed = false;
  /** Data not yet emitted: before a 'data' listener, or while paused. */
  #held: Buffer[] = [];
  #paused = false;
  #reading = false;
  #remoteEnded = false;
  #endEmitted = false;
  #closePending = false;
  #flushScheduled = false;
  /** The answer's content-length (-1: none) and the DATA bytes received, to tell an ended answer from a cut one. */
  #contentLength = -1;
  #receivedBytes = 0;

  /** A 'data' listener starts the flow (FlowingStreamEvents). */
  protected dataListened(): void {
    if (this.#reading) return;
    this.#reading = true;
    this.#schedule();
  }

  // ---- as a ClientHttp2Stream ----

  write(chunk: Buffer): boolean {
    return this.stream !== undefined && !this.closed ? this.stream.write(chunk) : false;
  }

  /** Ends the request: its trailers first when someone waits to give them ('wantTrailers', as node:http2 with waitForTrailers). */
  end(): void {
    if (this.stream === undefined || this.closed) return;
    if (this.listenerCount('wantTrailers') > 0) this.emit('wantTrailers');
    else this.stream.end();
  }

  sendTrailers(headers: http2.OutgoingHttpHeaders): void {
    if (this.stream === undefined || this.closed) return;
    this.stream.endWithTrailers(trailerListOf(headers));
  }

  pause(): this {
    this.#paused = true;
    this.stream?.pauseReading();
    return this;
  }

  resume(): this {
    this.#paused = false;
    this.#reading = true;
    this.stream?.resumeReading();
    this.#schedule();
    return this;
  }

  /** Resets the stream (RST_STREAM `code`) unless it is closed already. */
  close(code: number = http2.constants.NGHTTP2_CANCEL): void {
    if (this.closed || this.stream === undefined) return;
    this.stream.reset(code);
  }

  // ---- as the layer's stream handler ----

  onResponse(_stream: H2Stream, headers: HeaderList, endStream: boolean): void {
    for (let index = 0; index < headers.length; index += 2) {
      if (headers[index] === 'content-length') this.#contentLength = /^[0-9]{1,15}$/u.test(headers[index + 1]!) ? Number(headers[index + 1]) : -1;
    }
    const flags = endStream ? NGHTTP2_FLAG_END_STREAM : 0;
    // As the list to a reader of lists ('responseFields': the try), as node:http2's object to a 'response' listener:
    // the object is made only for one.
    this.emit('responseFields', headers, flags);
    if (this.listenerCount('response') > 0) this.emit('response', headersObjectOf(headers), flags);
  }

  onTrailers(stream: H2Stream, trailers: HeaderList): void {
    // The layer checks response heads, not trailers: a pseudo-header, a bad name or value, or a connection-specific
    // field in them is a malformed answer (RFC 9113 8.1, 8.2): the stream is reset, as nghttp2 does, and nothing of
    // it reaches the client's stream (where node:http2 would throw on sending such trailers on).
    if (trailersProblem(trailers)) {
      stream.reset(H2_PROTOCOL_ERROR);
      return;
    }
    this.trailerFields = trailers;
    // The object only for a listener (the try reads `trailerFields`).
    if (this.listenerCount('trailers') > 0) this.emit('trailers', headersObjectOf(trailers));
  }

  onData(_stream: H2Stream, chunk: Buffer): void {
    this.#receivedBytes += chunk.length;
    if (this.#reading && !this.#paused && this.#held.length === 0) this.emit('data', chunk);
    else this.#held.push(chunk);
  }

  onEnd(): void {
    // After a reset of ours in onTrailers the layer still ends the remote side: the stream is closed already.
    if (this.destroyed) return;
    this.#remoteEnded = true;
    this.#deliver();
  }

  onDrain(): void {
    this.emit('drain');
  }

  onClose(stream: H2Stream): void {
    this.closed = true;
    this.rstCode = stream.rstCode;
    this.onClosed?.(this);
    if (stream.rstCode === H2_NO_ERROR && stream.resetByPeer && stream.responseHeaders !== undefined && (this.#contentLength < 0 || this.#receivedBytes === this.#contentLength)) {
      // The endpoint's RST_STREAM NO_ERROR after its answer began: node:http2 servers send it in place of an
      // END_STREAM that waits behind a stream window we stopped crediting (our reader paused): its stream is
      // done once its last DATA is written, and nghttp2 never sends a DATA frame into a zero window, not even an
      // empty one. node:http2's client takes it as the end (what came is the answer, `rstCode` 0), and so does
      // this adapter: held data, then 'end', then 'close'. Treating it as a reset dropped the held end of the
      // answer and left the client's stream open (the stall of net test waypoint-http-protocols). An answer
      // shorter than its content-length is cut, not ended: a reset (PROTOCOL_ERROR, as nghttp2 calls a mismatch).
      this.#remoteEnded = true;
      this.#closePending = true;
      this.#deliver();
      return;
    }
    if (stream.rstCode === H2_NO_ERROR && stream.resetByPeer && stream.responseHeaders !== undefined) this.rstCode = H2_PROTOCOL_ERROR;
    if (stream.rstCode !== undefined) {
      // A reset: what was held is dropped and the close is said at once (node:http2 destroys the stream).
      this.#held = [];
      this.destroyed = true;
      this.emit('close');
      return;
    }
    this.#closePending = true;
    this.#deliver();
  }

  /** The scheduled delivery (#schedule): at the end of the read callback that asked for it, or on the next tick. */
  flush(): void {
    this.#flushScheduled = false;
    this.#deliver();
  }

  #schedule(): void {
    if (this.#flushScheduled) return;
    this.#flushScheduled = true;
    deferToTurnEnd(flushUpstream, this);
  }

  /** Emits what is held (while flowing), then 'end' once the peer ended and all was read, then 'close'. */
  #deliver(): void {
    if (!this.#reading || this.#paused) return;
    while (this.#held.length > 0) {
      this.emit('data', this.#held.shift()!);
      if (this.#paused) return;
    }
    if (this.#remoteEnded && !this.#endEmitted) {
      this.#endEmitted = true;
      this.emit('end');
    }
    if (this.#closePending && (this.#endEmitted || !this.#remoteEnded)) {
      this.#closePending = false;
      this.destroyed = true;
      this.emit('close');
    }
  }
}

function flushUpstream(stream: OwnUpstreamStream): void {
  stream.flush();
}

interface OwnPooledConnection {
  connection: H2Connection;
  streams: number;
  key: string;
  idleSince: number;
  idleTimer: NodeJS.Timeout | undefined;
}

export class H2OwnSessionPool implements H2Sessions {
  readonly #upstreams: Upstreams;
  readonly #connectionsByEndpoint = new Map<string, OwnPooledConnection[]>();
  readonly #connectingByEndpoint = new Map<string, Promise<OwnPooledConnection>>();
  /** Connections opened so far (tests and config_dump read it to see reuse). */
  sessionsOpened = 0;
  /**
   * The pool key of the last endpoint asked for, kept with what it was made of: requests to the same endpoint find
   * their pool by the same (already hashed) string instead of building and hashing a new one each.
   */
  #lastKey = '';
  #lastKeyHost = '';
  #lastKeyPort = -1;
  #lastKeyEndpoint: UpstreamTarget['endpoint'] | undefined;
  /** The pseudo-headers a request to the last endpoint gets when it has none (headerListOf's defaults). */
  #lastDefaults: string[] = [];
  /** Why the last #streamOn failed. */
  #lastRequestError: Error | undefined;

  constructor(upstreams: Upstreams) {
    this.#upstreams = upstreams;
  }

  async request(service: Service, picked: UpstreamTarget, head: UpstreamRequestHead, endStream: boolean): Promise<UpstreamH2Stream> {
    const key = this.#keyOf(picked);
    const list = head.fieldsWith(this.#lastDefaults);
    for (let attempt = 0; ; attempt++) {
      const pooled = await this.#connectionFor(key, service, picked);
      const upstream = this.#streamOn(pooled, list, picked, endStream);
      if (upstream !== undefined) return upstream;
      if (attempt > 0) throw new WaypointError('WAYPOINT_UPSTREAM_CONNECT_FAILED', `HTTP/2 to ${key} failed: ${this.#lastRequestError?.message ?? 'no connection'}`, { cause: this.#lastRequestError });
    }
  }

  /** `request` at once on a pooled connection with room (no promise); undefined when none has room now. */
  requestNow(_service: Service, picked: UpstreamTarget, head: UpstreamRequestHead, endStream: boolean): UpstreamH2Stream | undefined {
    const pooled = this.#pooledWithRoom(this.#keyOf(picked));
    if (pooled === undefined) return undefined;
    return this.#streamOn(pooled, head.fieldsWith(this.#lastDefaults), picked, endStream);
  }

  /** The pool key of `picked` (kept for the last endpoint; see #lastKey), and its pseudo-header defaults beside it. */
  #keyOf(picked: UpstreamTarget): string {
    const { host, port } = picked.address;
    if (picked.endpoint !== this.#lastKeyEndpoint || host !== this.#lastKeyHost || port !== this.#lastKeyPort) {
      this.#lastKey = `${host}:${port}/${workloadIdentity(picked.endpoint).uri}`;
      this.#lastKeyHost = host;
      this.#lastKeyPort = port;
      this.#lastKeyEndpoint = picked.endpoint;
      this.#lastDefaults = [':scheme', 'http', ':authority', `${host.includes(':') ? `[${host}]` : host}:${port}`];
    }
    return this.#lastKey;
  }

  /**
   * A request stream on `pooled`, counted; undefined when the connection refused it (it began to close between the
   * pick and the request, GOAWAY: dropped from the pool; or it is full) with the reason in #lastRequestError.
   */
  #streamOn(pooled: OwnPooledConnection, list: string[], picked: UpstreamTarget, endStream: boolean): OwnUpstreamStream | undefined {
    const upstream = new OwnUpstreamStream();
    try {
      upstream.stream = pooled.connection.request(list, upstream, endStream);
    } catch (error) {
      // One that is only full (the endpoint's SETTINGS_MAX_CONCURRENT_STREAMS, reached by requests that waited
      // for it to open) stays pooled: the next round finds another with room or opens one.
      if (pooled.connection.closed || pooled.connection.draining) this.#forget(pooled);
      this.#lastRequestError = error as Error;
      return undefined;
    }
    pooled.streams++;
    this.#upstreams.leastRequest.started(picked.picked.address);
    upstream.pooled = pooled;
    upstream.inFlightAddress = picked.picked.address;
    upstream.onClosed = this.#streamClosed;
    return upstream;
  }

  /** An upstream stream's end: its in-flight count and its connection's stream count (one function per pool). */
  readonly #streamClosed = (upstream: OwnUpstreamStream): void => {
    this.#upstreams.leastRequest.finished(upstream.inFlightAddress);
    this.#released(upstream.pooled as OwnPooledConnection);
  };

  close(): void {
    for (const list of this.#connectionsByEndpoint.values()) for (const pooled of list) pooled.connection.close();
    this.#connectionsByEndpoint.clear();
  }

  view(): object {
    return { implementation: 'own', sessionsOpened: this.sessionsOpened, endpoints: Object.fromEntries([...this.#connectionsByEndpoint].map(([key, list]) => [key, list.map((pooled) => pooled.streams)])) };
  }

  /** A pooled connection to `key` that takes a stream now. */
  #pooledWithRoom(key: string): OwnPooledConnection | undefined {
    const list = this.#connectionsByEndpoint.get(key);
    if (list) {
      for (const pooled of list) if (pooled.streams < H2_MAX_STREAMS_PER_SESSION && pooled.connection.available) return pooled;
    }
    return undefined;
  }

  #connectionFor(key: string, service: Service, picked: UpstreamTarget): Promise<OwnPooledConnection> {
    const pooled = this.#pooledWithRoom(key);
    if (pooled !== undefined) return Promise.resolve(pooled);
    const connecting = this.#connectingByEndpoint.get(key);
    if (connecting) return connecting;
    const opened = this.#open(key, service, picked).finally(() => this.#connectingByEndpoint.delete(key));
    this.#connectingByEndpoint.set(key, opened);
    return opened;
  }

  async #open(key: string, service: Service, picked: UpstreamTarget): Promise<OwnPooledConnection> {
    let transport: Duplex | H2StreamTransport;
    try {
      const upstream = await this.#upstreams.connect(service, picked.picked);
      // An own-layer HBONE leg is read and written straight on its HTTP/2 stream (stream-transport.ts).
      transport = upstream.kind === 'tcp' ? upstream.socket : upstream.stream instanceof H2DuplexStream ? H2StreamTransport.takeOver(upstream.stream, undefined) : upstream.stream;
    } catch (error) {
      if (error instanceof WaypointError) throw error;
      throw new WaypointError('WAYPOINT_UPSTREAM_CONNECT_FAILED', `HTTP/2 to ${key} failed: ${(error as Error).message}`, { cause: error });
    }
    const connection = new H2Connection(transport, { role: 'client', streamWindowBytes: H2_STREAM_WINDOW_BYTES, connectionWindowBytes: H2_SESSION_WINDOW_BYTES });
    this.sessionsOpened++;
    const pooled: OwnPooledConnection = { connection, streams: 0, key, idleSince: performance.now(), idleTimer: undefined };
    connection.on('error', () => {
      // 'close' follows; its streams hear onClose with their reset code
    });
    connection.once('close', () => {
      if (pooled.idleTimer !== undefined) clearTimeout(pooled.idleTimer);
      this.#forget(pooled);
      if (!transport.destroyed) transport.destroy();
    });
    connection.once('goaway', () => this.#forget(pooled));
    this.#armIdle(pooled);
    const list = this.#connectionsByEndpoint.get(key) ?? [];
    list.push(pooled);
    this.#connectionsByEndpoint.set(key, list);
    return pooled;
  }

  #released(pooled: OwnPooledConnection): void {
    pooled.streams--;
    if (pooled.streams === 0) {
      pooled.idleSince = performance.now();
      this.#armIdle(pooled);
    }
  }

  /** Closes the connection once it has had no stream for H2_UPSTREAM_IDLE_MS (one timer at a time, unref'd). */
  #armIdle(pooled: OwnPooledConnection, delayMs = H2_UPSTREAM_IDLE_MS): void {
    if (pooled.idleTimer !== undefined) return;
    pooled.idleTimer = setTimeout(() => {
      pooled.idleTimer = undefined;
      if (pooled.streams > 0 || pooled.connection.closed) return;
      const idleMs = performance.now() - pooled.idleSince;
      if (idleMs >= H2_UPSTREAM_IDLE_MS) pooled.connection.close();
      else this.#armIdle(pooled, H2_UPSTREAM_IDLE_MS - idleMs);
    }, delayMs);
    pooled.idleTimer.unref();
  }

  #forget(pooled: OwnPooledConnection): void {
    const list = this.#connectionsByEndpoint.get(pooled.key);
    if (!list) return;
    const index = list.indexOf(pooled);
    if (index >= 0) list.splice(index, 1);
    if (list.length === 0) this.#connectionsByEndpoint.delete(pooled.key);
  }
}
