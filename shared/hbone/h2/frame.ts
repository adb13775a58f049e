/**
 * HTTP/2 framing (RFC 9113 section 4 and 6): frame types and flags, building frames to send, and `FrameReader`,
 * which cuts incoming socket chunks into frames.
 *
 * Owns: the 9-byte header layout, the connection preface, size checks every frame gets before it is handed on
 * (length against our SETTINGS_MAX_FRAME_SIZE, fixed sizes of PING/SETTINGS/WINDOW_UPDATE/RST_STREAM/PRIORITY,
 * padding inside the payload), and the reading hot path: a DATA payload is handed on in the pieces it arrived
 * in, as offsets into the socket's own chunk (no copy, no per-piece object); other frames are handed on whole,
 * as offsets into the chunk, copied only when one straddles two chunks.
 * Must not know about: streams, windows, HPACK, what a frame means beyond its shape.
 * Bad input raises H2Error (FRAME_SIZE_ERROR or PROTOCOL_ERROR connection errors) and nothing else.
 */
import { connectionError, H2_FRAME_SIZE_ERROR, H2_PROTOCOL_ERROR } from './errors.ts';

export const FRAME_HEADER_BYTES = 9;

export const FRAME_DATA = 0x0;
export const FRAME_HEADERS = 0x1;
export const FRAME_PRIORITY = 0x2;
export const FRAME_RST_STREAM = 0x3;
export const FRAME_SETTINGS = 0x4;
export const FRAME_PUSH_PROMISE = 0x5;
export const FRAME_PING = 0x6;
export const FRAME_GOAWAY = 0x7;
export const FRAME_WINDOW_UPDATE = 0x8;
export const FRAME_CONTINUATION = 0x9;

export const FLAG_END_STREAM = 0x1;
export const FLAG_ACK = 0x1;
export const FLAG_END_HEADERS = 0x4;
export const FLAG_PADDED = 0x8;
export const FLAG_PRIORITY = 0x20;

export const SETTINGS_HEADER_TABLE_SIZE = 0x1;
export const SETTINGS_ENABLE_PUSH = 0x2;
export const SETTINGS_MAX_CONCURRENT_STREAMS = 0x3;
export const SETTINGS_INITIAL_WINDOW_SIZE = 0x4;
export const SETTINGS_MAX_FRAME_SIZE = 0x5;
export const SETTINGS_MAX_HEADER_LIST_SIZE = 0x6;

/** The protocol's floor and ceiling for SETTINGS_MAX_FRAME_SIZE. */
export const MIN_MAX_FRAME_SIZE = 16_384;
export const MAX_MAX_FRAME_SIZE = 16_777_215;
/** The largest window (and window increment) the protocol allows. */
export const MAX_WINDOW = 2 ** 31 - 1;
/** Every connection starts with a 65,535-byte window both ways, whatever SETTINGS say (RFC 9113 6.9.2). */
export const DEFAULT_WINDOW = 65_535;

/** What a client sends first (RFC 9113 section 3.4). */
export const CLIENT_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/** Writes a frame header at `offset`. */
export function writeFrameHeader(target: Buffer, offset: number, length: number, type: number, flags: number, streamId: number): void {
  target[offset] = length >>> 16;
  target[offset + 1] = (length >>> 8) & 0xff;
  target[offset + 2] = length & 0xff;
  target[offset + 3] = type;
  target[offset + 4] = flags;
  // Byte stores, not writeUInt32BE: its range check allocated in code V8 had not optimized (sampled heap profile).
  target[offset + 5] = (streamId >>> 24) & 0x7f;
  target[offset + 6] = (streamId >>> 16) & 0xff;
  target[offset + 7] = (streamId >>> 8) & 0xff;
  target[offset + 8] = streamId & 0xff;
}

/** A whole frame with a payload of `payloadBytes` still to be filled in at offset 9. */
export function allocFrame(payloadBytes: number, type: number, flags: number, streamId: number): Buffer {
  const frame = Buffer.allocUnsafe(FRAME_HEADER_BYTES + payloadBytes);
  writeFrameHeader(frame, 0, payloadBytes, type, flags, streamId);
  return frame;
}

