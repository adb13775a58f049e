/**
 * The client side of the lean HTTP/1.1 path: a terminated HBONE stream read directly through an Http1Transport
 * (transport.ts: the own layer's H2Stream as its handler, or a node:http2 stream's events; no Node HTTP server), request
 * heads parsed as they come (heads.ts; from the chunk itself when the head is whole in it, without copying it), each
 * request's body (Content-Length, at most the retry buffer) gathered whole, then the request handed to the proxy as one
 * LeanExchange; the response written straight onto the stream. Requests are served one at a time in order (pipelined
 * ones wait in the read buffer).
 * A head the lean path does not serve (the proxy says which: an Upgrade, `Expect`, a chunked or large body, not
 * HTTP/1.1, ...) hands the stream, from that head on, to Node's HTTP server, before anything of it was forwarded.
 * A head that breaks HTTP/1.1's rules is answered 400 (431: too large) and the stream closes, as Node's server does.
 *
 * Owns: request order, keep-alive and close, the read buffer. Must not know about: routes, policy, upstreams, which
 * HTTP/2 layer carries the stream.
 * Hot path: one LeanExchange per request; a chunk is a method call (no event, no Readable); a body is copied out of a
 * pooled read buffer once; body chunks of a response written as ranges of what came.
 */
import { STATUS_CODES, type OutgoingHttpHeaders } from 'node:http';
import type { SharedReadBuffer } from '../../shared/hbone/pooled-reads.ts';
import type { HboneLegStream } from '../hbone-leg.ts';
import { HALF_CLOSED_LINGER_MS } from '../stream-adapter.ts';
import { Http1Error } from './errors.ts';
import { parseRequestHead, type RequestHead } from './heads.ts';
import { FIELD_HOST, MAX_HEAD_BYTES, type HeaderMap } from './head-fields.ts';
import type { BodyReceiver } from './lean-try.ts';
import type { Http1StreamReader, Http1Transport } from './transport.ts';

/** Read-ahead kept while a request is served (pipelined requests); more pauses the stream. */
const MAX_READ_AHEAD_BYTES = 2 * MAX_HEAD_BYTES;
/** A kept-alive client stream with no request in flight closes after this (Node's server keepAliveTimeout). */
export const KEEP_ALIVE_TIMEOUT_MS = 5_000;
/**
 * From a request's first byte, its head must be whole within this and the whole request (its body too) within
 * REQUEST_TIMEOUT_MS, or it is answered 408 and the stream closes: Node's server's headersTimeout and
 * requestTimeout. The idle timeout alone would let a client that sends a byte every few seconds hold a stream
 * (and the waypoint's memory for its head) for ever.
 */
export const HEADERS_TIMEOUT_MS = 60_000;
export const REQUEST_TIMEOUT_MS = 300_000;

/** What the connection needs of the proxy. */
export interface LeanHandler {
  /** Whether the lean path serves a request with this head (decided before anything was forwarded). */
  accepts(head: RequestHead): boolean;
  /** Serves one request; its response ends with exchange.end(), exchange.cut() or the client going. */
  serve(exchange: LeanExchange): void;
  /** Takes the stream over from `bytes` (the unserved head and what follows) on, for Node's HTTP server. */
  handOver(stream: HboneLegStream, bytes: Buffer | undefined): void;
  /** A head broke the rules (answered 400/431 here): for counting. */
  refused(error: Http1Error): void;
}

/** What the proxy hears of an exchange's end (one object per request: no closure per request). */
export interface ExchangeListener {
  /** The client's stream closed before the response ended. */
  clientGone(): void;
  /** The relayed body ended (true) or was cut (false). */
  relayed(whole: boolean): void;
}

/**
 * A relayed response's head written as bytes into the buffer of its first write (forwarded-heads.ts): no head text
 * per request. The proxy's per-request object is one.
 */
export interface RelayedHead {
  /** The head's size in bytes. */
  relayedHeadBytes(): number;
  /** Writes the head at out[offset] (relayedHeadBytes() of room); returns the offset after it. */
  writeRelayedHead(out: Buffer, offset: number): number;
}

/** Something the response's body comes from, to pause while the client's stream is full. */
interface PausableSource {
  pause(): void;
  resume(): void;
}

/** The body of a request without one (shared, never written: takeBody replaces it with the first chunk's array). */
const NO_BODY: Buffer[] = [];

