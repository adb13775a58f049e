/**
 * A lean HTTP/1.1 connection's bytes on a Node Duplex: node:http2's HBONE streams (AMBIT_WAYPOINT_HBONE=node), the
 * own layer's H2DuplexStream, or a TCP socket to an endpoint outside the mesh. What the codec did with the stream's
 * events before h2-stream-transport.ts, behind the same Http1Transport face.
 *
 * Owns: the listeners on the Duplex and their removal at hand-off, close and cancel for either kind (an HBONE
 * stream is reset, a socket destroyed). Must not know about: HTTP.
 */
import http2 from 'node:http2';
import type { Duplex } from 'node:stream';
import { resetLeg, type HboneLegStream } from '../hbone-leg.ts';
import type { Http1StreamReader, Http1Transport } from './transport.ts';

const { NGHTTP2_CANCEL } = http2.constants;

/** An HBONE stream (node:http2's or an H2DuplexStream) has close(code) and rstCode; a socket has neither. */
function isLegStream(stream: Duplex): stream is HboneLegStream {
  return typeof (stream as Partial<HboneLegStream>).close === 'function';
}

function ignoreError(): void {
  // The 'close' that follows an error reports it.
}

export class DuplexTransport implements Http1Transport {
  readonly stream: Duplex;
  readonly #leg: boolean;
  #reader: Http1StreamReader | undefined;
  readonly #onData = (chunk: Buffer): void => this.#reader?.onBytes(chunk, undefined);
  readonly #onEnd = (): void => this.#reader?.onPeerEnd();
  readonly #onDrain = (): void => this.#reader?.onDrained();
  readonly #onClose = (): void => this.#reader?.onClosed();
  readonly #onTimeout = (): void => this.#reader?.onIdle();

  constructor(stream: Duplex) {
    this.stream = stream;
    this.#leg = isLegStream(stream);
  }

  get destroyed(): boolean {
    return this.stream.destroyed;
  }

  get readableEnded(): boolean {
    return this.stream.readableEnded;
  }

  get writableEnded(): boolean {
    return this.stream.writableEnded;
  }

  get isPaused(): boolean {
    return this.stream.isPaused();
  }

  attach(reader: Http1StreamReader): void {
    this.#reader = reader;
    const stream = this.stream;
    stream.on('data', this.#onData);
    stream.once('end', this.#onEnd);
    stream.on('drain', this.#onDrain);
    stream.once('close', this.#onClose);
    stream.on('error', ignoreError);
    stream.on('timeout', this.#onTimeout);
    // A stream read before (the version sniff) was paused, and may have seen its end already (the reader checks
    // readableEnded itself once it took what the sniff read).
    if (!stream.readableEnded) stream.resume();
  }

  write(bytes: Buffer): boolean {
    return this.stream.destroyed ? true : this.stream.write(bytes);
  }

  writeText(text: string): boolean {
    return this.stream.destroyed ? true : this.stream.write(text, 'latin1');
  }

  end(): void {
    if (!this.stream.destroyed && !this.stream.writableEnded) this.stream.end();
  }

  close(): void {
    const stream = this.stream;
    if (stream.destroyed) return;
    if (this.#leg) (stream as HboneLegStream).close();
    else stream.destroy();
  }

  cancel(): void {
    const stream = this.stream;
    if (stream.destroyed) return;
    // RST_STREAM CANCEL first (a destroy alone may close node:http2's stream with NO_ERROR), then gone at once.
    if (this.#leg) resetLeg(stream as HboneLegStream, NGHTTP2_CANCEL);
    stream.destroy();
  }

  pause(): void {
    this.stream.pause();
  }

  resume(): void {
    this.stream.resume();
  }

  setIdleTimeout(ms: number): void {
    (this.stream as HboneLegStream).setTimeout(ms);
  }

  handOff(): HboneLegStream {
    const stream = this.stream;
    this.#reader = undefined;
    stream.off('data', this.#onData);
    stream.off('end', this.#onEnd);
    stream.off('drain', this.#onDrain);
    stream.off('close', this.#onClose);
    stream.off('timeout', this.#onTimeout);
    (stream as HboneLegStream).setTimeout(0);
    stream.pause();
    return stream as HboneLegStream;
  }
}
