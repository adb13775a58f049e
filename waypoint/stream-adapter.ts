/**
 * A plain Duplex over an HBONE leg's stream (hbone-leg.ts, either layer), for Node's HTTP/1.1 server. Handed an Http2Stream directly, the server's
 * parser takes over the stream's native handle and the first bytes of a response written later (after an upstream
 * answered) reach the client corrupted (seen on Node 24.21: status line garbled, "Parse Error: Expected HTTP/");
 * the adapter has no handle, so the server reads and writes through the stream API only.
 *
 * Owns: data both ways with backpressure, END_STREAM <-> end, destroy <-> reset (CANCEL).
 * Must not know about: HTTP. Hot path: one push or write per chunk, nothing allocated here.
 */
import http2 from 'node:http2';
import { Duplex } from 'node:stream';
import { resetLeg, type HboneLegStream } from './hbone-leg.ts';

const { NGHTTP2_CANCEL } = http2.constants;

/** How long a stream this side ended may wait for the peer's END_STREAM before it is closed anyway. */
export const HALF_CLOSED_LINGER_MS = 5_000;

/**
 * Ended first (a server's last words, e.g. HTTP/2's GOAWAY before it drops a bad client, or a `connection: close`
 * answer): the stream closes by itself once the peer ends too. Closing it at once sends RST_STREAM, which the
 * client's agent turns into a TCP reset that can throw away the last words unread; so the rest of the peer's data is
 * read and dropped, and only a peer that never ends is closed, after HALF_CLOSED_LINGER_MS.
 */
function lingerThenClose(stream: HboneLegStream): void {
  stream.removeAllListeners('data');
  stream.resume();
  const timer = setTimeout(() => stream.close(), HALF_CLOSED_LINGER_MS);
  timer.unref();
  stream.once('close', () => clearTimeout(timer));
}

export class Http2StreamDuplex extends Duplex {
  readonly stream: HboneLegStream;

  constructor(stream: HboneLegStream) {
    super({ allowHalfOpen: true });
    this.stream = stream;
    stream.on('data', (chunk: Buffer) => {
      if (!this.push(chunk)) stream.pause();
    });
    stream.once('end', () => this.push(null));
    stream.once('close', () => {
      if (!this.destroyed) this.destroy();
    });
    stream.on('error', () => {
      // the close that follows destroys the adapter
    });
  }

  override _read(): void {
    this.stream.resume();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    // Handed to the stream at once (its buffer and 'drain' are the back-pressure), so nothing waits in this adapter's
    // own buffer: a destroy right after end() (an HTTP/2 server dropping a bad client after its GOAWAY) loses nothing.
    if (this.stream.write(chunk)) callback();
    else this.stream.once('drain', callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.stream.end();
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (!this.stream.destroyed && !this.stream.closed) {
      if (this.stream.writableEnded) lingerThenClose(this.stream);
      else resetLeg(this.stream, NGHTTP2_CANCEL);
    }
    callback(error);
  }
}