/** One request on the lean path: its head and body, and the writer of its response. */
export class LeanExchange implements BodyReceiver {
  method: string;
  url: string;
  readonly httpVersion = '1.1';
  /** The parsed head: its fields are read in place (FieldFacts.value) until something reads the map (`headers`). */
  head: RequestHead;
  /**
   * Which of its connection's requests the object is now: the connection hands the same object out again for its
   * next request once the proxy released it (one request at a time per HTTP/1.1 connection), and every reuse counts
   * up. Whoever is handed the exchange for later (a try relaying a body) keeps the generation and passes it back:
   * a call with an older one is a finished request's and is dropped (BodyReceiver).
   */
  generation = 0;
  /** The proxy is done with it (its metrics and log line taken): the connection may reuse it for the next request. */
  released = false;
  /** The body's chunks (NO_BODY until the first: an array made by its first push is made with room for 17). */
  body: Buffer[] = NO_BODY;
  bodyBytes = 0;
  headersSent = false;
  /** The response ended (whole, cut, or the client went). */
  done = false;
  /** The client's stream closed before the response ended. */
  clientGone = false;
  /** Set by the proxy: told when the client went before the response ended, and when a relayed body ended or was cut. */
  listener: ExchangeListener | undefined;
  /** Set by the proxy while a response is relayed, for back-pressure. */
  source: PausableSource | undefined;
  private readonly connection: DownstreamConnection;
  private closeRequested: boolean;
  private remaining: number;
  private ownStatus = 200;
  private ownHeaders: OutgoingHttpHeaders | Record<string, string | number> | undefined;
  /** The relayed head, until the body's first bytes go with it: as text (sendHead), or written when it goes (sendRelayedHead). */
  private heldHead: string | undefined;
  private heldRelayed: RelayedHead | undefined;

  constructor(connection: DownstreamConnection, head: RequestHead) {
    this.connection = connection;
    this.method = head.method;
    this.url = head.url;
    this.head = head;
    this.remaining = head.contentLength > 0 ? head.contentLength : 0;
    this.closeRequested = head.connectionClose;
  }

  /**
   * The object made the next request's (DownstreamConnection, once released): every field a request sets is set again
   * as the constructor leaves it, and the generation moves on, so nothing of the last request (its head, body,
   * listener, relayed head, own answer, the response's state) reaches this one and no late call of the last one does.
   */
  renew(head: RequestHead): void {
    this.generation++;
    this.released = false;
    this.method = head.method;
    this.url = head.url;
    this.head = head;
    this.body = NO_BODY;
    this.bodyBytes = 0;
    this.headersSent = false;
    this.done = false;
    this.clientGone = false;
    this.listener = undefined;
    this.source = undefined;
    this.remaining = head.contentLength > 0 ? head.contentLength : 0;
    this.closeRequested = head.connectionClose;
    this.ownStatus = 200;
    this.ownHeaders = undefined;
    this.heldHead = undefined;
    this.heldRelayed = undefined;
  }

  /** The proxy is done with this request: the object may serve the connection's next one. */
  release(): void {
    this.released = true;
  }

  /** The fields in Node's shape, built on first read (policy, a route's header match, a modifier). */
  get headers(): HeaderMap {
    return this.head.headers;
  }

  /** The Host field as the map holds it ('' when absent), read without building the map. */
  get authority(): string {
    return this.head.value(FIELD_HOST) ?? '';
  }

  /** The client asked for the stream to close after this response (or the response's framing needs it). */
  get closeAfter(): boolean {
    return this.closeRequested;
  }

  /** The response's body ends with the stream (it came close-delimited): the stream closes after it. */
  closeAfterResponse(): void {
    this.closeRequested = true;
  }

  /**
   * Part of the body arrived: bytes[start, end) with end - start <= what is still due. Returns how many were taken.
   * `copy`: bytes is a view valid only during the call (a pooled read buffer): the body keeps a copy.
   */
  takeBody(bytes: Buffer, start: number, end: number, copy: boolean): number {
    const take = Math.min(this.remaining, end - start);
    if (take === 0) return 0;
    let kept: Buffer;
    if (copy) {
      // Copied without a view of the read buffer first (one object, not two).
      kept = Buffer.allocUnsafe(take);
      bytes.copy(kept, 0, start, start + take);
    } else {
      kept = start === 0 && take === bytes.length ? bytes : bytes.subarray(start, start + take);
    }
    if (this.body === NO_BODY) this.body = [kept];
    else this.body.push(kept);
    this.bodyBytes += take;
    this.remaining -= take;
    return take;
  }

