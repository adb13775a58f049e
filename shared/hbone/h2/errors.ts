/**
 * The HTTP/2 layer's error codes and its one error class.
 *
 * Owns: RFC 9113's error codes (section 7) by name, `H2Error` with a stable `code` string for callers to branch
 * on, whether it ends the whole connection (GOAWAY) or one stream (RST_STREAM), and the wire code to send.
 * Must not know about: sockets, HBONE, TLS. Everything the frame codec and the HPACK decoder reject on a peer's
 * bytes is an H2Error, never another exception type (the property tests hold them to that).
 */

/** RFC 9113 section 7 error codes, as sent in RST_STREAM and GOAWAY. */
export const H2_NO_ERROR = 0x0;
export const H2_PROTOCOL_ERROR = 0x1;
export const H2_INTERNAL_ERROR = 0x2;
export const H2_FLOW_CONTROL_ERROR = 0x3;
export const H2_SETTINGS_TIMEOUT = 0x4;
export const H2_STREAM_CLOSED = 0x5;
export const H2_FRAME_SIZE_ERROR = 0x6;
export const H2_REFUSED_STREAM = 0x7;
export const H2_CANCEL = 0x8;
export const H2_COMPRESSION_ERROR = 0x9;
export const H2_CONNECT_ERROR = 0xa;
export const H2_ENHANCE_YOUR_CALM = 0xb;
export const H2_INADEQUATE_SECURITY = 0xc;
export const H2_HTTP_1_1_REQUIRED = 0xd;

const WIRE_NAMES = [
  'NO_ERROR', 'PROTOCOL_ERROR', 'INTERNAL_ERROR', 'FLOW_CONTROL_ERROR', 'SETTINGS_TIMEOUT', 'STREAM_CLOSED',
  'FRAME_SIZE_ERROR', 'REFUSED_STREAM', 'CANCEL', 'COMPRESSION_ERROR', 'CONNECT_ERROR', 'ENHANCE_YOUR_CALM',
  'INADEQUATE_SECURITY', 'HTTP_1_1_REQUIRED',
];

/** The RFC's name for a wire error code (unknown codes, which peers may send, print as hex). */
export function h2ErrorName(wireCode: number): string {
  return WIRE_NAMES[wireCode] ?? `0x${wireCode.toString(16)}`;
}

export type H2ErrorCode =
  /** The peer broke the protocol; the connection ends with GOAWAY carrying `wireCode`. */
  | 'H2_PEER_PROTOCOL'
  /** The peer broke the protocol on one stream; that stream is reset with `wireCode`. */
  | 'H2_PEER_STREAM'
  /** The peer ended the connection (GOAWAY with an error, or the socket closed mid-stream). */
  | 'H2_CONNECTION_CLOSED'
  /** No SETTINGS or PING ACK within the timeout. */
  | 'H2_TIMEOUT'
  /** Used after close or against the peer's limits (no stream can be opened now). */
  | 'H2_UNAVAILABLE';

export class H2Error extends Error {
  readonly code: H2ErrorCode;
  /** The RFC 9113 code sent (or received) on the wire. */
  readonly wireCode: number;
  /** Set for a stream error: the stream it concerns. 0 for a connection error. */
  readonly streamId: number;

  constructor(code: H2ErrorCode, wireCode: number, message: string, streamId = 0) {
    super(message);
    this.name = 'H2Error';
    this.code = code;
    this.wireCode = wireCode;
    this.streamId = streamId;
  }
}

export function isH2Error(error: unknown, code?: H2ErrorCode): error is H2Error {
  return error instanceof H2Error && (code === undefined || error.code === code);
}

/** A connection error caused by the peer's bytes: GOAWAY with `wireCode`, then close. */
export function connectionError(wireCode: number, message: string): H2Error {
  return new H2Error('H2_PEER_PROTOCOL', wireCode, `HTTP/2 connection error ${h2ErrorName(wireCode)}: ${message}`);
}

/** A stream error caused by the peer's bytes: RST_STREAM on `streamId` with `wireCode`; the connection lives on. */
export function streamError(streamId: number, wireCode: number, message: string): H2Error {
  return new H2Error('H2_PEER_STREAM', wireCode, `HTTP/2 stream ${streamId} error ${h2ErrorName(wireCode)}: ${message}`, streamId);
}
