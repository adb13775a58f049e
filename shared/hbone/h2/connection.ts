/**
 * One HTTP/2 connection over any duplex socket (a tls.TLSSocket in HBONE), client or server side, speaking the
 * part of RFC 9113 that HBONE uses.
 *
 * Owns: the preface and SETTINGS exchange (with ACKs), the stream table and stream ids, HEADERS/CONTINUATION
 * assembly and HPACK, request/response well-formedness (CONNECT's rules), DATA with connection and stream flow
 * control both ways, WINDOW_UPDATE, PING (answers, our pings and optional keepalive), RST_STREAM both ways,
 * GOAWAY both ways (graceful drain: no new streams, the connection closes when the last stream does), the peer's
 * SETTINGS_MAX_CONCURRENT_STREAMS and ours, and every defence against a hostile peer: frame sizes (FrameReader),
 * HPACK bombs (HpackDecoder's list limit), header blocks too large or split into too many CONTINUATIONs, empty
 * DATA floods, window overflow, stream floods (REFUSED_STREAM beyond our limit) and rapid reset (a token bucket on the peer's
 * RST_STREAMs and our refusals; empty -> GOAWAY ENHANCE_YOUR_CALM). Connection errors end in GOAWAY with the
 * RFC's code; stream errors in RST_STREAM; nothing a peer sends makes this code throw to its caller.
 * Must not know about: TLS, identities, HBONE's statuses or targets, sockets other than the one it is given.
 *
 * Hot path: a TLS socket is read into pooled buffers shared by the pieces cut from each read (../pooled-reads.ts,
 * SharedPooledReader: no allocation per read, so no external memory for V8 to answer with mark-compacts); received
 * DATA goes from FrameReader straight to the stream's handler, as a view of that buffer with the buffer's holder
 * count beside it (a splice holds it until the piece is written; other handlers get a copy); sent DATA is a 9-byte header
 * (carved from a slab) and the caller's own buffer, gathered in our own list and written at the end of the tick
 * (at the end of the pooled read's callback when a read produced them: ../read-turn.ts; "tick" below means either).
 * On a TLS socket (HBONE) whose queue is empty, the tick's frames are copied into one send buffer shared by every
 * connection of the thread and written as one contiguous `write`: OpenSSL encrypts a single buffer in place
 * before `write` returns (node's TLSWrap), so the buffer is free again at once, whereas a writev's pieces are
 * first copied by TLSWrap into a fresh zero-filled allocation. A busy TLS socket (a write in flight) and other
 * duplexes (tests' plain sockets, which may keep a buffer until the kernel took it) get small ticks as one
 * concatenated buffer and bulk ticks as one corked writev. (Holding frames back until the write in flight
 * completed, so that every write is contiguous, cost round trips an event-loop turn: measured and dropped.)
 * A chunk written with an H2WriteDone (the splice's pooled reads) is the caller's again once that runs: right after
 * the copied write, or from the socket write's completion on a busy socket, in the order the chunks were written
 * (so a busy socket's small tick holding one is written as pieces, not concatenated and freed ahead of its turn).
 * Events (rare, so an EventEmitter): 'remoteSettings' (the peer's first SETTINGS), 'stream' (server: a new
 * well-formed request stream), 'goaway' (code, lastStreamId), 'streamError' (an H2Error for a stream we reset
 * because of the peer), 'error' (the H2Error that ended the connection; emitted only when listened to),
 * 'close' (once; the connection is unusable from then on).
 */
import { EventEmitter } from 'node:events';
import type { Duplex } from 'node:stream';
import { TLSSocket } from 'node:tls';
import { SharedPooledReader, type SharedReadBuffer } from '../pooled-reads.ts';
import { DirectWriter, WRITE_FAILED } from '../direct-writes.ts';
import { emptyList } from '../lists.ts';
import { deferToTurnEnd, inReadTurn } from '../read-turn.ts';
import { deferToCheckPhase } from '../check-phase.ts';
import {
  DEFAULT_CONNECTION_WINDOW_BYTES,
  DEFAULT_MAX_FRAME_SIZE,
  DEFAULT_SERVER_MAX_CONCURRENT_STREAMS,
  DEFAULT_STREAM_WINDOW_BYTES,
  SERVER_STREAM_RESET_BURST,
  SERVER_STREAM_RESET_RATE_PER_SECOND,
} from '../config.ts';
import {
  connectionError,
  H2_CANCEL,
  H2_ENHANCE_YOUR_CALM,
  H2_FLOW_CONTROL_ERROR,
  H2_FRAME_SIZE_ERROR,
  H2_INTERNAL_ERROR,
  H2_NO_ERROR,
  H2_PROTOCOL_ERROR,
  H2_REFUSED_STREAM,
  H2_STREAM_CLOSED,
  H2Error,
  h2ErrorName,
  isH2Error,
  streamError,
} from './errors.ts';
import {
  CLIENT_PREFACE,
  DEFAULT_WINDOW,
  FLAG_ACK,
  FLAG_END_HEADERS,
  FLAG_END_STREAM,
  FLAG_PRIORITY,
  FRAME_CONTINUATION,
  FRAME_DATA,
  FRAME_GOAWAY,
  FRAME_HEADER_BYTES,
  FRAME_HEADERS,
  FRAME_PING,
  FRAME_PRIORITY,
  FRAME_PUSH_PROMISE,
  FRAME_RST_STREAM,
  FRAME_SETTINGS,
  FRAME_WINDOW_UPDATE,
  FrameReader,
  type FrameReceiver,
  goawayFrame,
  MAX_MAX_FRAME_SIZE,
  MAX_WINDOW,
  MIN_MAX_FRAME_SIZE,
  pingFrame,
  rstStreamFrame,
  SETTINGS_ACK_FRAME,
  SETTINGS_ENABLE_PUSH,
  SETTINGS_HEADER_TABLE_SIZE,
  SETTINGS_INITIAL_WINDOW_SIZE,
  SETTINGS_MAX_CONCURRENT_STREAMS,
  SETTINGS_MAX_FRAME_SIZE,
  SETTINGS_MAX_HEADER_LIST_SIZE,
  settingsFrame,
  windowUpdateFrame,
  writeFrameHeader,
} from './frame.ts';
import { type HeaderList, HpackDecoder, HpackEncoder } from './hpack.ts';
import { requestHeadersProblem, responseStatus } from './headers.ts';
import { H2Stream, type H2StreamHandler, type H2WriteDone, STREAM_WRITE_HIGH_WATER_BYTES } from './stream.ts';
import { H2StreamTransport } from './stream-transport.ts';

/** Header lists decode to at most 64 KiB (RFC 9113's count): CONNECT requests are a few hundred bytes. */
export const DEFAULT_MAX_HEADER_LIST_BYTES = 64 * 1024;
/** HPACK's default table size; advertised as is, so peers need no size update. */
export const DEFAULT_HEADER_TABLE_BYTES = 4096;
/** One header block in more than this many CONTINUATION frames is a flood (CVE-2024-27316 and relatives). */
export const DEFAULT_MAX_CONTINUATION_FRAMES = 32;
/**
 * Empty DATA frames (no payload, no END_STREAM) carry nothing but cost a parse each: more than this many in a row
 * is the "data dribble" flood (CVE-2019-9518), answered with ENHANCE_YOUR_CALM.
 */
const MAX_EMPTY_DATA_FRAMES_IN_A_ROW = 1000;
/** Streams our client lets a server initiate: none (HBONE servers never push). Advertised by the server side only. */
const CLIENT_ID_LIMIT = 2 ** 31 - 1;
/** `write` says false once the socket holds this much unsent (the TLS layer's queue). */
const SOCKET_HIGH_WATER_BYTES = 1024 * 1024;
/**
 * A peer that keeps asking for replies (PING, SETTINGS) without reading them grows our socket queue without
 * bound; past this it is cut off with ENHANCE_YOUR_CALM. Far above what data frames ever queue (windows).
 */
const CONTROL_FLOOD_SOCKET_BYTES = 64 * 1024 * 1024;
/**
 * A tick's frames up to this size leave as one concatenated buffer (small frames: one write call, one copy);
 * above it, as a corked writev of the pieces (bulk DATA: the TLS layer's own gathering copy is the only one).
 */
const CONCAT_MAX_BYTES = 16 * 1024;
/**
 * A poll phase's spliced DATA up to this much is gathered until the check phase and written as one TLS record
 * (see #write: `coalesce`); past it the frames leave at the end of the read that brought them, as before (bulk).
 */
const COALESCE_MAX_BYTES = 16 * 1024;
/**
 * AMBIT_HBONE_FLUSH_AT_READ_END=1: spliced DATA leaves at the end of the read that brought it, as before session s14
 * (one TLS write per read, so two requests read in one poll phase made two records).
 */
const coalesceSplicedData = process.env.AMBIT_HBONE_FLUSH_AT_READ_END !== '1';
/**
 * After this many check-phase flushes in a row that carried one read's spliced DATA each, the connection flushes such
 * DATA at the read's end again (see #gathering): waiting for the check phase costs a read that came alone an Immediate
 * (a C++ -> JavaScript callback) and, since the TLS write's completion is a native immediate queued during the check
 * phase, one more loop turn with a zero-timeout poll (session s15, BENCHMARKS.md). At a low rate every request comes
 * alone, at the mesh suite's 1,000/s over ten connections about half of an agent's wake-ups read two or more: a run of
 * four lone phases says the reads are not coming together (0.5^4: one in sixteen phases of such a mix), and the
 * next read that finds the previous read's TLS write of the same poll phase still in flight turns the gathering on again.
 */