/** SETTINGS with `settings` as [identifier, value] pairs. */
export function settingsFrame(settings: ReadonlyArray<readonly [number, number]>): Buffer {
  const frame = allocFrame(6 * settings.length, FRAME_SETTINGS, 0, 0);
  settings.forEach(([identifier, value], index) => {
    frame.writeUInt16BE(identifier, FRAME_HEADER_BYTES + 6 * index);
    frame.writeUInt32BE(value, FRAME_HEADER_BYTES + 6 * index + 2);
  });
  return frame;
}

export const SETTINGS_ACK_FRAME: Buffer = allocFrame(0, FRAME_SETTINGS, FLAG_ACK, 0);

export function pingFrame(opaque: Buffer, ack: boolean): Buffer {
  const frame = allocFrame(8, FRAME_PING, ack ? FLAG_ACK : 0, 0);
  opaque.copy(frame, FRAME_HEADER_BYTES, 0, 8);
  return frame;
}

export function windowUpdateFrame(streamId: number, increment: number): Buffer {
  const frame = allocFrame(4, FRAME_WINDOW_UPDATE, 0, streamId);
  frame.writeUInt32BE(increment, FRAME_HEADER_BYTES);
  return frame;
}

export function rstStreamFrame(streamId: number, wireCode: number): Buffer {
  const frame = allocFrame(4, FRAME_RST_STREAM, 0, streamId);
  frame.writeUInt32BE(wireCode, FRAME_HEADER_BYTES);
  return frame;
}

export function goawayFrame(lastStreamId: number, wireCode: number, debug = ''): Buffer {
  const debugBytes = Buffer.from(debug, 'utf8');
  const frame = allocFrame(8 + debugBytes.length, FRAME_GOAWAY, 0, 0);
  frame.writeUInt32BE(lastStreamId, FRAME_HEADER_BYTES);
  frame.writeUInt32BE(wireCode, FRAME_HEADER_BYTES + 4);
  debugBytes.copy(frame, FRAME_HEADER_BYTES + 8);
  return frame;
}

/**
 * What FrameReader calls. Payloads are `chunk[start, end)`; the bytes belong to the chunk given to `push`, which
 * FrameReader never keeps or changes: whether a receiver may keep a `subarray` past the call is for whoever owns the
 * chunk to say (H2Connection's pooled TLS reads reuse it; the connection copies what it keeps).
 */
export interface FrameReceiver {
  /** A complete non-DATA frame, its padding (HEADERS, PUSH_PROMISE) already removed. */
  onFrame(type: number, flags: number, streamId: number, chunk: Buffer, start: number, end: number): void;
  /** A DATA frame begins: `length` is its whole payload, padding included (what flow control counts). */
  onDataStart(streamId: number, flags: number, length: number): void;
  /** A piece of the DATA frame's payload (padding excluded); zero or more calls between start and end. */
  onData(chunk: Buffer, start: number, end: number): void;
  /** The DATA frame is complete (its END_STREAM flag was given to onDataStart). */
  onDataEnd(): void;
}

const STATE_HEADER = 0;
const STATE_PAYLOAD = 1;
const STATE_DATA_PAD_LENGTH = 2;
const STATE_DATA = 3;
const STATE_DATA_PADDING = 4;
const STATE_STOPPED = 5;

/**
 * Cuts a byte stream into frames. Call `push` with every chunk read from the socket; it calls the receiver
 * synchronously. After a thrown H2Error the reader must not be used again (the connection is over).
 */
export class FrameReader {
  readonly #receiver: FrameReceiver;
  /** Our SETTINGS_MAX_FRAME_SIZE: longer frames are a FRAME_SIZE_ERROR. */
  maxFrameSize: number;
  #state = STATE_HEADER;
  /** A frame header straddling two chunks is gathered here. */
  readonly #header = Buffer.alloc(FRAME_HEADER_BYTES);
  #headerFilled = 0;
  #type = 0;
  #flags = 0;
  #streamId = 0;
  #length = 0;
  /** A non-DATA payload straddling chunks is gathered here (allocated per such frame: control frames are rare). */
  #payload: Buffer | undefined;
  #payloadFilled = 0;
  /** DATA: payload bytes still to come (data, then padding). */
  #dataLeft = 0;
  #padLeft = 0;

  constructor(receiver: FrameReceiver, maxFrameSize: number) {
    this.#receiver = receiver;
    this.maxFrameSize = maxFrameSize;
  }