  get bodyComplete(): boolean {
    return this.remaining === 0;
  }

  /** The gate reads bodies it refuses: this one is already read. */
  resume(): void {}

  /** A response of the waypoint's own (policy refusal, redirect, error): head now, `end(text)` after. */
  writeHead(status: number, headers: OutgoingHttpHeaders | Record<string, string | number> = {}): this {
    this.ownStatus = status;
    this.ownHeaders = headers;
    return this;
  }

  /**
   * Ends the response: after a relayed head (sendHead), the relayed body ended (BodyReceiver); otherwise the
   * waypoint's own answer (writeHead's status and headers) with `text` as its body.
   */
  end(text = ''): void {
    if (this.headersSent) {
      this.finishBody();
      return;
    }
    const headers = this.ownHeaders ?? {};
    let head = `HTTP/1.1 ${this.ownStatus} ${STATUS_CODES[this.ownStatus] ?? ''}\r\n`;
    for (const name in headers) if (name !== 'content-length') head += `${name}: ${String(headers[name])}\r\n`;
    const length = Buffer.byteLength(text);
    head += `content-length: ${length}\r\n${this.closeRequested ? 'connection: close\r\n' : ''}\r\n`;
    this.headersSent = true;
    this.connection.write(text.length > 0 ? head + text : head);
    this.done = true;
    this.connection.responseEnded(this, true);
  }

  /**
   * The relayed response's head (serialize.ts): held until the body bytes that came with it (or its end), so that
   * head and body leave in one write (one DATA frame, one TLS record) rather than two. The proxy calls flushHead()
   * once it handed over what came with the head: a body that comes later never holds the head back.
   */
  sendHead(text: string): void {
    this.headersSent = true;
    this.heldHead = text;
  }

  /** As sendHead, the head written from `head` into the write's buffer when it goes (the usual relay: no text). */
  sendRelayedHead(head: RelayedHead): void {
    this.headersSent = true;
    this.heldRelayed = head;
  }

  // BodyReceiver: the relayed response's body (from the request of `generation` only).
  bodyChunk(generation: number, bytes: Buffer, start: number, end: number): void {
    if (generation !== this.generation || this.done || start === end) return;
    const head = this.heldHead;
    const relayed = this.heldRelayed;
    let written: boolean;
    if (relayed !== undefined) {
      this.heldRelayed = undefined;
      const headBytes = relayed.relayedHeadBytes();
      const joined = Buffer.allocUnsafe(headBytes + end - start);
      relayed.writeRelayedHead(joined, 0);
      bytes.copy(joined, headBytes, start, end);
      written = this.connection.writeBytes(joined);
    } else if (head !== undefined) {
      this.heldHead = undefined;
      written = this.connection.writeBytes(withHead(head, bytes, start, end));
    } else {
      written = this.connection.writeBytes(start === 0 && end === bytes.length ? bytes : bytes.subarray(start, end));
    }
    if (!written && this.source !== undefined) {
      const source = this.source;
      source.pause();
      this.connection.onceDrained(() => source.resume());
    }
  }

  private finishBody(): void {
    if (this.done) return;
    this.flushHead();
    this.done = true;
    this.listener?.relayed(true);
    this.connection.responseEnded(this, true);
  }

  /** A held head goes out alone (no body bytes came with it). */
  flushHead(): void {
    const relayed = this.heldRelayed;
    if (relayed !== undefined) {
      this.heldRelayed = undefined;
      if (this.clientGone) return;
      const bytes = Buffer.allocUnsafe(relayed.relayedHeadBytes());
      relayed.writeRelayedHead(bytes, 0);
      this.connection.writeBytes(bytes);
      return;
    }
    const head = this.heldHead;
    if (head === undefined) return;
    this.heldHead = undefined;
    if (!this.clientGone) this.connection.write(head);
  }

  bodyEnd(generation: number): void {
    if (generation === this.generation) this.finishBody();
  }

  bodyCut(generation: number): void {
    if (generation === this.generation) this.cut();
  }

