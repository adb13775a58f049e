/**
 * One kept-alive HTTP/1.1 connection to an endpoint, as the lean path uses it: an HBONE CONNECT stream on the pooled
 * mutual-TLS connection (or TCP for an endpoint outside the mesh) carrying one request at a time. The request head
 * and body are written in one corked batch; the response head is parsed (heads.ts; 1xx skipped), held until the
 * proxy asks for the body, whose framing (Content-Length, chunked, or until close; none for HEAD, 204 and 304)
 * says where the response ends. A response that ended whole on a connection that may be kept alive puts the
 * connection back in its pool (upstream-pool.ts); anything else closes it.
 *
 * Owns: framing of one exchange at a time and the connection's life. Must not know about: routes, retries, the
 * client side, which endpoint it is, which HTTP/2 layer carries the stream (transport.ts: the own layer's H2Stream is
 * read directly). Hot path: a response head is parsed from the chunk it came in (a view of the layer's read buffer);
 * body chunks are handed on as ranges of the chunk that came (copied once when they are a read buffer's view).
 */
import { ChunkedDecoder } from './chunked.ts';
import { Http1Error } from './errors.ts';
import { FIELD_KEEP_ALIVE } from './head-fields.ts';
import { parseResponseHead, type ResponseHead } from './heads.ts';
import type { SharedReadBuffer } from '../../shared/hbone/pooled-reads.ts';
import type { Http1StreamReader, Http1Transport } from './transport.ts';

/** Who gets one exchange's response. */
export interface ResponseSink {
  onHead(head: ResponseHead): void;
  /** bytes[start, end) of the body, as it came (chunked framing included when the response is chunked). */
  onBody(bytes: Buffer, start: number, end: number): void;
  /** The response ended whole. */
  onEnd(): void;
  /** The connection failed or closed before the response's end; `error` says why. */
  onError(error: Error): void;
}

const PHASE_IDLE = 0;
const PHASE_HEAD = 1;
const PHASE_HELD = 2;
const PHASE_BODY = 3;

const BODY_NONE = 0;
const BODY_LENGTH = 1;
const BODY_CHUNKED = 2;
const BODY_CLOSE = 3;

const KEEP_ALIVE_TIMEOUT = /timeout=(\d+)/i;

export class UpstreamHttp1Stream implements Http1StreamReader {
  /** The pool's key for this connection's endpoint. */
  readonly key: string;
  readonly connection: Http1Transport;
  /** When it went idle (performance.now()), for the pool's idle timeout. */
  idleSince = 0;
  /** How long it may stay idle: the pool's default, or the endpoint's `keep-alive: timeout` hint less a second. */
  idleTimeoutMs: number;
  /** Counted as carrying a request by the pool. */
  inUse = false;
  /** Body bytes of the current response so far (chunk data only, without the chunked framing). */
  bodyBytes = 0;
  private phase = PHASE_IDLE;
  private sink: ResponseSink | undefined;
  private pending: Buffer | undefined;
  private held: Buffer | undefined;
  private bodyMode = BODY_NONE;
  private remaining = 0;
  private keepAlive = false;
  private headRequest = false;
  /** The last `keep-alive` hint read and its timeout's seconds (-1: none in it). */
  private hint = '';
  private hintSeconds = -1;
  private readonly chunked = new ChunkedDecoder();
  private readonly whenIdle: (stream: UpstreamHttp1Stream) => void;
  private readonly onClose: (stream: UpstreamHttp1Stream) => void;

  constructor(key: string, connection: Http1Transport, idleTimeoutMs: number, onIdle: (stream: UpstreamHttp1Stream) => void, onClose: (stream: UpstreamHttp1Stream) => void) {
    this.key = key;
    this.connection = connection;
    this.idleTimeoutMs = idleTimeoutMs;
    this.whenIdle = onIdle;
    this.onClose = onClose;
    connection.attach(this);
  }

  get destroyed(): boolean {
    return this.connection.destroyed;
  }

  /**
   * Writes one request (`wire`: its head and whole body, one write: one DATA frame, one TLS record) and makes `sink`
   * the response's receiver. `wire` is only read (a retry sends the same buffer again).
   */
  send(wire: Buffer, headRequest: boolean, sink: ResponseSink): void {
    this.sink = sink;
    this.phase = PHASE_HEAD;
    this.headRequest = headRequest;
    this.connection.write(wire);
  }

  /** The proxy takes the body: what came with the head first, then the rest as it comes. */
  startBody(): void {
    if (this.phase !== PHASE_HELD) return;
    this.phase = PHASE_BODY;
    if (this.bodyMode === BODY_NONE) {
      this.complete(this.held !== undefined);
      return;
    }
    const held = this.held;
    this.held = undefined;
    if (held !== undefined) this.deliver(held, 0, held.length);
    // A close-delimited body whose end came while it was held.
    if (this.phase === PHASE_BODY && this.bodyMode === BODY_CLOSE && this.connection.readableEnded) this.complete(false);
  }

  pause(): void {
    this.connection.pause();
  }

  resume(): void {
    this.connection.resume();
  }

  destroy(): void {
    this.sink = undefined;
    this.connection.cancel();
  }

  // Http1StreamReader: the transport's calls.

  onBytes(chunk: Buffer, shared: SharedReadBuffer | undefined): void {
    switch (this.phase) {
      case PHASE_BODY: {
        // The sink may keep what it is given (a write queued for window): a read buffer's view is copied first.
        const bytes = shared === undefined ? chunk : Buffer.from(chunk);
        this.deliver(bytes, 0, bytes.length);
        return;
      }
      case PHASE_HEAD:
        if (this.pending === undefined) {
          // The usual case: the head whole in this chunk, parsed from it as it is; only what follows it is kept.
          this.parseHead(chunk, shared !== undefined);
          return;
        }
        this.pending = Buffer.concat([this.pending, chunk]);
        this.parseHead(this.pending, false);
        return;
      case PHASE_HELD:
        this.held = this.held === undefined ? (shared === undefined ? chunk : Buffer.from(chunk)) : Buffer.concat([this.held, chunk]);
        return;
      default:
        // Bytes from an idle connection: no request asked for them.
        this.connection.cancel();
    }
  }