  /** Ignores every later byte (the connection is closing); also ends a `push` in progress after its current frame. */
  stop(): void {
    this.#state = STATE_STOPPED;
  }

  /** Parses `chunk[start, end)` (the whole chunk by default). */
  push(chunk: Buffer, start = 0, end = chunk.length): void {
    let offset = start;
    const length = end;
    while (offset < length) {
      switch (this.#state) {
        case STATE_HEADER: {
          if (this.#headerFilled === 0 && length - offset >= FRAME_HEADER_BYTES) {
            this.#parseHeader(chunk, offset);
            offset += FRAME_HEADER_BYTES;
          } else {
            const take = Math.min(FRAME_HEADER_BYTES - this.#headerFilled, length - offset);
            chunk.copy(this.#header, this.#headerFilled, offset, offset + take);
            this.#headerFilled += take;
            offset += take;
            if (this.#headerFilled < FRAME_HEADER_BYTES) return;
            this.#headerFilled = 0;
            this.#parseHeader(this.#header, 0);
          }
          this.#begin();
          break;
        }
        case STATE_PAYLOAD: {
          const available = length - offset;
          if (this.#payloadFilled === 0 && available >= this.#length) {
            this.#frame(chunk, offset, offset + this.#length);
            offset += this.#length;
          } else {
            this.#payload ??= Buffer.allocUnsafe(this.#length);
            const take = Math.min(this.#length - this.#payloadFilled, available);
            chunk.copy(this.#payload, this.#payloadFilled, offset, offset + take);
            this.#payloadFilled += take;
            offset += take;
            if (this.#payloadFilled < this.#length) return;
            const payload = this.#payload;
            this.#payload = undefined;
            this.#payloadFilled = 0;
            this.#frame(payload, 0, payload.length);
          }
          break;
        }
        case STATE_DATA_PAD_LENGTH: {
          const padLength = chunk[offset++]!;
          this.#dataLeft--;
          if (padLength > this.#dataLeft) {
            throw connectionError(H2_PROTOCOL_ERROR, `DATA padding of ${padLength} bytes in a ${this.#length}-byte frame`);
          }
          this.#padLeft = padLength;
          this.#dataLeft -= padLength;
          this.#state = STATE_DATA;
          this.#finishDataIfDone();
          break;
        }
        case STATE_DATA: {
          const take = Math.min(this.#dataLeft, length - offset);
          this.#receiver.onData(chunk, offset, offset + take);
          offset += take;
          this.#dataLeft -= take;
          this.#finishDataIfDone();
          break;
        }
        case STATE_DATA_PADDING: {
          const take = Math.min(this.#padLeft, length - offset);
          offset += take;
          this.#padLeft -= take;
          this.#finishDataIfDone();
          break;
        }
        default:
          return;
      }
    }
  }

  #parseHeader(source: Buffer, offset: number): void {
    this.#length = (source[offset]! << 16) | (source[offset + 1]! << 8) | source[offset + 2]!;
    this.#type = source[offset + 3]!;
    this.#flags = source[offset + 4]!;
    // The reserved bit is ignored on receipt (RFC 9113 4.1). Shifts, not readUInt32BE: its multiplications made
    // heap numbers in code V8 had not optimized (a sampled heap profile found ~70 bytes per request per end).
    this.#streamId = ((source[offset + 5]! & 0x7f) << 24) | (source[offset + 6]! << 16) | (source[offset + 7]! << 8) | source[offset + 8]!;
  }

  /** Checks the header just parsed and enters the state for its payload. */
  #begin(): void {
    const length = this.#length;
    if (length > this.maxFrameSize) {
      throw connectionError(H2_FRAME_SIZE_ERROR, `frame of ${length} bytes (type ${this.#type}) above our SETTINGS_MAX_FRAME_SIZE of ${this.maxFrameSize}`);
    }
    if (this.#type === FRAME_DATA) {
      if (this.#streamId === 0) throw connectionError(H2_PROTOCOL_ERROR, 'DATA on stream 0');
      if (this.#flags & FLAG_PADDED && length === 0) throw connectionError(H2_FRAME_SIZE_ERROR, 'padded DATA frame without a pad length');
      this.#receiver.onDataStart(this.#streamId, this.#flags, length);
      if (this.#state === STATE_STOPPED) return;
      this.#dataLeft = length;
      this.#padLeft = 0;
      this.#state = this.#flags & FLAG_PADDED ? STATE_DATA_PAD_LENGTH : STATE_DATA;
      this.#finishDataIfDone();
      return;
    }
    checkFixedSize(this.#type, this.#flags, this.#streamId, length);
    if (length === 0) {
      this.#frame(this.#header, 0, 0);
      return;
    }
    this.#state = STATE_PAYLOAD;
  }

  #finishDataIfDone(): void {
    if (this.#state === STATE_STOPPED || this.#state === STATE_DATA_PAD_LENGTH || this.#dataLeft > 0) return;
    if (this.#padLeft > 0) {
      this.#state = STATE_DATA_PADDING;
      return;
    }
    this.#state = STATE_HEADER;
    this.#receiver.onDataEnd();
  }

  /** A complete non-DATA frame: strips padding and hands it on. */
  #frame(source: Buffer, start: number, end: number): void {
    this.#state = STATE_HEADER;
    const type = this.#type;
    const flags = this.#flags;
    if ((type === FRAME_HEADERS || type === FRAME_PUSH_PROMISE) && flags & FLAG_PADDED) {
      const padLength = source[start]!;
      start++;
      if (padLength > end - start) throw connectionError(H2_PROTOCOL_ERROR, `padding of ${padLength} bytes in a ${end - start + 1}-byte frame`);
      end -= padLength;
    }
    this.#receiver.onFrame(type, flags, this.#streamId, source, start, end);
  }
}

/** RFC 9113 section 6: frames whose size or stream is fixed by the protocol. */
function checkFixedSize(type: number, flags: number, streamId: number, length: number): void {
  switch (type) {
    case FRAME_SETTINGS:
      if (streamId !== 0) throw connectionError(H2_PROTOCOL_ERROR, `SETTINGS on stream ${streamId}`);
      if (flags & FLAG_ACK && length !== 0) throw connectionError(H2_FRAME_SIZE_ERROR, 'SETTINGS ACK with a payload');
      if (length % 6 !== 0) throw connectionError(H2_FRAME_SIZE_ERROR, `SETTINGS of ${length} bytes (not a multiple of 6)`);
      return;
    case FRAME_PING:
      if (streamId !== 0) throw connectionError(H2_PROTOCOL_ERROR, `PING on stream ${streamId}`);
      if (length !== 8) throw connectionError(H2_FRAME_SIZE_ERROR, `PING of ${length} bytes`);
      return;
    case FRAME_GOAWAY:
      if (streamId !== 0) throw connectionError(H2_PROTOCOL_ERROR, `GOAWAY on stream ${streamId}`);
      if (length < 8) throw connectionError(H2_FRAME_SIZE_ERROR, `GOAWAY of ${length} bytes`);
      return;
    case FRAME_WINDOW_UPDATE:
      if (length !== 4) throw connectionError(H2_FRAME_SIZE_ERROR, `WINDOW_UPDATE of ${length} bytes`);
      return;
    case FRAME_RST_STREAM:
      if (streamId === 0) throw connectionError(H2_PROTOCOL_ERROR, 'RST_STREAM on stream 0');
      if (length !== 4) throw connectionError(H2_FRAME_SIZE_ERROR, `RST_STREAM of ${length} bytes`);
      return;
    case FRAME_PRIORITY:
      if (streamId === 0) throw connectionError(H2_PROTOCOL_ERROR, 'PRIORITY on stream 0');
      // RFC 9113 6.3 makes a wrong-sized PRIORITY a stream error; treating it as a connection error is stricter.
      if (length !== 5) throw connectionError(H2_FRAME_SIZE_ERROR, `PRIORITY of ${length} bytes`);
      return;
    case FRAME_HEADERS:
    case FRAME_CONTINUATION:
    case FRAME_PUSH_PROMISE:
      if (streamId === 0) throw connectionError(H2_PROTOCOL_ERROR, `frame type ${type} on stream 0`);
      if (type === FRAME_HEADERS && flags & FLAG_PADDED && length === 0) throw connectionError(H2_FRAME_SIZE_ERROR, 'padded HEADERS without a pad length');
      return;
    default:
      // Unknown frame types are ignored (RFC 9113 4.1), whatever their size (bounded by maxFrameSize).
      return;
  }
}