  /** The response is cut: the client must not take a short body for a whole one. */
  cut(): void {
    if (this.done) return;
    // A head with no byte of its body yet still goes first: the client learns the status before the reset.
    this.flushHead();
    this.done = true;
    this.listener?.relayed(false);
    this.connection.responseEnded(this, false);
  }

  /** The client's stream closed first. */
  gone(): void {
    if (this.done) return;
    this.done = true;
    this.clientGone = true;
    this.listener?.clientGone();
  }
}

/** `head` (latin1) and bytes[start, end) in one buffer, for one write. */
function withHead(head: string, bytes: Buffer, start: number, end: number): Buffer {
  const headLength = head.length;
  const joined = Buffer.allocUnsafe(headLength + end - start);
  joined.write(head, 0, headLength, 'latin1');
  bytes.copy(joined, headLength, start, end);
  return joined;
}

export class DownstreamConnection implements Http1StreamReader {
  readonly transport: Http1Transport;
  private readonly handler: LeanHandler;
  private pending: Buffer | undefined;
  private exchange: LeanExchange | undefined;
  /** The last request's exchange, handed out again for the next request once the proxy released it. */
  private spare: LeanExchange | undefined;
  /** The current exchange is still reading its body. */
  private readingBody = false;
  private peerEnded = false;
  private closing = false;
  private wasHandedOver = false;
  /** Runs once the stream has room again (a relayed body's source, paused while the client's stream was full). */
  private drainedCallback: (() => void) | undefined;
  /** The running request's deadline (HEADERS_TIMEOUT_MS, then REQUEST_TIMEOUT_MS), while its bytes are coming. */
  private deadline: NodeJS.Timeout | undefined;
  private requestStarted = 0;
  /** Ended this side and waits for the client's end (HALF_CLOSED_LINGER_MS). */
  private linger: NodeJS.Timeout | undefined;
  private readonly onDeadline = (): void => this.requestTimedOut();
  private readonly headersTimeoutMs: number;
  private readonly requestTimeoutMs: number;

  /** `timeouts`: HEADERS_TIMEOUT_MS and REQUEST_TIMEOUT_MS unless given (tests). */
  constructor(transport: Http1Transport, firstBytes: Buffer | undefined, handler: LeanHandler, timeouts: { headersMs?: number; requestMs?: number } = {}, firstShared?: SharedReadBuffer) {
    this.transport = transport;
    this.handler = handler;
    this.headersTimeoutMs = timeouts.headersMs ?? HEADERS_TIMEOUT_MS;
    this.requestTimeoutMs = timeouts.requestMs ?? REQUEST_TIMEOUT_MS;
    transport.setIdleTimeout(KEEP_ALIVE_TIMEOUT_MS);
    transport.attach(this);
    if (firstBytes !== undefined && firstBytes.length > 0) this.onBytes(firstBytes, firstShared);
    // The sniff (http-entry.ts) may have seen the client's end already.
    if (transport.readableEnded && !this.peerEnded && !this.wasHandedOver) this.ended();
  }

  write(text: string): void {
    if (!this.transport.destroyed) this.transport.writeText(text);
  }

  writeBytes(bytes: Buffer): boolean {
    return this.transport.destroyed ? true : this.transport.write(bytes);
  }

  onceDrained(callback: () => void): void {
    this.drainedCallback = callback;
  }

  /** The exchange's response ended (`whole`) or was cut: the next request, the close, or a reset. */
  responseEnded(exchange: LeanExchange, whole: boolean): void {
    if (exchange !== this.exchange) return;
    this.exchange = undefined;
    this.drainedCallback = undefined;
    if (!whole) {
      this.closing = true;
      this.transport.cancel();
      return;
    }
    this.spare = exchange;
    // A client that sent more of the body than it announced... cannot: takeBody took only what was due. A request
    // whose body is still coming when its response ended (a refusal before the body): the rest is read and dropped
    // by closing after it.
    if (exchange.closeAfter || this.readingBody) {
      this.readingBody = false;
      this.endAndLinger();
      return;
    }
    if (this.transport.isPaused) this.transport.resume();
    this.next();
  }

  // Http1StreamReader: the transport's calls.