  onPeerEnd(): void {
    this.peerEnded();
  }

  onDrained(): void {}

  onClosed(): void {
    this.closed();
  }

  onIdle(): void {}

  /** Parses the response head at the start of `bytes` (`view`: only valid during this call, what is kept is copied). */
  private parseHead(chunk: Buffer, chunkIsView: boolean): void {
    let bytes = chunk;
    let view = chunkIsView;
    for (;;) {
      const head = parseResponseHead(bytes, 0, bytes.length);
      if (head === undefined) {
        this.pending = view ? Buffer.from(bytes) : bytes;
        return;
      }
      if (head instanceof Http1Error) {
        this.fail(head);
        return;
      }
      // What follows the head: a view of `bytes` (copied below if `bytes` is a read buffer's and it is still held).
      const rest = head.size < bytes.length ? bytes.subarray(head.size) : undefined;
      if (head.status < 200) {
        if (head.status === 101) {
          this.fail(new Http1Error('HTTP1_BAD_STATUS_LINE', 'a 101 answer to a request that asked for no upgrade'));
          return;
        }
        // 100 Continue or 103 Early Hints: the final response follows.
        this.pending = undefined;
        if (rest === undefined) return;
        bytes = view ? Buffer.from(rest) : rest;
        view = false;
        continue;
      }
      this.pending = undefined;
      this.held = rest;
      this.framing(head);
      this.phase = PHASE_HELD;
      // The lean path usually takes the body within onHead (its try loop is told synchronously): the bytes that came
      // with the head go on from the read buffer itself. Still held after it, they are copied (the view dies now).
      this.sink?.onHead(head);
      if (view && rest !== undefined && this.held === rest) this.held = Buffer.from(rest);
      return;
    }
  }

  private framing(head: ResponseHead): void {
    const status = head.status;
    this.bodyBytes = 0;
    if (this.headRequest || status === 204 || status === 304) this.bodyMode = BODY_NONE;
    else if (head.chunked) {
      this.bodyMode = BODY_CHUNKED;
      this.chunked.reset();
    } else if (head.contentLength >= 0) {
      this.bodyMode = head.contentLength === 0 ? BODY_NONE : BODY_LENGTH;
      this.remaining = head.contentLength;
    } else this.bodyMode = BODY_CLOSE;
    this.keepAlive = this.bodyMode !== BODY_CLOSE && (head.minorVersion === 1 ? !head.connectionClose : head.connectionKeepAlive);
    const hint = head.value(FIELD_KEEP_ALIVE);
    if (typeof hint === 'string') {
      // An endpoint sends the same hint with every response: read once per connection (no match array per response).
      if (hint !== this.hint) {
        this.hint = hint;
        const seconds = KEEP_ALIVE_TIMEOUT.exec(hint);
        this.hintSeconds = seconds === null ? -1 : Number(seconds[1]);
      }
      const seconds = this.hintSeconds;
      if (seconds > 1) this.idleTimeoutMs = Math.min(this.idleTimeoutMs, (seconds - 1) * 1000);
      else if (seconds >= 0) this.keepAlive = false;
    }
  }

  private deliver(bytes: Buffer, start: number, end: number): void {
    const sink = this.sink;
    if (sink === undefined) return;
    if (this.bodyMode === BODY_LENGTH) {
      const take = Math.min(this.remaining, end - start);
      this.remaining -= take;
      this.bodyBytes += take;
      sink.onBody(bytes, start, start + take);
      if (this.remaining === 0) this.complete(start + take < end);
    } else if (this.bodyMode === BODY_CHUNKED) {
      const ended = this.chunked.feed(bytes, start, end);
      this.bodyBytes = this.chunked.dataBytes;
      if (ended instanceof Http1Error) {
        this.fail(ended);
      } else if (ended < 0) {
        sink.onBody(bytes, start, end);
      } else {
        sink.onBody(bytes, start, ended);
        this.complete(ended < end);
      }
    } else {
      this.bodyBytes += end - start;
      sink.onBody(bytes, start, end);
    }
  }

  /** The response ended whole; `extra`: bytes came after it (a broken peer: the connection is not reused). */
  private complete(extra: boolean): void {
    const sink = this.sink;
    this.sink = undefined;
    this.phase = PHASE_IDLE;
    this.held = undefined;
    sink?.onEnd();
    if (this.keepAlive && !extra && !this.connection.destroyed) this.whenIdle(this);
    else this.connection.cancel();
  }

  private fail(error: Error): void {
    const sink = this.sink;
    this.sink = undefined;
    this.connection.cancel();
    sink?.onError(error);
  }

  private peerEnded(): void {
    if (this.phase === PHASE_BODY && this.bodyMode === BODY_CLOSE) {
      this.complete(false);
      return;
    }
    // Held: a close-delimited body the proxy has not taken yet ends when it does.
    if (this.phase === PHASE_HELD && this.bodyMode === BODY_CLOSE) {
      this.keepAlive = false;
      return;
    }
    this.fail(new Error('the endpoint closed the connection before the response ended'));
  }

  private closed(): void {
    this.onClose(this);
    if (this.sink === undefined) return;
    if (this.phase === PHASE_HELD && this.bodyMode === BODY_CLOSE && this.connection.readableEnded) return;
    this.fail(new Error('the connection to the endpoint closed before the response ended'));
  }
}
