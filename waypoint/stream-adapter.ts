/**
 * A plain Duplex over an HTTP/2 stream, for Node's HTTP/1.1 server. Handed an Http2Stream directly, the server's
 * parser takes over the stream's native handle and the first bytes of a response written later (after an upstream
 * answered) reach the client corrupted (seen on Node 24.21: status line garbled, "Parse Error: Expected HTTP/");
 * the adapter has no handle, so the server reads and writes through the stream API only.
 *
 * Owns: data both ways with backpressure, END_STREAM <-> end, destroy <-> reset (CANCEL).
 * Must not know about: HTTP. Hot path: one push or write per chunk, nothing allocated here.
 */
import http2 from 'node:http2';
import { Duplex } from 'node:stream';
import { resetStream } from '../shared/hbone/index.ts';

const { NGHTTP2_CANCEL } = http2.constants;

export class Http2StreamDuplex extends Duplex {
  readonly stream: http2.Http2Stream;

  constructor(stream: http2.Http2Stream) {
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
    this.stream.write(chunk, callback);
  }

  override _final(callback: (error?: Error | null) => void): void {
    this.stream.end();
    callback();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    if (!this.stream.destroyed && !this.stream.closed) {
      if (this.stream.writableEnded) this.stream.close();
      else resetStream(this.stream, NGHTTP2_CANCEL);
    }
    callback(error);
  }
}