const LONE_PHASES_TO_FLUSH_AT_READ_END = 4;
/**
 * The send buffer every TLS connection of a thread copies a tick's frames into (see the top comment): a tick
 * gathers at most about SOCKET_HIGH_WATER_BYTES plus a frame; more than this leaves as a corked writev instead.
 */
const SEND_BUFFER_BYTES = SOCKET_HIGH_WATER_BYTES + 128 * 1024;
let sharedSendBuffer: Buffer | undefined;
/** The last view of it that was written: a tick of the same size reuses it (request and answer sizes repeat). */
let sharedSendView: Buffer | undefined;
/**
 * Stands in a connection's gathered pieces for a DATA frame's header kept as numbers (three per header, in order,
 * beside the pieces) until the flush: copied into the send buffer, the header is written there directly, and only a
 * flush that writes the pieces as they are makes a view of a slab for it. A view per frame was a typed array
 * allocated on the V8 heap (`CreateTypedArray`, ~100 bytes) for every DATA frame sent.
 */
const DATA_HEADER_PLACEHOLDER = Buffer.alloc(FRAME_HEADER_BYTES);
/**
 * Copies a tick's gathered frames (`bytes` in all, at most SEND_BUFFER_BYTES) into the thread's send buffer and
 * returns the view of them: one buffer for TLSWrap to encrypt in place. The view is valid until the next call.
 * `headers` holds the numbers of the pieces that are DATA_HEADER_PLACEHOLDER (length, type << 8 | flags, stream id).
 */
function gatheredIntoSendBuffer(out: readonly Buffer[], bytes: number, headers: readonly number[]): Buffer {
  const buffer = (sharedSendBuffer ??= Buffer.allocUnsafeSlow(SEND_BUFFER_BYTES));
  let offset = 0;
  let header = 0;
  for (let index = 0; index < out.length; index++) {
    const piece = out[index]!;
    if (piece === DATA_HEADER_PLACEHOLDER) {
      const typeAndFlags = headers[header + 1]!;
      writeFrameHeader(buffer, offset, headers[header]!, typeAndFlags >>> 8, typeAndFlags & 0xff, headers[header + 2]!);
      header += 3;
      offset += FRAME_HEADER_BYTES;
      continue;
    }
    buffer.set(piece, offset);
    offset += piece.length;
  }
  let view = sharedSendView;
  if (view === undefined || view.length !== bytes) view = sharedSendView = buffer.subarray(0, bytes);
  return view;
}
/** Frame headers are carved from slabs of this size (1,820 headers each). */
const HEADER_SLAB_BYTES = 16_380;
/** After a GOAWAY of ours the socket gets this long to flush before it is destroyed. */
const CLOSE_FLUSH_MS = 1000;

export type H2Role = 'client' | 'server';

export interface H2ConnectionOptions {
  role: H2Role;
  /** Our SETTINGS_INITIAL_WINDOW_SIZE: what the peer may send per stream before we credit it. Default 4 MiB. */
  streamWindowBytes?: number;
  /** Our connection window. Default 16 MiB. */
  connectionWindowBytes?: number;
  /** Our SETTINGS_MAX_FRAME_SIZE. Default 64 KiB. */
  maxFrameSize?: number;
  /** Server: SETTINGS_MAX_CONCURRENT_STREAMS; more at once are refused (REFUSED_STREAM). Default 1000. */
  maxConcurrentStreams?: number;
  /** Our SETTINGS_MAX_HEADER_LIST_SIZE, enforced while decoding (HPACK bombs). Default 64 KiB. */
  maxHeaderListBytes?: number;
  /** CONTINUATION frames allowed in one header block. Default 32. */
  maxContinuationFrames?: number;
  /** Server: the peer's RST_STREAMs (and our refusals) may come in a burst of this many... Default 10,000. */
  resetBurst?: number;
  /** ...then at this rate per second; faster ends the connection with ENHANCE_YOUR_CALM. Default 1000/s. */
  resetRatePerSecond?: number;
  /** Send a PING this often (0: never). */
  keepaliveIntervalMs?: number;
  /** A PING unanswered this long ends the connection (H2_TIMEOUT). Default 5 s. */
  keepaliveTimeoutMs?: number;
}

interface HeaderBlockInProgress {
  streamId: number;
  endStream: boolean;
  fragments: Buffer[];
  bytes: number;
  frames: number;
}

export interface H2ConnectionStats {
  streamsOpened: number;
  /** Streams we refused (over the concurrency limit or malformed). */
  streamsRefused: number;
  /** RST_STREAM frames received. */
  resetsReceived: number;
  /** Flushes of spliced DATA gathered until the loop's check phase (see #gathering). */
  checkPhaseFlushes: number;
}

function flushConnection(connection: H2Connection): void {
  connection.flush();
}

function flushCheckPhase(connection: H2Connection): void {
  connection.flushCheckPhase();
}

export class H2Connection extends EventEmitter implements FrameReceiver {
  /** A socket, or an outer HTTP/2 stream the connection is nested in (stream-transport.ts). */
  readonly socket: Duplex | H2StreamTransport;
  readonly role: H2Role;
  readonly stats: H2ConnectionStats = { streamsOpened: 0, streamsRefused: 0, resetsReceived: 0, checkPhaseFlushes: 0 };

  // The peer's settings, as last received.
  peerMaxConcurrentStreams = Infinity;
  peerInitialWindow = DEFAULT_WINDOW;
  peerMaxFrameSize = MIN_MAX_FRAME_SIZE;
  peerMaxHeaderListBytes = Infinity;
  /** True once the peer's first SETTINGS arrived. */
  remoteSettingsReceived = false;
  /**
   * Told about every stream that closed, after its handler (the owner's bookkeeping: idle timers, premature
   * resets); the stream is already out of `activeStreams`. One call per stream, never per chunk.
   */
  onStreamClosed: ((stream: H2Stream) => void) | undefined;

  readonly #streamWindow: number;
  readonly #connectionWindow: number;
  readonly #maxConcurrentStreams: number;
  readonly #maxHeaderListBytes: number;
  readonly #maxContinuationFrames: number;
  readonly #reader: FrameReader;
  readonly #decoder: HpackDecoder;
  readonly #encoder = new HpackEncoder();
  readonly #streams = new Map<number, H2Stream>();
  /** Streams with data waiting for window. */
  readonly #blocked = new Set<H2Stream>();
  /** Streams owed an onDrain. */
  readonly #drainWaiters = new Set<H2Stream>();

  #nextStreamId: number;
  #highestPeerStreamId = 0;
  #prefaceLeft: number;
  #sendWindow = DEFAULT_WINDOW;
  #receiveWindow = DEFAULT_WINDOW;
  #receivedUncredited = 0;
  #headerBlock: HeaderBlockInProgress | undefined;

  // The DATA frame being received.
  #dataStream: H2Stream | undefined;
  #dataLength = 0;
  #dataEndStream = false;
  #emptyDataFrames = 0;
  /** While a pooled read is being parsed: the shared buffer its bytes live in (undefined for plain reads). */
  #readBuffer: SharedReadBuffer | undefined;

  #goawaySent = false;
  #goawayReceived = false;
  #closed = false;
  #error: H2Error | undefined;
  /** What this tick wrote, flushed to the socket as one buffer at the end of the tick. */
  readonly #out: Buffer[] = [];
  /** Beside `#out`, the H2WriteDone of a piece that ends a caller's chunk (undefined for the rest). */
  readonly #outDone: Array<H2WriteDone | undefined> = [];
  /** The DATA headers among `#out` (DATA_HEADER_PLACEHOLDER), three numbers each: length, type << 8 | flags, stream id. */
  readonly #outHeaders: number[] = [];
  /** How many of `#outDone` are set: a flush with none skips looking for them. */
  #outDoneCount = 0;
  #outBytes = 0;
  /** TLS socket: gathered frames leave as one copied write when the socket is idle (top comment). */
  readonly #copyingWrites: boolean;
  /** Nested in an outer HTTP/2 stream (stream-transport.ts): flushed once per loop turn (see #write). */
  readonly #nested: boolean;
  /**
   * What is gathered waits for the check phase only (spliced DATA read in this poll phase, see #write): a frame
   * that may not wait, or more than COALESCE_MAX_BYTES, asks for the flush at the read's end as well.
   */
  #flushAtCheckOnly = false;
  /**
   * Spliced DATA read in a poll phase waits for the check phase (true), or leaves at the end of its read (false: the
   * reads came alone, LONE_PHASES_TO_FLUSH_AT_READ_END).
   */
  #gatherUntilCheck = coalesceSplicedData;
  /** Spliced DATA chunks (reads) gathered since the last flush. */
  #splicedChunks = 0;
  /** Check-phase flushes in a row that carried one read's DATA. */
  #lonePhases = 0;
  /**
   * TLS socket: the tick's frames go to its handle without the socket's Writable (../direct-writes.ts), one write
   * in flight; what is gathered meanwhile is written from its completion. Undefined: `socket.write` (fallback).
   */
  readonly #direct: DirectWriter | undefined;
  /** The connection ended while a direct write was in flight: the socket is ended once it has completed. */
  #endAfterWrite = false;
  #slab = Buffer.allocUnsafeSlow(HEADER_SLAB_BYTES);
  #slabOffset = 0;
  /**
   * Nested only: where the open run starts in the slab (-1: none). A nested connection writes its HEADERS blocks and
   * DATA frame headers into the slab back to back, and such a run becomes one piece of `#out` (one view) when
   * something else is gathered after it, the slab is replaced, or the flush comes: a proxied answer's head, DATA
   * header and trailers were three views and three pieces for the outer stream, now two runs (session s14).
   */
  #runStart = -1;
  /** Nested only: the chunk being parsed is a piece of the outer connection's pooled read (valid during the call). */
  #borrowedRead = false;