  onBytes(chunk: Buffer, shared: SharedReadBuffer | undefined): void {
    if (this.closing) return;
    const exchange = this.exchange;
    const pending = this.pending;
    if (this.readingBody && exchange !== undefined && pending === undefined) {
      const taken = exchange.takeBody(chunk, 0, chunk.length, shared !== undefined);
      // What follows the body waits for the response (set first: the response may end while it is served).
      if (taken < chunk.length) this.pending = shared === undefined ? chunk.subarray(taken) : Buffer.from(chunk.subarray(taken));
      if (exchange.bodyComplete) this.bodyDone(exchange);
      return;
    }
    if (pending === undefined && exchange === undefined) {
      // The usual case: a request's head (and body) whole in this chunk, parsed from it as it is.
      this.serveFrom(chunk, shared);
      return;
    }
    this.pending = pending === undefined ? (shared === undefined ? chunk : Buffer.from(chunk)) : Buffer.concat([pending, chunk]);
    if (this.exchange === undefined) this.next();
    else if (this.pending.length > MAX_READ_AHEAD_BYTES) this.transport.pause();
  }

  onPeerEnd(): void {
    if (!this.peerEnded) this.ended();
  }

  onDrained(): void {
    const callback = this.drainedCallback;
    this.drainedCallback = undefined;
    callback?.();
  }

  onClosed(): void {
    this.clearDeadline();
    if (this.linger !== undefined) clearTimeout(this.linger);
    this.linger = undefined;
    this.closing = true;
    const exchange = this.exchange;
    this.exchange = undefined;
    exchange?.gone();
  }

  onIdle(): void {
    if (this.exchange !== undefined && !this.readingBody) {
      this.transport.setIdleTimeout(KEEP_ALIVE_TIMEOUT_MS);
      return;
    }
    // Idle (or a head or body that stopped coming) for KEEP_ALIVE_TIMEOUT_MS: closed, as Node's server does.
    this.closing = true;
    const exchange = this.exchange;
    this.exchange = undefined;
    exchange?.gone();
    this.transport.close();
  }

  /**
   * A chunk with nothing before it and no request in flight: the requests in it served from the chunk itself while
   * their heads are whole in it; what is left (a head cut by the chunk's end, pipelined requests behind one in
   * flight) is kept, copied when the chunk is a pooled read buffer's.
   */
  private serveFrom(chunk: Buffer, shared: SharedReadBuffer | undefined): void {
    let offset = 0;
    while (offset < chunk.length && this.exchange === undefined && !this.closing) {
      const head = parseRequestHead(chunk, offset, chunk.length);
      if (head === undefined) break;
      if (head instanceof Http1Error) {
        this.refuse(head);
        return;
      }
      if (!this.handler.accepts(head)) {
        this.handOver(shared === undefined ? chunk.subarray(offset) : Buffer.from(chunk.subarray(offset)));
        return;
      }
      const exchange = this.exchangeFor(head);
      this.exchange = exchange;
      offset += head.size;
      offset += exchange.takeBody(chunk, offset, chunk.length, shared !== undefined);
      if (offset < chunk.length) this.pending = shared === undefined ? chunk.subarray(offset) : Buffer.from(chunk.subarray(offset));
      if (exchange.bodyComplete) {
        this.clearDeadline();
        this.handler.serve(exchange);
      } else {
        this.startBody();
      }
      return;
    }
    if (this.closing || this.exchange !== undefined) return;
    // A head not whole yet.
    this.pending = offset === 0 && shared === undefined ? chunk : Buffer.from(chunk.subarray(offset));
    this.next();
  }

  /**
   * The exchange of a request with this head: the last request's, renewed, when the proxy released it (a request
   * answered before the proxy finished with the one before, a pipelined one served inside the last one's end, gets a
   * new one).
   */
  private exchangeFor(head: RequestHead): LeanExchange {
    const spare = this.spare;
    if (spare === undefined || !spare.released) return new LeanExchange(this, head);
    this.spare = undefined;
    spare.renew(head);
    return spare;
  }

  /** Parses the next request from the read buffer and serves it, or hands the stream over. */
  private next(): void {
    while (this.exchange === undefined && !this.closing) {
      const pending = this.pending;
      if (pending === undefined || pending.length === 0) {
        this.pending = undefined;
        if (this.peerEnded) this.endAndLinger();
        return;
      }
      const head = parseRequestHead(pending, 0, pending.length);
      if (head === undefined) {
        if (this.peerEnded) this.endAndLinger();
        else if (this.deadline === undefined) {
          this.requestStarted = performance.now();
          this.armDeadline(this.headersTimeoutMs);
        }
        return;
      }
      if (head instanceof Http1Error) {
        this.refuse(head);
        return;
      }
      if (!this.handler.accepts(head)) {
        this.handOver(pending);
        return;
      }
      const exchange = this.exchangeFor(head);
      this.exchange = exchange;
      const taken = head.size + exchange.takeBody(pending, head.size, pending.length, false);
      this.pending = taken < pending.length ? pending.subarray(taken) : undefined;
      if (exchange.bodyComplete) {
        this.clearDeadline();
        this.handler.serve(exchange);
      } else {
        this.startBody();
      }
    }
  }

