/**
 * The client-facing side of the waypoint's HTTP/2 (h2c and gRPC inside a terminated HBONE stream) on ambit's own
 * HTTP/2 layer (shared/hbone/h2/, server role), the lean alternative to one node:http2 server session nested in the
 * HBONE stream: the layer's H2Connection runs straight on the terminated stream's chunks, and each request stream is
 * handed to h2-proxy.ts as an OwnDownstreamStream, which behaves as the subset of node:http2's ServerHttp2Stream the
 * proxy drives (DownstreamH2Stream): the request body as 'data' while flowing (held while paused or before a reader
 * is attached; the layer stops crediting the client while anything is held), 'trailers', 'end', 'close' after them;
 * the answer with `respond` (head, END_STREAM or trailers to follow), `additionalHeaders` (1xx), `write` with
 * 'drain', `end`, 'wantTrailers' then `sendTrailers`, `close(code)` (RST_STREAM), `rstCode`.
 * The default (waypoint/config.ts, AMBIT_WAYPOINT_H2_DOWNSTREAM; `node` serves with node:http2's server instead).
 * The client's rapid resets spend nghttp2's budget, not the layer's looser one for pooled HBONE (`limits`).
 *
 * What the layer already refuses for us (each a stream or connection error, never a throw): malformed requests
 * (pseudo-headers, upper-case or connection-specific fields, CR/LF/NUL), frames too large, HPACK bombs,
 * CONTINUATION floods, window overflow, stream floods past SETTINGS_MAX_CONCURRENT_STREAMS, rapid reset. Here:
 * request trailers with a pseudo-header, a bad field or a connection field reset the stream (PROTOCOL_ERROR).
 *
 * Owns: the connection per terminated stream and the request streams' node:http2 face. Must not know about:
 * routes, endpoints, policies (h2-proxy.ts), HBONE and TLS.
 * Hot path: a request chunk goes from the layer's DATA handler to one 'data' emit; an answer chunk is one
 * `H2Stream.write`; nothing is allocated per chunk here.
 */
import http2 from 'node:http2';
import type { Duplex } from 'node:stream';
import { H2Connection } from '../shared/hbone/h2/connection.ts';
import { H2DuplexStream } from '../shared/hbone/h2/duplex.ts';
import { H2StreamTransport } from '../shared/hbone/h2/stream-transport.ts';
import { deferPastCheckPhaseWrites } from '../shared/hbone/check-phase.ts';
import { deferToTurnEnd } from '../shared/hbone/read-turn.ts';
import type { HeaderList } from '../shared/hbone/h2/hpack.ts';
import type { H2Stream, H2StreamHandler } from '../shared/hbone/h2/stream.ts';
import { FlowingStreamEvents, type StreamListener } from './h2-stream-events.ts';
import { headersObjectOf, responseFieldListOf, trailerListOf, trailersProblem } from './h2-own-upstream.ts';

const { NGHTTP2_FLAG_END_STREAM, NGHTTP2_NO_ERROR, NGHTTP2_PROTOCOL_ERROR } = http2.constants;

type Listener = StreamListener;

/** What h2-proxy.ts drives of a client's request stream: node:http2's ServerHttp2Stream or an OwnDownstreamStream. */
export interface DownstreamH2Stream {
  readonly closed: boolean;
  readonly destroyed: boolean;
  readonly headersSent: boolean;
  readonly rstCode: number | undefined;
  respond(headers?: http2.OutgoingHttpHeaders, options?: { endStream?: boolean; waitForTrailers?: boolean }): void;
  additionalHeaders(headers: http2.OutgoingHttpHeaders): void;
  write(chunk: Buffer): boolean;
  end(body?: string): unknown;
  sendTrailers(headers: http2.OutgoingHttpHeaders): void;
  close(code?: number): void;
  pause(): unknown;
  resume(): unknown;
  on(event: string, listener: Listener): unknown;
  once(event: string, listener: Listener): unknown;
  off(event: string, listener: Listener): unknown;
}

/** One request stream of the own-layer server, driven as node:http2's ServerHttp2Stream is (see the top comment). */
export class OwnDownstreamStream extends FlowingStreamEvents implements H2StreamHandler, DownstreamH2Stream {
  readonly stream: H2Stream;
  rstCode: number | undefined;
  closed = false;
  destroyed = false;
  headersSent = false;
  #waitForTrailers = false;
  /** Request data not yet emitted: before a 'data' listener, or while paused. */
  #held: Buffer[] = [];
  #paused = false;
  #reading = false;
  #remoteEnded = false;
  #endEmitted = false;
  #closePending = false;
  #flushScheduled = false;

