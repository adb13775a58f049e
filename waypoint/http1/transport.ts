/**
 * The byte stream under one lean HTTP/1.1 connection, either side (downstream.ts: a client's terminated HBONE
 * stream; upstream-stream.ts: a kept-alive stream or TCP connection to an endpoint), as the codec drives it: bytes
 * in as method calls on one reader object, bytes out, half-close, reset, back-pressure, an idle timer. Two carriers:
 * the own HTTP/2 layer's H2Stream read and written directly (h2-stream-transport.ts: no Duplex, no stream machinery,
 * chunks as views of the layer's pooled read buffers), and any Node Duplex (duplex-transport.ts: node:http2's
 * streams, a TCP socket, the own layer's H2DuplexStream).
 *
 * Owns: the interface. Must not know about: HTTP, which layer carries a stream.
 */
import type { SharedReadBuffer } from '../../shared/hbone/pooled-reads.ts';
import type { HboneLegStream } from '../hbone-leg.ts';

/** What a transport calls; one object per connection, methods, no closure per chunk. */
export interface Http1StreamReader {
  /**
   * The peer's next bytes. With `shared`, `chunk` is a view of a pooled read buffer valid during this call only:
   * whatever is kept past it must be copied. Without, the buffer is the reader's to keep.
   */
  onBytes(chunk: Buffer, shared: SharedReadBuffer | undefined): void;
  /** The peer ended its side (END_STREAM, FIN): no more bytes come. */
  onPeerEnd(): void;
  /** A write said false earlier; there is room again. */
  onDrained(): void;
  /** Closed (both sides ended, reset either way, the connection gone). Last call. */
  onClosed(): void;
  /** setIdleTimeout's time passed with no bytes moving either way. */
  onIdle(): void;
}

export interface Http1Transport {
  /** Closed or reset: nothing more is read or written. */
  readonly destroyed: boolean;
  /** The peer ended its side. */
  readonly readableEnded: boolean;
  /** This side ended (end()). */
  readonly writableEnded: boolean;
  /** Starts delivering to `reader`. */
  attach(reader: Http1StreamReader): void;
  /** Writes `bytes` (kept by the transport until sent: never reused by the caller). False: wait for onDrained. */
  write(bytes: Buffer): boolean;
  /** Writes `text` as latin1. */
  writeText(text: string): boolean;
  /** Half-closes this side once everything written is sent. */
  end(): void;
  /** Closes at once (RST_STREAM NO_ERROR, as node:http2's close(); a TCP connection is destroyed). */
  close(): void;
  /** Aborts (RST_STREAM CANCEL unless both sides ended cleanly; a TCP connection is destroyed). */
  cancel(): void;
  /** Reading paused: the peer gets no more credit (what it may still send arrives). */
  pause(): void;
  resume(): void;
  readonly isPaused: boolean;
  /** onIdle once `ms` pass with no bytes either way (0 stops it); between `ms` and twice that. */
  setIdleTimeout(ms: number): void;
  /** Stops delivering and hands the stream on as a Duplex (for Node's HTTP server); this transport is done. */
  handOff(): HboneLegStream;
}

/** `head` (latin1) and `body` in one buffer (a head written as text: one a filter changed). */
export function joinHeadAndBody(head: string, body: readonly Buffer[]): Buffer {
  const headLength = head.length;
  let length = headLength;
  for (const chunk of body) length += chunk.length;
  const joined = Buffer.allocUnsafe(length);
  joined.write(head, 0, headLength, 'latin1');
  let offset = headLength;
  for (const chunk of body) offset += chunk.copy(joined, offset);
  return joined;
}