  /** The exchange's body is still to come: its deadline runs (from the head's first byte). */
  private startBody(): void {
    this.readingBody = true;
    if (this.deadline === undefined) this.requestStarted = performance.now();
    this.armDeadline(this.requestTimeoutMs - (performance.now() - this.requestStarted));
    if (this.peerEnded) this.endAndLinger();
  }

  private bodyDone(exchange: LeanExchange): void {
    this.clearDeadline();
    this.readingBody = false;
    this.handler.serve(exchange);
  }

  private armDeadline(ms: number): void {
    if (this.deadline !== undefined) clearTimeout(this.deadline);
    this.deadline = setTimeout(this.onDeadline, Math.max(0, ms));
    this.deadline.unref();
  }

  private clearDeadline(): void {
    if (this.deadline === undefined) return;
    clearTimeout(this.deadline);
    this.deadline = undefined;
  }

  /** A head or a body that kept trickling past its deadline: 408 and close, as Node's server. */
  private requestTimedOut(): void {
    this.deadline = undefined;
    if (this.closing) return;
    const exchange = this.readingBody ? this.exchange : undefined;
    if (this.exchange !== undefined && !this.readingBody) return;
    this.readingBody = false;
    this.exchange = undefined;
    exchange?.gone();
    this.refuse(new Http1Error('HTTP1_REQUEST_TIMEOUT', `the request ${exchange ? 'body' : 'head'} did not arrive whole within ${exchange ? this.requestTimeoutMs : this.headersTimeoutMs} ms`));
  }

  private refuse(error: Http1Error): void {
    this.clearDeadline();
    this.handler.refused(error);
    this.closing = true;
    this.write(`HTTP/1.1 ${error.status} ${STATUS_CODES[error.status]}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
    this.endAndLinger();
  }

  private handOver(bytes: Buffer): void {
    this.clearDeadline();
    this.wasHandedOver = true;
    this.closing = true;
    this.pending = undefined;
    this.handler.handOver(this.transport.handOff(), bytes);
  }

  private ended(): void {
    this.peerEnded = true;
    if (this.readingBody) {
      // The client ended before its announced body: nobody to answer.
      this.readingBody = false;
      const exchange = this.exchange;
      this.exchange = undefined;
      exchange?.gone();
      this.closing = true;
      this.transport.close();
      return;
    }
    if (this.linger !== undefined) {
      // This side ended first and the client now ended too: the stream closes (both sides ended).
      return;
    }
    if (this.exchange === undefined) {
      this.next();
      return;
    }
    // The client ended its side while its request was served: gone, as Node's server takes it (httpAllowHalfOpen
    // false): the request is aborted (its tries, its DestinationRule slot) and this side ends too.
    const exchange = this.exchange;
    this.exchange = undefined;
    exchange.gone();
    this.endAndLinger();
  }

  /**
   * Ends this side: the stream closes by itself once the client ends too. Closing at once sends RST_STREAM, which
   * the client's agent turns into a TCP reset that can throw away the last response unread; a client that never
   * ends is closed after HALF_CLOSED_LINGER_MS. What the client still sends is read and dropped.
   */
  private endAndLinger(): void {
    this.clearDeadline();
    this.closing = true;
    const transport = this.transport;
    if (transport.destroyed || this.linger !== undefined) return;
    if (!transport.writableEnded) transport.end();
    transport.resume();
    transport.setIdleTimeout(0);
    this.linger = setTimeout(closeAfterLinger, HALF_CLOSED_LINGER_MS, transport);
    this.linger.unref();
  }

  /** For tests and the config dump: whether the stream went to Node's server. */
  get handedOver(): boolean {
    return this.wasHandedOver;
  }
}

function closeAfterLinger(transport: Http1Transport): void {
  transport.close();
}
