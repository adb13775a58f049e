/**
 * The waypoint's two HBONE legs as the rest of the waypoint sees them, whichever HTTP/2 layer carries them
 * (AMBIT_WAYPOINT_HBONE, config.ts): node:http2 (a ServerHttp2Stream terminated by HboneServer, a ClientHttp2Stream
 * from the client pool) or ambit's own layer (shared/hbone/h2/: the terminated H2Stream, and H2DuplexStream, the
 * Duplex both a terminated stream and a pooled client stream are read and written through).
 *
 * Owns: `HboneLegStream`, the face of an open leg every consumer drives (a Duplex with node:http2's rstCode,
 * setTimeout and close(code); both layers' streams have it as they are), `TerminatedStream` (a client's CONNECT
 * before it is answered) with answering it and opening it as a leg, and a reset that works on either.
 * Must not know about: HTTP, routes, endpoints; which layer is configured (callers get what the server hands them).
 */
import type http2 from 'node:http2';
import type { Duplex } from 'node:stream';
import { resetStream } from '../shared/hbone/index.ts';
import { H2DuplexStream } from '../shared/hbone/h2/duplex.ts';
import { H2Stream } from '../shared/hbone/h2/stream.ts';

/**
 * An open HBONE stream, either leg, either layer: data both ways with back-pressure, END_STREAM as end, 'close'
 * last; `rstCode` the RST_STREAM code it closed with (undefined or 0 for a clean end); 'timeout' after
 * `setTimeout(ms)` with no data moving; `close(code)` resets it with `code` (NO_ERROR by default).
 */
export interface HboneLegStream extends Duplex {
  readonly rstCode: number | undefined;
  setTimeout(ms: number, callback?: () => void): unknown;
  close(code?: number): void;
}

/** A client's CONNECT the waypoint terminated, not yet answered: node:http2's stream or the own layer's. */
export type TerminatedStream = http2.ServerHttp2Stream | H2Stream;

/** Whether the CONNECT can still be answered (not closed or reset, no answer sent yet). */
export function canAnswer(stream: TerminatedStream): boolean {
  if (stream instanceof H2Stream) return !stream.closed && !stream.responded;
  return !stream.destroyed && !stream.closed && !stream.headersSent;
}

/** Answers the CONNECT with `status`: 200 opens the tunnel, anything else (`endStream`) refuses it. */
export function answer(stream: TerminatedStream, status: number, endStream = status !== 200): void {
  if (stream instanceof H2Stream) stream.respond(status, [], endStream);
  else stream.respond({ ':status': status }, { endStream });
}

/** The answered stream as an open leg (the own layer's stream gets its Duplex, made once). */
export function openLeg(stream: TerminatedStream): HboneLegStream {
  return stream instanceof H2Stream ? new H2DuplexStream(stream) : stream;
}

/** Resets `stream` with RST_STREAM `code` unless it is closed already (never an END_STREAM before it). */
export function resetLeg(stream: HboneLegStream, code: number): void {
  if (stream instanceof H2DuplexStream) {
    if (!stream.destroyed) stream.close(code);
    return;
  }
  resetStream(stream as http2.Http2Stream, code);
}