  constructor(stream: H2Stream) {
    super();
    this.stream = stream;
    stream.setHandler(this);
  }

  /** The request head as node:http2 hands it to a 'stream' listener (made at each read: the proxy reads the list). */
  get requestHeaders(): http2.IncomingHttpHeaders {
    return headersObjectOf(this.stream.requestHeaders);
  }

  /** A 'data' listener starts the flow (FlowingStreamEvents). */
  protected dataListened(): void {
    if (this.#reading) return;
    this.#reading = true;
    this.#schedule();
  }

  // ---- the answer ----

  respond(headers: http2.OutgoingHttpHeaders = {}, options: { endStream?: boolean; waitForTrailers?: boolean } = {}): void {
    if (this.closed || this.headersSent) return;
    this.headersSent = true;
    const status = Number(headers[':status'] ?? 200);
    const fields = responseFieldListOf(headers);
    this.#waitForTrailers = options.waitForTrailers === true && options.endStream !== true;
    this.stream.respond(status, fields, options.endStream === true);
  }

  /**
   * `respond` with the answer's fields as the layer's list already (without `:status`, checked): the endpoint's head
   * passed on as it came, no object between (h2-proxy.ts's relay, a route without response modifiers).
   */
  respondFields(status: number, fields: readonly string[], endStream: boolean, waitForTrailers: boolean): void {
    if (this.closed || this.headersSent) return;
    this.headersSent = true;
    this.#waitForTrailers = waitForTrailers && !endStream;
    this.stream.respond(status, fields, endStream);
  }

  /** `sendTrailers` with the trailers as the layer's list already (checked, no pseudo-header or connection field). */
  sendTrailerFields(trailers: readonly string[]): void {
    if (this.closed || this.stream.localEnded) return;
    this.stream.endWithTrailers(trailers);
  }

  /** A 1xx head before the answer (100 Continue, 103 Early Hints). */
  additionalHeaders(headers: http2.OutgoingHttpHeaders): void {
    if (this.closed || this.headersSent) return;
    const status = Number(headers[':status'] ?? 0);
    if (status < 100 || status > 199) return;
    this.stream.respond(status, responseFieldListOf(headers), false);
  }

  write(chunk: Buffer | string): boolean {
    if (this.closed) return false;
    if (!this.headersSent) this.respond({ ':status': 200 });
    return this.stream.write(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
  }

  /** Ends the answer (after `body`): trailers first when respond asked to wait for them ('wantTrailers'). */
  end(body?: string | Buffer): this {
    if (this.closed) return this;
    if (!this.headersSent) this.respond({ ':status': 200 });
    if (body !== undefined && body.length > 0) this.stream.write(typeof body === 'string' ? Buffer.from(body) : body);
    if (this.#waitForTrailers) {
      this.#waitForTrailers = false;
      this.emit('wantTrailers');
      // No trailers given in 'wantTrailers': the answer ends as it is.
      if (!this.stream.localEnded) this.stream.end();
    } else {
      this.stream.end();
    }
    return this;
  }

  sendTrailers(headers: http2.OutgoingHttpHeaders): void {
    if (this.closed || this.stream.localEnded) return;
    this.stream.endWithTrailers(trailerListOf(headers));
  }

  /** Resets the stream with `code` (node:http2's close: NO_ERROR by default) unless it is closed already. */
  close(code: number = NGHTTP2_NO_ERROR): void {
    if (this.closed) return;
    this.stream.reset(code);
  }

  // ---- the request body ----

  pause(): this {
    this.#paused = true;
    this.stream.pauseReading();
    return this;
  }

  resume(): this {
    this.#paused = false;
    this.#reading = true;
    this.#schedule();
    return this;
  }

  // ---- as the layer's stream handler ----

  onData(stream: H2Stream, chunk: Buffer): void {
    if (this.#reading && !this.#paused && this.#held.length === 0) {
      this.emit('data', chunk);
      return;
    }
    // Held: no more credit for the client until it is read (the stream window bounds what is held).
    this.#held.push(chunk);
    stream.pauseReading();
  }

  onTrailers(stream: H2Stream, trailers: HeaderList): void {
    if (trailersProblem(trailers)) {
      stream.reset(NGHTTP2_PROTOCOL_ERROR);
      return;
    }
    this.emit('trailers', headersObjectOf(trailers));
  }

  onEnd(): void {
    // After a reset of ours in onTrailers the layer still ends the remote side: no 'end' for a reset stream.
    if (this.closed && this.rstCode !== undefined && this.rstCode !== NGHTTP2_NO_ERROR) return;
    this.#remoteEnded = true;
    this.#deliver();
  }

  onDrain(): void {
    this.emit('drain');
  }

  onClose(stream: H2Stream): void {
    this.closed = true;
    this.rstCode = stream.rstCode;
    // Said on the loop's next check phase, as node:http2's comes after its session's write: the layer closes a stream
    // inside `respond`/`end` (a request that had ended), and the proxy's 'close' listener (metrics, access log) must
    // see what the caller decides after them, awaits included (a nextTick would run before their promise jobs when
    // the answer is written from an I/O callback). In the same Immediate as the nested connections' flushes, after
    // them and the outer writes they cause (check-phase.ts): the listeners' metrics and access-log line are not on the
    // answer's way out.
    deferPastCheckPhaseWrites(closeLater, this);
  }

  /** The close, a tick after the layer's (see onClose). */
  closeLater(): void {
    const stream = this.stream;
    if (stream.rstCode !== undefined && stream.rstCode !== NGHTTP2_NO_ERROR) {
      // A reset either way: what was held is dropped and the close is said at once (node:http2 destroys the stream).
      this.#held = [];
      this.destroyed = true;
      this.emit('close');
      return;
    }
    // Both sides ended (the answer was sent whole): what the request still holds is handed out unread, then the close.
    this.#closePending = true;
    this.#paused = false;
    this.#reading = true;
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
    deferToTurnEnd(flushDownstream, this);
  }

  /** Emits what is held (while flowing), then 'end' once the client ended and all was read, then 'close'. */
  #deliver(): void {
    if (!this.#reading || this.#paused) return;
    while (this.#held.length > 0) {
      this.emit('data', this.#held.shift()!);
      if (this.#paused) return;
    }
    if (!this.closed && this.stream.readingPaused) this.stream.resumeReading();
    if (this.#remoteEnded && !this.#endEmitted) {
      this.#endEmitted = true;
      this.emit('end');
    }
    if (this.#closePending) {
      this.#closePending = false;
      this.destroyed = true;
      this.emit('close');
    }
  }
}

function flushDownstream(stream: OwnDownstreamStream): void {
  stream.flush();
}

function closeLater(stream: OwnDownstreamStream): void {
  stream.closeLater();
}

/**
 * What the own-layer server needs of the proxy: a new request stream, with the END_STREAM flag as node:http2 gives it.
 * The head is the stream's: its list (`stream.stream.requestHeaders`), or node:http2's object (`requestHeaders`), made
 * only when read (session s14: it was made for every request as it arrived).
 */
export type OwnRequestHandler = (stream: OwnDownstreamStream, flags: number) => void;

export interface OwnDownstreamLimits {
  streamWindowBytes: number;
  connectionWindowBytes: number;
  maxConcurrentStreams: number;
  /** The client's RST_STREAMs (and our refusals) may come in a burst of this many, then at `resetRatePerSecond`. */
  resetBurst: number;
  resetRatePerSecond: number;
}

/**
 * Serves HTTP/2 on `transport` (a terminated HBONE stream whose first bytes, `firstBytes`, were read already) with
 * the own layer; each well-formed request goes to `onRequest`. Returns the connection (the proxy closes it on
 * shutdown and counts protocol errors from its 'error').
 */
export function serveOwnConnection(leg: Duplex, firstBytes: Buffer | undefined, limits: OwnDownstreamLimits, onRequest: OwnRequestHandler): H2Connection {
  // The bytes read to tell HTTP/2 from HTTP/1.1 go back first. An own-layer leg is read and written straight on its
  // HTTP/2 stream (stream-transport.ts: no Duplex between the two layers); node:http2's leg as a Duplex.
  let transport: Duplex | H2StreamTransport;
  if (leg instanceof H2DuplexStream) {
    transport = H2StreamTransport.takeOver(leg, firstBytes);
  } else {
    if (firstBytes !== undefined) leg.unshift(firstBytes);
    transport = leg;
  }
  const connection = new H2Connection(transport, {
    role: 'server',
    streamWindowBytes: limits.streamWindowBytes,
    connectionWindowBytes: limits.connectionWindowBytes,
    maxConcurrentStreams: limits.maxConcurrentStreams,
    resetBurst: limits.resetBurst,
    resetRatePerSecond: limits.resetRatePerSecond,
  });
  connection.on('stream', (stream: H2Stream) => {
    const downstream = new OwnDownstreamStream(stream);
    onRequest(downstream, stream.remoteEnded ? NGHTTP2_FLAG_END_STREAM : 0);
  });
  connection.once('close', () => {
    if (!transport.destroyed) transport.destroy();
  });
  if (transport === leg) leg.resume();
  return connection;
}
