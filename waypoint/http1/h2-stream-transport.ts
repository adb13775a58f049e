/**
 * A lean HTTP/1.1 connection's bytes on the own HTTP/2 layer's H2Stream, read and written directly: this object is
 * the stream's handler (as the agent's splice is, shared/hbone/h2/splice.ts), so a chunk goes from the layer's DATA
 * handler to the codec in one call, as a view of the connection's pooled TLS read buffer (no copy, no Readable,
 * no event), and a write goes straight to the stream's frame writer.
 *
 * Owns: the mapping of the H2Stream's handler calls and methods onto Http1Transport, and the idle timer (one timer
 * per stream and a counter of chunks moved, as h2/duplex.ts's setTimeout). Must not know about: HTTP.
 * Hot path: nothing allocated per chunk; a text write makes its one buffer.
 */
import { H2DuplexStream } from '../../shared/hbone/h2/duplex.ts';
import { H2_CANCEL, H2_NO_ERROR } from '../../shared/hbone/h2/errors.ts';
import type { H2Stream, H2StreamHandler } from '../../shared/hbone/h2/stream.ts';
import type { SharedReadBuffer } from '../../shared/hbone/pooled-reads.ts';
import type { HboneLegStream } from '../hbone-leg.ts';
import type { Http1StreamReader, Http1Transport } from './transport.ts';

function idleTimerFired(transport: H2StreamTransport): void {
  transport.idleTimerFired();
}

export class H2StreamTransport implements Http1Transport, H2StreamHandler {
  readonly stream: H2Stream;
  private reader: Http1StreamReader | undefined;
  private handedOff = false;
  private idleMs = 0;
  private timer: NodeJS.Timeout | undefined;
  /** Chunks moved either way; the idle timer re-arms when it changed since the timer was armed. */
  private activity = 0;
  private activityAtArm = 0;

  constructor(stream: H2Stream) {
    this.stream = stream;
  }

  get destroyed(): boolean {
    return this.stream.closed;
  }

  get readableEnded(): boolean {
    return this.stream.remoteEnded;
  }

  get writableEnded(): boolean {
    return this.stream.localEnded;
  }

  get isPaused(): boolean {
    return this.stream.readingPaused;
  }

  /**
   * Delivers to `reader` from now on. The first attach makes this the stream's handler, which replays what arrived
   * before (data, end, close) and credits the stream; a later one (the sniff's reader giving way to the codec) only
   * changes who is called.
   */
  attach(reader: Http1StreamReader): void {
    this.reader = reader;
    if (this.stream.handler !== this) this.stream.setHandler(this);
  }

  write(bytes: Buffer): boolean {
    this.activity++;
    return this.stream.write(bytes);
  }

  writeText(text: string): boolean {
    this.activity++;
    return this.stream.write(Buffer.from(text, 'latin1'));
  }

  end(): void {
    this.stream.end();
  }

  close(): void {
    this.stopTimer();
    this.stream.reset(H2_NO_ERROR);
  }

  cancel(): void {
    this.stopTimer();
    const stream = this.stream;
    // Both sides ended (END_STREAM maybe still queued behind data): a clean end, not a reset.
    if (!stream.closed && !(stream.localEnded && stream.remoteEnded)) stream.reset(H2_CANCEL);
  }

  pause(): void {
    this.stream.pauseReading();
  }

  resume(): void {
    if (this.stream.readingPaused) this.stream.resumeReading();
  }

  setIdleTimeout(ms: number): void {
    this.idleMs = ms;
    this.stopTimer();
    if (ms > 0 && !this.stream.closed) this.armTimer();
  }

  handOff(): HboneLegStream {
    this.handedOff = true;
    this.reader = undefined;
    this.stopTimer();
    // The Duplex becomes the stream's handler (replaying an END_STREAM already seen); its reads resume the credit.
    return new H2DuplexStream(this.stream);
  }

  private armTimer(): void {
    this.activityAtArm = this.activity;
    this.timer = setTimeout(idleTimerFired, this.idleMs, this);
    this.timer.unref();
  }

  private stopTimer(): void {
    if (this.timer === undefined) return;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** The idle timer's callback (module function, no closure per stream). */
  idleTimerFired(): void {
    this.timer = undefined;
    if (this.idleMs === 0 || this.stream.closed || this.handedOff) return;
    if (this.activity !== this.activityAtArm) this.armTimer();
    else this.reader?.onIdle();
  }

  // H2StreamHandler: the layer's calls.

  onData(_stream: H2Stream, chunk: Buffer): void {
    this.activity++;
    this.reader?.onBytes(chunk, undefined);
  }

  onSharedData(_stream: H2Stream, chunk: Buffer, shared: SharedReadBuffer): void {
    this.activity++;
    this.reader?.onBytes(chunk, shared);
  }

  onEnd(): void {
    this.reader?.onPeerEnd();
  }

  onDrain(): void {
    this.reader?.onDrained();
  }

  onClose(): void {
    this.stopTimer();
    this.reader?.onClosed();
  }
}