  readonly #resetBurst: number;
  readonly #resetRate: number;
  #resetTokens: number;
  #resetRefilledAt = performance.now();

  #pingOpaque: Buffer | undefined;
  #pingSentAt = 0;
  #pingAck: ((rttMs: number) => void) | undefined;
  #keepaliveTimer: NodeJS.Timeout | undefined;
  #pingTimer: NodeJS.Timeout | undefined;
  readonly #keepaliveTimeoutMs: number;

  constructor(socket: Duplex | H2StreamTransport, options: H2ConnectionOptions) {
    super();
    this.socket = socket;
    this.role = options.role;
    this.#copyingWrites = socket instanceof TLSSocket;
    this.#nested = socket instanceof H2StreamTransport;
    this.#direct = this.#copyingWrites ? DirectWriter.attach(socket as TLSSocket, this.#onDirectWritten, { completionOnDemand: true }) : undefined;
    this.#streamWindow = options.streamWindowBytes ?? DEFAULT_STREAM_WINDOW_BYTES;
    this.#connectionWindow = options.connectionWindowBytes ?? DEFAULT_CONNECTION_WINDOW_BYTES;
    this.#maxConcurrentStreams = options.maxConcurrentStreams ?? DEFAULT_SERVER_MAX_CONCURRENT_STREAMS;
    this.#maxHeaderListBytes = options.maxHeaderListBytes ?? DEFAULT_MAX_HEADER_LIST_BYTES;
    this.#maxContinuationFrames = options.maxContinuationFrames ?? DEFAULT_MAX_CONTINUATION_FRAMES;
    this.#resetBurst = options.resetBurst ?? SERVER_STREAM_RESET_BURST;
    this.#resetRate = options.resetRatePerSecond ?? SERVER_STREAM_RESET_RATE_PER_SECOND;
    this.#resetTokens = this.#resetBurst;
    this.#keepaliveTimeoutMs = options.keepaliveTimeoutMs ?? 5000;
    const maxFrameSize = Math.min(Math.max(options.maxFrameSize ?? DEFAULT_MAX_FRAME_SIZE, MIN_MAX_FRAME_SIZE), MAX_MAX_FRAME_SIZE);
    this.#reader = new FrameReader(this, maxFrameSize);
    this.#decoder = new HpackDecoder({ maxTableBytes: DEFAULT_HEADER_TABLE_BYTES, maxHeaderListBytes: this.#maxHeaderListBytes });
    this.#nextStreamId = this.role === 'client' ? 1 : 2;
    this.#prefaceLeft = this.role === 'server' ? CLIENT_PREFACE.length : 0;

    this.#startReading(socket);
    socket.on('drain', this.#onSocketDrain);
    socket.on('end', this.#onSocketEnd);
    socket.on('error', this.#onSocketError);
    socket.on('close', this.#onSocketClose);

    const settings: Array<[number, number]> = [
      [SETTINGS_INITIAL_WINDOW_SIZE, this.#streamWindow],
      [SETTINGS_MAX_FRAME_SIZE, maxFrameSize],
      [SETTINGS_MAX_HEADER_LIST_SIZE, this.#maxHeaderListBytes],
    ];
    if (this.role === 'client') settings.unshift([SETTINGS_ENABLE_PUSH, 0]);
    else settings.unshift([SETTINGS_MAX_CONCURRENT_STREAMS, this.#maxConcurrentStreams]);
    if (this.role === 'client') this.#write(CLIENT_PREFACE);
    this.#write(settingsFrame(settings));
    // The stream windows come from SETTINGS; the connection's only from WINDOW_UPDATE (RFC 9113 6.9.2).
    if (this.#connectionWindow > DEFAULT_WINDOW) {
      this.#write(windowUpdateFrame(0, this.#connectionWindow - DEFAULT_WINDOW));
      this.#receiveWindow = this.#connectionWindow;
    }
    if ((options.keepaliveIntervalMs ?? 0) > 0) {
      this.#keepaliveTimer = setInterval(this.#keepalive, options.keepaliveIntervalMs).unref();
    }
    // Nested in an outer stream: its bytes come from the next tick on, after the owner's listeners ('stream'); pieces
    // of the outer connection's pooled reads are parsed in place (#onBorrowedData).
    if (socket instanceof H2StreamTransport) socket.attach(this.#onSocketData, this.#onBorrowedData);
  }

  /**
   * A TLS socket (HBONE) is read into shared pooled buffers when Node lets it (what it had buffered first, as plain
   * chunks); other duplexes, and TLS sockets Node will not switch, by 'data' events.
   */
  #startReading(socket: Duplex | H2StreamTransport): void {
    if (socket instanceof H2StreamTransport) return;
    if (this.#copyingWrites && SharedPooledReader.attach(socket as TLSSocket, this.#onSharedRead)) {
      for (let chunk = socket.read() as Buffer | null; chunk !== null; chunk = socket.read() as Buffer | null) this.#onSocketData(chunk);
      socket.resume();
      return;
    }
    socket.on('data', this.#onSocketData);
  }

  // A pooled read: `shared.buffer[0, bytes)`, parsed in place (no view of the read is made).
  readonly #onSharedRead = (shared: SharedReadBuffer, bytes: number): void => {
    this.#readBuffer = shared;
    this.#receive(shared.buffer, bytes);
    this.#readBuffer = undefined;
  };

  // ---- Public API ----

  /** True while `request` may open one more stream (not closing, under the peer's concurrency limit). */
  get available(): boolean {
    return !this.#closed && !this.#goawaySent && !this.#goawayReceived && this.#streams.size < this.peerMaxConcurrentStreams && this.#nextStreamId <= CLIENT_ID_LIMIT;
  }

  get closed(): boolean {
    return this.#closed;
  }

  /** True once either side sent GOAWAY: no new streams. */
  get draining(): boolean {
    return this.#goawaySent || this.#goawayReceived || this.#closed;
  }

  /** Streams open now. */
  get activeStreams(): number {
    return this.#streams.size;
  }

  /** The error that ended the connection (ours or the peer's), if one did. */
  get error(): H2Error | undefined {
    return this.#error;
  }

  /**
   * Client: opens a stream with `headers` ([name, value, ...], pseudo-headers first, lower-case names). Throws
   * H2Error H2_UNAVAILABLE when no stream may be opened now (closing, or at the peer's limit).
   */
  request(headers: readonly string[], handler: H2StreamHandler, endStream = false): H2Stream {
    if (this.role !== 'client') throw new H2Error('H2_UNAVAILABLE', H2_INTERNAL_ERROR, 'a server connection cannot open streams');
    if (!this.available) {
      throw new H2Error('H2_UNAVAILABLE', H2_REFUSED_STREAM, this.#closed || this.draining ? 'the HTTP/2 connection is closing' : `the peer allows ${this.peerMaxConcurrentStreams} streams at once`);
    }
    const id = this.#nextStreamId;
    this.#nextStreamId += 2;
    const stream = new H2Stream(this, id, headers as HeaderList, this.peerInitialWindow, this.#streamWindow);
    this.#streams.set(id, stream);
    this.stats.streamsOpened++;
    stream.setHandler(handler);
    this.#sendFields(id, headers, undefined, endStream);
    if (endStream) stream.localEnded = true;
    return stream;
  }

  /**
   * Sends a PING; `onAck` gets the round-trip time. False when one is already in flight or the connection is
   * closed.
   */
  ping(onAck?: (rttMs: number) => void): boolean {
    if (this.#closed || this.#pingOpaque) return false;
    const opaque = Buffer.allocUnsafe(8);
    opaque.writeDoubleBE(performance.now());
    this.#pingOpaque = opaque;
    this.#pingSentAt = performance.now();
    this.#pingAck = onAck;
    this.#write(pingFrame(opaque, false));
    return true;
  }

  /**
   * Graceful close: GOAWAY (no error, last stream = the highest the peer opened); streams open now finish; the
   * connection closes when the last one does.
   */
  close(): void {
    if (this.#closed) return;
    this.#sendGoaway(H2_NO_ERROR, '');
    if (this.#streams.size === 0) this.#teardown(undefined);
  }

  /** Closes now: GOAWAY (the error's code, or CANCEL), every open stream closed as reset (CANCEL). */
  destroy(error?: Error): void {
    if (this.#closed) return;
    const h2Error = error === undefined ? undefined : isH2Error(error) ? error : new H2Error('H2_CONNECTION_CLOSED', H2_CANCEL, error.message);
    this.#sendGoaway(h2Error ? h2Error.wireCode : H2_NO_ERROR, h2Error?.message ?? '');
    this.#teardown(h2Error);
  }

  // ---- Called by H2Stream ----

  /**
   * Sends DATA for `chunk[start..]` as far as the windows allow, in frames of the peer's maximum size; the last
   * frame carries END_STREAM when `endStream` and everything was sent. `chunk` undefined sends an empty
   * END_STREAM frame. Returns the bytes sent. `done` goes with the piece that ends the chunk, if it is sent now
   * (otherwise it stays the caller's, to pass with the rest).
   */
  sendData(stream: H2Stream, chunk: Buffer | undefined, start: number, endStream: boolean, done?: H2WriteDone): number {
    if (this.#closed) return 0;
    if (chunk === undefined) {
      this.#writeDataHeader(0, FLAG_END_STREAM, stream.id);
      return 0;
    }
    const end = chunk.length;
    const maxFrame = this.peerMaxFrameSize;
    const coalesce = stream.coalesceWrites;
    if (coalesce) this.#splicedChunks++;
    let offset = start;
    while (offset < end) {
      const size = Math.min(end - offset, maxFrame, stream.sendWindow, this.#sendWindow);
      if (size <= 0) break;
      const last = offset + size === end;
      this.#writeDataHeader(size, last && endStream ? FLAG_END_STREAM : 0, stream.id, coalesce);
      this.#write(offset === 0 && last ? chunk : chunk.subarray(offset, offset + size), last ? done : undefined, coalesce);
      stream.sendWindow -= size;
      this.#sendWindow -= size;
      offset += size;
    }
    return offset - start;
  }

  /**
   * Sends `pieces` (`bytes` in all, more than zero) as one DATA frame without END_STREAM, the pieces as its payload,
   * if the windows and the peer's frame size allow all of it now; false (nothing sent) otherwise.
   */
  sendDataPieces(stream: H2Stream, pieces: readonly Buffer[], bytes: number): boolean {
    if (this.#closed) return true;
    if (bytes > this.peerMaxFrameSize || bytes > stream.sendWindow || bytes > this.#sendWindow) return false;
    this.#writeDataHeader(bytes, 0, stream.id);
    for (let index = 0; index < pieces.length; index++) this.#write(pieces[index]!);
    stream.sendWindow -= bytes;
    this.#sendWindow -= bytes;
    return true;
  }

  /**
   * Bytes written on this connection and not yet handed to the socket's handle: the socket's own queue, and what
   * waits here (behind a direct write in flight, or for the end of the tick). Outside a tick, above zero means backed up.
   */
  get unsentBytes(): number {
    return this.socket.writableLength + this.#outBytes;
  }

  /** True while the socket's queue is below its high-water mark. */
  socketHasRoom(): boolean {
    return this.socket.writableLength + this.#outBytes < SOCKET_HIGH_WATER_BYTES;
  }

  waitForDrain(stream: H2Stream): void {
    this.#drainWaiters.add(stream);
  }

  blockedOnWindow(stream: H2Stream): void {
    this.#blocked.add(stream);
  }

  /** Sends the stream's credit back to the peer once half its window is consumed (and it is not paused). */
  creditStream(stream: H2Stream): void {
    const owed = stream.receivedUncredited;
    // No handler yet (a server still deciding): what arrives waits on the stream, so no credit until it is taken.
    if (stream.readingPaused || stream.handler === undefined || stream.closed || stream.remoteEnded || owed < this.#streamWindow / 2) return;
    stream.receivedUncredited = 0;
    stream.receiveWindow += owed;
    this.#write(windowUpdateFrame(stream.id, owed));
  }

  resetStream(stream: H2Stream, code: number): void {
    if (stream.closed) return;
    this.#write(rstStreamFrame(stream.id, code));
    this.#closeStream(stream, code, false);
  }

  sendResponse(stream: H2Stream, status: number, headers: readonly string[], endStream: boolean): void {
    this.#sendFields(stream.id, headers, status, endStream);
    if (endStream) {
      stream.localEnded = true;
      this.maybeCloseStream(stream);
    }
  }

  /** Sends `trailers` as a HEADERS block with END_STREAM (the stream's data already sent). */
  sendTrailers(stream: H2Stream, trailers: readonly string[]): void {
    this.#sendFields(stream.id, trailers, undefined, true);
    this.maybeCloseStream(stream);
  }

  maybeCloseStream(stream: H2Stream): void {
    if (stream.localEnded && !stream.endQueued && stream.remoteEnded && !stream.closed) this.#closeStream(stream, undefined, false);
  }

  /**
   * The check phase's flush of the spliced DATA a poll phase's reads gathered (#gathering): after a run of phases
   * that each brought one read, the next reads flush at their read's end instead.
   */
  flushCheckPhase(): void {
    if (this.#flushAtCheckOnly) {
      this.stats.checkPhaseFlushes++;
      if (this.#splicedChunks > 1) this.#lonePhases = 0;
      else if (++this.#lonePhases >= LONE_PHASES_TO_FLUSH_AT_READ_END) {
        this.#lonePhases = 0;
        this.#gatherUntilCheck = false;
      }
    }
    this.flush();
  }

  /** Writes what this tick gathered (called at the end of the tick, and before the socket is ended). */
  flush(): void {
    this.#flushAtCheckOnly = false;
    const splicedChunks = this.#splicedChunks;
    this.#splicedChunks = 0;
    if (this.#runStart >= 0) this.#closeRun();
    const out = this.#out;
    if (out.length === 0) return;
    const socket = this.socket;
    if (socket.destroyed || socket.writableEnded) {
      // Dropped unsent, H2WriteDones not called: nothing written after this on this connection is sent either.
      emptyList(out);
      emptyList(this.#outDone);
      emptyList(this.#outHeaders);
      this.#outDoneCount = 0;
      this.#outBytes = 0;
      return;
    }
    // An idle TLS socket (nothing queued or in flight, not corked) hands a write straight to TLSWrap, which
    // encrypts it before `write` returns: the gathered frames go out as one copy in the shared send buffer.
    // A busy one would queue the buffer itself, so the frames go as they are.
    if (socket instanceof H2StreamTransport) {
      this.#writeNested(socket);
      return;
    }
    const direct = this.#direct;
    if (direct !== undefined) {
      // One write in flight: the rest waits in `#out` for its completion (#onDirectWritten flushes again).
      if (direct.busy) {
        this.#gatherAgainIfTogether(splicedChunks);
        return;
      }
      if (direct.ready()) {
        this.#writeDirect(direct);
        return;
      }
    }
    if (socket.writableLength > 0) this.#gatherAgainIfTogether(splicedChunks);
    if (this.#copyingWrites && this.#outBytes <= SEND_BUFFER_BYTES && socket.writableLength === 0 && !socket.writableCorked && !(socket as TLSSocket).connecting) {
      this.#writeCopied(socket);
      return;
    }
    this.#writeGathered(socket);
  }

  /**
   * A read's end flushes spliced DATA (`splicedChunks` reads of it) while the socket still has a write in flight: most
   * likely an earlier read's of this same poll phase (a TLS write completes from the check phase), so the reads come
   * together again: gather them until the check phase (#gathering), one TLS write for what a phase reads.
   */
  #gatherAgainIfTogether(splicedChunks: number): void {
    if (splicedChunks > 0 && !this.#gatherUntilCheck && coalesceSplicedData && inReadTurn()) this.#gatherUntilCheck = true;
  }

  /** Nested in an outer stream: the gathered frames become that stream's DATA, as they are (stream-transport.ts). */
  #writeNested(transport: H2StreamTransport): void {
    this.#materializeHeaders();
    transport.writePieces(this.#out, this.#outDone, this.#outDoneCount, this.#outBytes);
    emptyList(this.#out);
    emptyList(this.#outDone);
    this.#outDoneCount = 0;
    this.#outBytes = 0;
    if (this.#drainWaiters.size > 0) this.#notifyDrained();
  }

  /** Copies the gathered frames into the shared send buffer and writes them as one buffer (idle TLS sockets only). */
  #writeCopied(socket: Duplex): void {
    const out = this.#out;
    const bytes = this.#outBytes;
    this.#outBytes = 0;
    if (out.length === 1) {
      this.#materializeHeaders();
      socket.write(out[0]!);
    } else {
      socket.write(gatheredIntoSendBuffer(out, bytes, this.#outHeaders));
    }
    // TLSWrap encrypted (or copied) the bytes before `write` returned: the pieces are free.
    this.#clearOut();
    if (this.#drainWaiters.size > 0) this.#notifyDrained();
  }

  /**
   * Writes the gathered frames to the TLS handle: one piece as it is, several copied into the shared send buffer
   * (a single buffer OpenSSL encrypts in place; a writev's pieces TLSWrap would copy into a fresh allocation first),
   * more than that buffer holds as one writev. TLSWrap has encrypted (or copied) the bytes when the call returns, so
   * the pieces are free at once, as in #writeCopied; the write itself completes later (#onDirectWritten).
   */
  #writeDirect(direct: DirectWriter): void {
    const out = this.#out;
    const bytes = this.#outBytes;
    this.#outBytes = 0;
    let result;
    if (out.length === 1) {
      this.#materializeHeaders();
      result = direct.write(out[0]!);
    } else if (bytes <= SEND_BUFFER_BYTES) {
      result = direct.write(gatheredIntoSendBuffer(out, bytes, this.#outHeaders));
    } else {
      this.#materializeHeaders();
      result = direct.writev(out.slice());
    }
    if (result === WRITE_FAILED) {
      // The socket is being destroyed with the error ('error', then 'close' tear the connection down): as a write
      // to a destroyed socket, the pieces are dropped and their H2WriteDones not called.
      emptyList(out);
      emptyList(this.#outDone);
      emptyList(this.#outHeaders);
      this.#outDoneCount = 0;
      return;
    }
    this.#clearOut();
    if (this.#drainWaiters.size > 0) this.#notifyDrained();
  }

  // The direct write in flight has completed: what was gathered meanwhile goes now, then a deferred end.
  readonly #onDirectWritten = (error: Error | undefined): void => {
    if (error !== undefined) return;
    if (this.#out.length > 0) this.flush();
    const socket = this.socket;
    if (this.#endAfterWrite && !this.#direct!.busy && !socket.destroyed) {
      this.#endAfterWrite = false;
      socket.end();
    }
    if (this.#drainWaiters.size > 0) this.#notifyDrained();
  };

  /** Writes the gathered frames as they are: one buffer, a small concatenation, or a corked writev. */
  #writeGathered(socket: Duplex): void {
    this.#materializeHeaders();
    const out = this.#out;
    const bytes = this.#outBytes;
    this.#outBytes = 0;
    // A concatenation would free its pieces at once, but a piece's H2WriteDone must not run before those of the
    // pieces still queued in the socket ahead of it (the caller's pool hands buffers back oldest first): pieces
    // with one go to the socket as they are.
    if (bytes <= CONCAT_MAX_BYTES && out.length > 1 && this.#outDoneCount === 0) {
      socket.write(Buffer.concat(out, bytes));
      this.#clearOut();
    } else {
      // One piece, or large payloads as one corked writev of the pieces (a concat here would copy every payload
      // once more). A piece is the socket's until its write completes: its H2WriteDone is that write's callback.
      const dones = this.#outDone;
      if (out.length > 1) socket.cork();
      for (let index = 0; index < out.length; index++) socket.write(out[index]!, dones[index]);
      if (out.length > 1) socket.uncork();
      emptyList(out);
      emptyList(dones);
      this.#outDoneCount = 0;
    }
    // A write the kernel took at once emits no 'drain' (Node 24): streams held back by our own queue hear it here.
    if (this.#drainWaiters.size > 0) this.#notifyDrained();
  }

  // ---- Writing ----

  /**
   * Gathers `buffer` for the flush; false when it was dropped (the socket is gone or ended). `coalesce` (a splice's
   * DATA, H2Stream.coalesceWrites): inside a read callback the flush waits for the loop's check phase, right after
   * the poll phase's other I/O callbacks, so that what the phase's reads brought for this connection leaves in one
   * TLS write and one record. Measured in the mesh (session s14, BENCHMARKS.md): the load's requests come in pairs,
   * and one wake-up of an agent read two requests (or two answers) in more than half of its wake-ups; with a flush
   * at each read's end they left as two TLS writes, the second behind the first's completion (the check phase and a
   * JavaScript callback), and the peer agent read two records, a callback each.
   */
  #write(buffer: Buffer, done?: H2WriteDone, coalesce = false): boolean {
    if (!this.#gathering(coalesce, buffer.length)) return false;
    if (this.#runStart >= 0) this.#closeRun();
    this.#push(buffer, done);
    return true;
  }

  #push(buffer: Buffer, done: H2WriteDone | undefined): void {
    this.#out.push(buffer);
    this.#outDone.push(done);
    if (done !== undefined) this.#outDoneCount++;
    this.#outBytes += buffer.length;
  }

  /**
   * Before something (`bytes` long; `coalesce` as for #write) is gathered: false when it is to be dropped (the socket
   * is gone or ended); the first thing gathered since the last flush schedules the next.
   */
  #gathering(coalesce = false, bytes = 0): boolean {
    if (this.#out.length === 0 && this.#runStart < 0) {
      // Dropped: a done is not called (H2WriteDone), the closing stream's chunks are the last it was given.
      if (this.socket.destroyed || this.socket.writableEnded) return false;
      if (coalesce && this.#gatherUntilCheck && !this.#nested && inReadTurn()) {
        this.#flushAtCheckOnly = true;
        deferToCheckPhase(flushCheckPhase, this);
        return true;
      }
      // Nested in an outer stream: inside a read callback, at its end (the outer connection's flush of it runs right
      // after, in the same turn: a proxied call's request or answer, head, body and trailers written in the read that
      // brought it, goes out before the loop serves its next I/O callback; session s13). Outside one (a timer, a
      // promise job, a tick), gathered for the whole loop turn (the check phase, after every I/O callback of the
      // poll phase and their ticks and promise jobs), so frames a proxy writes from different ticks reach the outer
      // connection together and leave in one TLS write.
      if (this.#nested && !inReadTurn()) deferToCheckPhase(flushConnection, this);
      else deferToTurnEnd(flushConnection, this);
    } else if (this.#flushAtCheckOnly && (!coalesce || this.#outBytes + bytes > COALESCE_MAX_BYTES)) {
      // A control frame, or bulk: everything gathered goes at the read's end after all (the check phase's flush
      // then finds nothing).
      this.#flushAtCheckOnly = false;
      deferToTurnEnd(flushConnection, this);
    }
    return true;
  }

  /** Nested: the open run of slab bytes becomes one piece of `#out`. */
  #closeRun(): void {
    const start = this.#runStart;
    this.#runStart = -1;
    this.#out.push(this.#slab.subarray(start, this.#slabOffset));
    this.#outDone.push(undefined);
  }

  /** Nested: `slab[start, end)`, written at the slab's end, joins the open run (or opens one). */
  #extendRun(start: number, end: number): void {
    if (this.#runStart < 0) this.#runStart = start;
    this.#outBytes += end - start;
  }

  /** Room for `bytes` at the slab's end: a new slab when the current one is full (an open run is closed first: it lives there). */
  #slabRoom(bytes: number): void {
    if (this.#slabOffset + bytes <= this.#slab.length) return;
    if (this.#runStart >= 0) this.#closeRun();
    this.#slab = Buffer.allocUnsafeSlow(HEADER_SLAB_BYTES);
    this.#slabOffset = 0;
  }

  /** A DATA frame's header, gathered as numbers (DATA_HEADER_PLACEHOLDER); nested, written into the run. */
  #writeDataHeader(length: number, flags: number, streamId: number, coalesce = false): void {
    if (this.#nested) {
      if (!this.#gathering()) return;
      this.#slabRoom(FRAME_HEADER_BYTES);
      const start = this.#slabOffset;
      writeFrameHeader(this.#slab, start, length, FRAME_DATA, flags, streamId);
      this.#slabOffset = start + FRAME_HEADER_BYTES;
      this.#extendRun(start, this.#slabOffset);
      return;
    }
    if (this.#write(DATA_HEADER_PLACEHOLDER, undefined, coalesce)) this.#outHeaders.push(length, (FRAME_DATA << 8) | flags, streamId);
  }

  /** Before the gathered pieces are written as they are: each DATA header placeholder becomes a view of a slab. */
  #materializeHeaders(): void {
    const headers = this.#outHeaders;
    if (headers.length === 0) return;
    const out = this.#out;
    let header = 0;
    for (let index = 0; index < out.length; index++) {
      if (out[index] !== DATA_HEADER_PLACEHOLDER) continue;
      const typeAndFlags = headers[header + 1]!;
      out[index] = this.#frameHeader(headers[header]!, typeAndFlags >>> 8, typeAndFlags & 0xff, headers[header + 2]!);
      header += 3;
    }
    emptyList(headers);
  }

  /** Calls the gathered pieces' H2WriteDones (their bytes were copied or encrypted) and empties the gathered list. */
  #clearOut(): void {
    if (this.#outDoneCount > 0) {
      const dones = this.#outDone;
      for (let index = 0; index < dones.length; index++) dones[index]?.();
      this.#outDoneCount = 0;
    }
    emptyList(this.#out);
    emptyList(this.#outDone);
    emptyList(this.#outHeaders);
  }

  #frameHeader(length: number, type: number, flags: number, streamId: number): Buffer {
    // An open run ends here (its bytes end at the slab's end, where this header goes).
    if (this.#runStart >= 0) this.#closeRun();
    this.#slabRoom(FRAME_HEADER_BYTES);
    const offset = this.#slabOffset;
    this.#slabOffset += FRAME_HEADER_BYTES;
    writeFrameHeader(this.#slab, offset, length, type, flags, streamId);
    return this.#slab.subarray(offset, offset + FRAME_HEADER_BYTES);
  }

  /**
   * A header list (and `:status`) as HEADERS: encoded straight into the frame-header slab after its frame header, one
   * piece for the frame (no block Buffer and no second view per head); a block that may not fit one frame or the slab
   * goes the general way (#sendHeaderBlock).
   */
  #sendFields(streamId: number, fields: readonly string[], status: number | undefined, endStream: boolean): void {
    const bound = this.#encoder.sizeBound(fields, status);
    if (bound > this.peerMaxFrameSize || FRAME_HEADER_BYTES + bound > HEADER_SLAB_BYTES) {
      this.#sendHeaderBlock(streamId, this.#encoder.encode(fields, status), endStream);
      return;
    }
    // Nested: nothing to write to (the block is still encoded: the encoder keeps no state).
    if (this.#nested && !this.#gathering()) return;
    this.#slabRoom(FRAME_HEADER_BYTES + bound);
    const slab = this.#slab;
    const start = this.#slabOffset;
    const end = this.#encoder.encodeInto(slab, start + FRAME_HEADER_BYTES, fields, status);
    this.#slabOffset = end;
    writeFrameHeader(slab, start, end - start - FRAME_HEADER_BYTES, FRAME_HEADERS, FLAG_END_HEADERS | (endStream ? FLAG_END_STREAM : 0), streamId);
    if (this.#nested) this.#extendRun(start, end);
    else this.#write(slab.subarray(start, end));
  }

  /** HEADERS (+ CONTINUATION when the block is larger than the peer's frame size). */
  #sendHeaderBlock(streamId: number, block: Buffer, endStream: boolean): void {
    const maxFrame = this.peerMaxFrameSize;
    let offset = Math.min(block.length, maxFrame);
    const flags = (endStream ? FLAG_END_STREAM : 0) | (offset === block.length ? FLAG_END_HEADERS : 0);
    this.#write(this.#frameHeader(offset, FRAME_HEADERS, flags, streamId));
    this.#write(block.subarray(0, offset));
    while (offset < block.length) {
      const size = Math.min(block.length - offset, maxFrame);
      this.#write(this.#frameHeader(size, FRAME_CONTINUATION, offset + size === block.length ? FLAG_END_HEADERS : 0, streamId));
      this.#write(block.subarray(offset, offset + size));
      offset += size;
    }
  }

  #sendGoaway(code: number, debug: string): void {
    if (this.#goawaySent && code === H2_NO_ERROR) return;
    this.#goawaySent = true;
    this.#write(goawayFrame(this.#highestPeerStreamId, code, debug.slice(0, 200)));
  }

  /** A reply the peer asked for (PING ACK, SETTINGS ACK): refused once the peer stops reading them. */
  #writeReply(frame: Buffer): void {
    if (this.socket.writableLength + this.#outBytes > CONTROL_FLOOD_SOCKET_BYTES) {
      throw connectionError(H2_ENHANCE_YOUR_CALM, 'the peer asks for replies (PING, SETTINGS) faster than it reads them');
    }
    this.#write(frame);
  }

  // ---- Sending what waits for window ----

  /** Sends what `stream` has queued, as far as the windows allow. */
  #flushStream(stream: H2Stream): void {
    const pending = stream.pending;
    while (pending.length > 0) {
      const chunk = pending[0]!;
      const lastChunk = pending.length === 1;
      const trailers = stream.trailersQueued;
      const sent = this.sendData(stream, chunk, stream.pendingOffset, stream.endQueued && lastChunk && trailers === undefined, stream.pendingDone[0]);
      stream.pendingOffset += sent;
      stream.pendingBytes -= sent;
      if (stream.pendingOffset < chunk.length) return;
      pending.shift();
      stream.pendingDone.shift();
      stream.pendingOffset = 0;
      if (lastChunk && stream.endQueued) {
        stream.endQueued = false;
        this.#blocked.delete(stream);
        if (trailers !== undefined) {
          stream.trailersQueued = undefined;
          this.sendTrailers(stream, trailers);
          return;
        }
        this.maybeCloseStream(stream);
        return;
      }
    }
    this.#blocked.delete(stream);
  }

  #flushBlocked(): void {
    for (const stream of this.#blocked) {
      if (this.#sendWindow <= 0) break;
      this.#flushStream(stream);
    }
    this.#notifyDrained();
  }

  #notifyDrained(): void {
    if (this.#drainWaiters.size === 0 || !this.socketHasRoom()) return;
    for (const stream of this.#drainWaiters) {
      if (stream.pendingBytes >= STREAM_WRITE_HIGH_WATER_BYTES) continue;
      this.#drainWaiters.delete(stream);
      stream.wantsDrain = false;
      stream.handler?.onDrain(stream);
    }
  }

  // ---- Socket events ----

  readonly #onSocketData = (chunk: Buffer): void => {
    this.#receive(chunk, chunk.length);
  };

  /**
   * Nested: a piece of the outer connection's pooled read, valid during this call only (the outer stream's
   * onSharedData): parsed in place, what is kept past the call copied (a DATA payload for its stream, a header block's
   * fragment), instead of a copy of the whole piece first (session s14).
   */
  readonly #onBorrowedData = (chunk: Buffer): void => {
    this.#borrowedRead = true;
    try {
      this.#receive(chunk, chunk.length);
    } finally {
      this.#borrowedRead = false;
    }
  };

  /** The peer's bytes `chunk[0, bytes)`. */
  #receive(chunk: Buffer, bytes: number): void {
    if (this.#closed) return;
    try {
      let start = 0;
      if (this.#prefaceLeft > 0) {
        const take = Math.min(this.#prefaceLeft, bytes);
        const at = CLIENT_PREFACE.length - this.#prefaceLeft;
        if (chunk.compare(CLIENT_PREFACE, at, at + take, 0, take) !== 0) {
          throw connectionError(H2_PROTOCOL_ERROR, 'the client did not start with the HTTP/2 connection preface');
        }
        this.#prefaceLeft -= take;
        if (take === bytes) return;
        start = take;
      }
      this.#reader.push(chunk, start, bytes);
    } catch (error) {
      this.#fail(error);
    }
  }

  readonly #onSocketDrain = (): void => {
    this.#notifyDrained();
  };

  readonly #onSocketEnd = (): void => {
    if (this.#closed) return;
    const open = this.#streams.size;
    this.#teardown(open > 0 || !this.#goawayReceived ? new H2Error('H2_CONNECTION_CLOSED', H2_CANCEL, `the peer closed the connection with ${open} stream(s) open`) : undefined);
  };

  readonly #onSocketError = (error: Error): void => {
    if (this.#closed) return;
    this.#teardown(new H2Error('H2_CONNECTION_CLOSED', H2_CANCEL, `the connection failed: ${error.message}`));
  };

  readonly #onSocketClose = (): void => {
    if (this.#closed) return;
    this.#teardown(this.#streams.size > 0 ? new H2Error('H2_CONNECTION_CLOSED', H2_CANCEL, 'the connection closed') : undefined);
  };

  /** Something thrown while handling the peer's bytes: a connection error (GOAWAY) or our bug (INTERNAL_ERROR). */
  #fail(thrown: unknown): void {
    const error = isH2Error(thrown) ? thrown : new H2Error('H2_PEER_PROTOCOL', H2_INTERNAL_ERROR, `internal error: ${(thrown as Error)?.message ?? String(thrown)}`);
    this.#reader.stop();
    this.#sendGoaway(error.wireCode, error.message);
    this.#teardown(error);
  }

  #teardown(error: H2Error | undefined): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#error ??= error;
    this.#reader.stop();
    clearInterval(this.#keepaliveTimer);
    clearTimeout(this.#pingTimer);
    for (const stream of [...this.#streams.values()]) this.#closeStream(stream, H2_CANCEL, false);
    const socket = this.socket;
    this.flush();
    if (!socket.destroyed) {
      // Behind a direct write in flight the end waits for its completion (no shutdown while TLSWrap writes).
      if (this.#direct?.busy) this.#endAfterWrite = true;
      else socket.end();
      setTimeout(destroySocket, CLOSE_FLUSH_MS, socket).unref();
    }
    if (this.#error && this.listenerCount('error') > 0) this.emit('error', this.#error);
    this.emit('close');
  }

  // ---- Receiving (FrameReceiver) ----

  onDataStart(streamId: number, flags: number, length: number): void {
    this.#expectNoHeaderBlock(FRAME_DATA);
    if (!this.remoteSettingsReceived) throw connectionError(H2_PROTOCOL_ERROR, 'DATA before SETTINGS');
    if (length > this.#receiveWindow) {
      throw connectionError(H2_FLOW_CONTROL_ERROR, `DATA of ${length} bytes with ${this.#receiveWindow} left in the connection window`);
    }
    this.#receiveWindow -= length;
    if (length === 0 && !(flags & FLAG_END_STREAM)) {
      if (++this.#emptyDataFrames > MAX_EMPTY_DATA_FRAMES_IN_A_ROW) throw connectionError(H2_ENHANCE_YOUR_CALM, `more than ${MAX_EMPTY_DATA_FRAMES_IN_A_ROW} empty DATA frames in a row`);
    } else {
      this.#emptyDataFrames = 0;
    }
    this.#dataLength = length;
    this.#dataEndStream = (flags & FLAG_END_STREAM) !== 0;
    this.#dataStream = undefined;
    const stream = this.#streams.get(streamId);
    if (stream === undefined) {
      if (this.#isIdle(streamId)) throw connectionError(H2_PROTOCOL_ERROR, `DATA on stream ${streamId}, which was never opened`);
      return; // A stream we closed: frames in flight are dropped (and their bytes credited to the connection).
    }
    if (stream.remoteEnded) {
      this.#streamFault(stream, H2_STREAM_CLOSED, 'DATA after END_STREAM');
      return;
    }
    if (this.role === 'client' && stream.responseHeaders === undefined) {
      this.#streamFault(stream, H2_PROTOCOL_ERROR, 'DATA before the response headers');
      return;
    }
    if (length > stream.receiveWindow) {
      this.#streamFault(stream, H2_FLOW_CONTROL_ERROR, `DATA of ${length} bytes with ${stream.receiveWindow} left in the stream window`);
      return;
    }
    stream.receiveWindow -= length;
    this.#dataStream = stream;
  }

  onData(chunk: Buffer, start: number, end: number): void {
    const stream = this.#dataStream;
    if (stream === undefined || stream.closed) return;
    const shared = this.#readBuffer;
    if (shared !== undefined) {
      stream.deliverData(shared.piece(start, end), shared);
    } else if (this.#borrowedRead) {
      // The stream's handler keeps its data: a copy of the payload alone (one buffer, no view of the piece).
      const copy = Buffer.allocUnsafe(end - start);
      chunk.copy(copy, 0, start, end);
      stream.deliverData(copy, undefined);
    } else {
      stream.deliverData(chunk.subarray(start, end), undefined);
    }
  }

  onDataEnd(): void {
    const stream = this.#dataStream;
    const length = this.#dataLength;
    this.#dataStream = undefined;
    this.#receivedUncredited += length;
    if (this.#receivedUncredited >= this.#connectionWindow / 2) {
      this.#write(windowUpdateFrame(0, this.#receivedUncredited));
      this.#receiveWindow += this.#receivedUncredited;
      this.#receivedUncredited = 0;
    }
    if (stream === undefined || stream.closed) return;
    stream.receivedUncredited += length;
    if (this.#dataEndStream) {
      stream.deliverEnd();
      this.maybeCloseStream(stream);
    } else {
      this.creditStream(stream);
    }
  }

  onFrame(type: number, flags: number, streamId: number, chunk: Buffer, start: number, end: number): void {
    if (type !== FRAME_CONTINUATION) this.#expectNoHeaderBlock(type);
    if (!this.remoteSettingsReceived && (type !== FRAME_SETTINGS || flags & FLAG_ACK)) {
      throw connectionError(H2_PROTOCOL_ERROR, `the peer's first frame was type ${type}, not SETTINGS`);
    }
    switch (type) {
      case FRAME_HEADERS:
        this.#onHeaders(flags, streamId, chunk, start, end);
        return;
      case FRAME_CONTINUATION:
        this.#onContinuation(flags, streamId, chunk, start, end);
        return;
      case FRAME_SETTINGS:
        if (!(flags & FLAG_ACK)) this.#onSettings(chunk, start, end);
        return;
      case FRAME_WINDOW_UPDATE:
        this.#onWindowUpdate(streamId, chunk.readUInt32BE(start) & 0x7fffffff);
        return;
      case FRAME_RST_STREAM:
        this.#onRstStream(streamId, chunk.readUInt32BE(start));
        return;
      case FRAME_PING:
        this.#onPing(flags, chunk, start);
        return;
      case FRAME_GOAWAY:
        this.#onGoaway(chunk.readUInt32BE(start) & 0x7fffffff, chunk.readUInt32BE(start + 4), chunk.toString('utf8', start + 8, Math.min(end, start + 8 + 256)));
        return;
      case FRAME_PUSH_PROMISE:
        throw connectionError(H2_PROTOCOL_ERROR, 'PUSH_PROMISE although we disabled push');
      case FRAME_PRIORITY:
      default:
        // PRIORITY is advisory and HBONE has no use for it; unknown types are ignored (RFC 9113 4.1, 5.5).
        return;
    }
  }

  #expectNoHeaderBlock(type: number): void {
    if (this.#headerBlock !== undefined) {
      throw connectionError(H2_PROTOCOL_ERROR, `frame type ${type} in the middle of stream ${this.#headerBlock.streamId}'s header block`);
    }
  }

  /** True for a stream id that was never opened (by either side). */
  #isIdle(streamId: number): boolean {
    const peerInitiated = (streamId & 1) === (this.role === 'server' ? 1 : 0);
    return peerInitiated ? streamId > this.#highestPeerStreamId : streamId >= this.#nextStreamId;
  }

  /** A stream error caused by the peer: RST_STREAM `code`, and the event for logs and tests. */
  #streamFault(stream: H2Stream, code: number, why: string): void {
    this.resetStream(stream, code);
    if (this.listenerCount('streamError') > 0) this.emit('streamError', streamError(stream.id, code, why));
  }

  #closeStream(stream: H2Stream, rstCode: number | undefined, byPeer: boolean): void {
    this.#streams.delete(stream.id);
    this.#blocked.delete(stream);
    this.#drainWaiters.delete(stream);
    stream.deliverClose(rstCode, byPeer);
    this.onStreamClosed?.(stream);
    if (this.#streams.size === 0 && (this.#goawaySent || this.#goawayReceived) && !this.#closed) this.#teardown(undefined);
  }

  #onHeaders(flags: number, streamId: number, chunk: Buffer, start: number, end: number): void {
    if (flags & FLAG_PRIORITY) {
      if (end - start < 5) throw connectionError(H2_FRAME_SIZE_ERROR, 'HEADERS with the PRIORITY flag and no room for it');
      start += 5;
    }
    const endStream = (flags & FLAG_END_STREAM) !== 0;
    if (flags & FLAG_END_HEADERS) {
      this.#onHeaderBlock(streamId, endStream, chunk, start, end);
      return;
    }
    this.#headerBlock = { streamId, endStream, fragments: [this.#keptPiece(chunk, start, end)], bytes: end - start, frames: 0 };
    this.#checkHeaderBlockSize(this.#headerBlock);
  }

  #onContinuation(flags: number, streamId: number, chunk: Buffer, start: number, end: number): void {
    const block = this.#headerBlock;
    if (block === undefined || block.streamId !== streamId) throw connectionError(H2_PROTOCOL_ERROR, `CONTINUATION on stream ${streamId} without HEADERS before it`);
    block.fragments.push(this.#keptPiece(chunk, start, end));
    block.bytes += end - start;
    block.frames++;
    this.#checkHeaderBlockSize(block);
    if (!(flags & FLAG_END_HEADERS)) return;
    this.#headerBlock = undefined;
    const whole = Buffer.concat(block.fragments, block.bytes);
    this.#onHeaderBlock(streamId, block.endStream, whole, 0, whole.length);
  }

  /** `chunk[start, end)` to keep past this read: a copy when it may live in a pooled read buffer. */
  #keptPiece(chunk: Buffer, start: number, end: number): Buffer {
    const piece = chunk.subarray(start, end);
    return this.#readBuffer === undefined && !this.#borrowedRead ? piece : Buffer.from(piece);
  }

  #checkHeaderBlockSize(block: HeaderBlockInProgress): void {
    if (block.bytes > this.#maxHeaderListBytes) {
      throw connectionError(H2_ENHANCE_YOUR_CALM, `header block on stream ${block.streamId} over ${this.#maxHeaderListBytes} bytes`);
    }
    if (block.frames > this.#maxContinuationFrames) {
      throw connectionError(H2_ENHANCE_YOUR_CALM, `header block on stream ${block.streamId} in more than ${this.#maxContinuationFrames} CONTINUATION frames`);
    }
  }

  #onHeaderBlock(streamId: number, endStream: boolean, block: Buffer, start: number, end: number): void {
    // Decoded whatever happens to the stream: the HPACK tables must stay in step with the peer's.
    const headers = this.#decoder.decode(block, start, end);
    if (this.role === 'server') this.#onRequestHeaders(streamId, headers, endStream);
    else this.#onResponseHeaders(streamId, headers, endStream);
  }

  #onRequestHeaders(streamId: number, headers: HeaderList, endStream: boolean): void {
    if ((streamId & 1) === 0) throw connectionError(H2_PROTOCOL_ERROR, `HEADERS on even stream ${streamId} from a client`);
    const existing = this.#streams.get(streamId);
    if (existing !== undefined) {
      this.#onTrailers(existing, endStream, headers);
      return;
    }
    if (streamId <= this.#highestPeerStreamId) throw connectionError(H2_STREAM_CLOSED, `HEADERS on closed stream ${streamId}`);
    this.#highestPeerStreamId = streamId;
    // After our GOAWAY, streams above its last id are ignored (RFC 9113 6.8); the peer retries them elsewhere.
    if (this.#goawaySent) return;
    const problem = requestHeadersProblem(headers);
    if (problem !== undefined) {
      this.#refuse(streamId, H2_PROTOCOL_ERROR, `malformed request: ${problem}`);
      return;
    }
    if (this.#streams.size >= this.#maxConcurrentStreams) {
      this.#refuse(streamId, H2_REFUSED_STREAM, `over our limit of ${this.#maxConcurrentStreams} concurrent streams`);
      return;
    }
    const stream = new H2Stream(this, streamId, headers, this.peerInitialWindow, this.#streamWindow);
    stream.remoteEnded = endStream;
    this.#streams.set(streamId, stream);
    this.stats.streamsOpened++;
    this.emit('stream', stream);
  }

  #onResponseHeaders(streamId: number, headers: HeaderList, endStream: boolean): void {
    if ((streamId & 1) === 0) throw connectionError(H2_PROTOCOL_ERROR, `HEADERS on stream ${streamId}, which the server may not open`);
    const stream = this.#streams.get(streamId);
    if (stream === undefined) {
      if (this.#isIdle(streamId)) throw connectionError(H2_PROTOCOL_ERROR, `HEADERS on stream ${streamId}, which was never opened`);
      return;
    }
    if (stream.responseHeaders !== undefined) {
      this.#onTrailers(stream, endStream, headers);
      return;
    }
    const status = responseStatus(headers);
    if (typeof status === 'string') {
      this.#streamFault(stream, H2_PROTOCOL_ERROR, `malformed response: ${status}`);
      return;
    }
    if (status < 200) {
      if (endStream) this.#streamFault(stream, H2_PROTOCOL_ERROR, `informational ${status} with END_STREAM`);
      return;
    }
    stream.status = status;
    stream.deliverResponse(headers, endStream);
    if (endStream && !stream.closed) {
      stream.deliverEnd();
      this.maybeCloseStream(stream);
    }
  }

  /** A second header block on a stream: trailers, which must end it (a handler with onTrailers hears them first). */
  #onTrailers(stream: H2Stream, endStream: boolean, headers: HeaderList): void {
    if (stream.remoteEnded) {
      this.#streamFault(stream, H2_STREAM_CLOSED, 'HEADERS after END_STREAM');
      return;
    }
    if (!endStream) {
      this.#streamFault(stream, H2_PROTOCOL_ERROR, 'a second header block without END_STREAM');
      return;
    }
    stream.deliverTrailers(headers);
    stream.deliverEnd();
    this.maybeCloseStream(stream);
  }

  /** Refuses a new stream with RST_STREAM; refusals count against the rapid-reset budget. */
  #refuse(streamId: number, code: number, why: string): void {
    this.stats.streamsRefused++;
    this.#write(rstStreamFrame(streamId, code));
    if (this.listenerCount('streamError') > 0) this.emit('streamError', streamError(streamId, code, why));
    this.#chargeReset();
  }

  #chargeReset(): void {
    if (this.role !== 'server') return;
    const now = performance.now();
    this.#resetTokens = Math.min(this.#resetBurst, this.#resetTokens + ((now - this.#resetRefilledAt) * this.#resetRate) / 1000);
    this.#resetRefilledAt = now;
    if (this.#resetTokens < 1) {
      throw connectionError(H2_ENHANCE_YOUR_CALM, `streams reset or refused faster than ${this.#resetRate}/s after a burst of ${this.#resetBurst} (rapid reset)`);
    }
    this.#resetTokens--;
  }

  #onSettings(chunk: Buffer, start: number, end: number): void {
    for (let offset = start; offset < end; offset += 6) {
      const identifier = chunk.readUInt16BE(offset);
      const value = chunk.readUInt32BE(offset + 2);
      switch (identifier) {
        case SETTINGS_HEADER_TABLE_SIZE:
          // Our encoder never indexes, so the peer's table size does not matter to it.
          break;
        case SETTINGS_ENABLE_PUSH:
          if (value > 1 || (this.role === 'client' && value !== 0)) throw connectionError(H2_PROTOCOL_ERROR, `SETTINGS_ENABLE_PUSH ${value}`);
          break;
        case SETTINGS_MAX_CONCURRENT_STREAMS:
          this.peerMaxConcurrentStreams = value;
          break;
        case SETTINGS_INITIAL_WINDOW_SIZE:
          this.#setPeerInitialWindow(value);
          break;
        case SETTINGS_MAX_FRAME_SIZE:
          if (value < MIN_MAX_FRAME_SIZE || value > MAX_MAX_FRAME_SIZE) throw connectionError(H2_PROTOCOL_ERROR, `SETTINGS_MAX_FRAME_SIZE ${value} out of range`);
          this.peerMaxFrameSize = value;
          break;
        case SETTINGS_MAX_HEADER_LIST_SIZE:
          this.peerMaxHeaderListBytes = value;
          break;
        default:
          // Unknown settings are ignored (RFC 9113 6.5.2).
          break;
      }
    }
    this.#writeReply(SETTINGS_ACK_FRAME);
    if (!this.remoteSettingsReceived) {
      this.remoteSettingsReceived = true;
      this.emit('remoteSettings');
    }
    this.#flushBlocked();
  }

  #setPeerInitialWindow(value: number): void {
    if (value > MAX_WINDOW) throw connectionError(H2_FLOW_CONTROL_ERROR, `SETTINGS_INITIAL_WINDOW_SIZE ${value} above 2^31-1`);
    const delta = value - this.peerInitialWindow;
    this.peerInitialWindow = value;
    for (const stream of this.#streams.values()) {
      stream.sendWindow += delta;
      if (stream.sendWindow > MAX_WINDOW) throw connectionError(H2_FLOW_CONTROL_ERROR, `SETTINGS_INITIAL_WINDOW_SIZE pushes stream ${stream.id}'s window past 2^31-1`);
    }
  }

  #onWindowUpdate(streamId: number, increment: number): void {
    if (streamId === 0) {
      if (increment === 0) throw connectionError(H2_PROTOCOL_ERROR, 'connection WINDOW_UPDATE of 0');
      this.#sendWindow += increment;
      if (this.#sendWindow > MAX_WINDOW) throw connectionError(H2_FLOW_CONTROL_ERROR, 'connection window past 2^31-1');
      this.#flushBlocked();
      return;
    }
    const stream = this.#streams.get(streamId);
    if (stream === undefined) {
      if (this.#isIdle(streamId)) throw connectionError(H2_PROTOCOL_ERROR, `WINDOW_UPDATE on stream ${streamId}, which was never opened`);
      return;
    }
    if (increment === 0) {
      this.#streamFault(stream, H2_PROTOCOL_ERROR, 'WINDOW_UPDATE of 0');
      return;
    }
    stream.sendWindow += increment;
    if (stream.sendWindow > MAX_WINDOW) {
      this.#streamFault(stream, H2_FLOW_CONTROL_ERROR, 'stream window past 2^31-1');
      return;
    }
    if (stream.pendingBytes > 0) this.#flushStream(stream);
    this.#notifyDrained();
  }

  #onRstStream(streamId: number, code: number): void {
    this.stats.resetsReceived++;
    const stream = this.#streams.get(streamId);
    if (stream === undefined) {
      if (this.#isIdle(streamId)) throw connectionError(H2_PROTOCOL_ERROR, `RST_STREAM on stream ${streamId}, which was never opened`);
      return;
    }
    this.#chargeReset();
    this.#closeStream(stream, code, true);
  }

  #onPing(flags: number, chunk: Buffer, start: number): void {
    if (!(flags & FLAG_ACK)) {
      this.#writeReply(pingFrame(chunk.subarray(start, start + 8), true));
      return;
    }
    const opaque = this.#pingOpaque;
    if (opaque === undefined || chunk.compare(opaque, 0, 8, start, start + 8) !== 0) return;
    this.#pingOpaque = undefined;
    clearTimeout(this.#pingTimer);
    this.#pingTimer = undefined;
    const onAck = this.#pingAck;
    this.#pingAck = undefined;
    onAck?.(performance.now() - this.#pingSentAt);
  }

  #onGoaway(lastStreamId: number, code: number, debug: string): void {
    this.#goawayReceived = true;
    if (code !== H2_NO_ERROR) {
      this.#error ??= new H2Error('H2_CONNECTION_CLOSED', code, `the peer ended the connection with GOAWAY ${h2ErrorName(code)}${debug ? `: ${debug}` : ''}`);
    }
    // Streams we opened above its last id were never processed: closed as refused (safe to retry elsewhere).
    for (const stream of [...this.#streams.values()]) {
      const ours = (stream.id & 1) === (this.role === 'client' ? 1 : 0);
      if (ours && stream.id > lastStreamId) this.#closeStream(stream, H2_REFUSED_STREAM, true);
    }
    this.emit('goaway', code, lastStreamId);
    if (this.#streams.size === 0) this.#teardown(undefined);
  }

  readonly #keepalive = (): void => {
    if (this.#pingOpaque !== undefined) return;
    if (!this.ping()) return;
    this.#pingTimer = setTimeout(this.#onPingTimeout, this.#keepaliveTimeoutMs).unref();
  };

  readonly #onPingTimeout = (): void => {
    this.destroy(new H2Error('H2_TIMEOUT', H2_CANCEL, `no PING ACK within ${this.#keepaliveTimeoutMs} ms: the peer or the path to it is gone`));
  };
}

function destroySocket(socket: Duplex | H2StreamTransport): void {
  socket.destroy();
}
