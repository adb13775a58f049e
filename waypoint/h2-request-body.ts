/**
 * The body of one request on the waypoint's HTTP/2 path, fed to the try going on (h2-try.ts) and kept for a retry
 * while it is small: as Envoy buffers a request for retries up to a limit. A request can be sent again when its
 * whole body is kept and has ended (a unary gRPC call, a small POST), or when nothing of it has arrived yet; a
 * stream that has sent its first message and is still open (streaming gRPC) is never retried, nor a body past the
 * limit. Between tries the client's stream is paused: HTTP/2 flow control holds what it sends meanwhile.
 *
 * Owns: the kept chunks, the count of body bytes, the request's trailers and whether the body ended whole.
 * Must not know about: routes, endpoints, retry policies.
 */
import http2 from 'node:http2';
import type { DownstreamH2Stream } from './h2-own-downstream.ts';
import type { UpstreamH2Stream } from './h2-upstream.ts';
import { listen, StreamEvents } from './h2-stream-events.ts';

const { NGHTTP2_NO_ERROR } = http2.constants;

export class H2RequestBody {
  /** Body bytes received from the client so far. */
  bytes = 0;
  /** The client ended its body (END_STREAM, not a reset). */
  ended: boolean;
  /** The request's trailers, once they came. */
  trailers: http2.IncomingHttpHeaders | undefined;
  readonly #source: DownstreamH2Stream;
  readonly #limit: number;
  #kept: Buffer[] = [];
  /** Every byte so far is in #kept. */
  #keptAll = true;
  #sink: UpstreamH2Stream | undefined;
  #flowing = false;
  /** Waiting for the body's end (RequestMirror): the kept chunks, or undefined when it was not kept whole. */
  #onEnded: Array<(chunks: readonly Buffer[] | undefined) => void> | undefined;
  /** #drained bound to this body, for node:http2's sinks (made when one first waits; the own layer's take a receiver). */
  #drainedBound: (() => void) | undefined;

  /**
   * `endStream`: the request's HEADERS already ended it (no body). The body's methods are the streams' listeners, with
   * the body as `this` (h2-stream-events.ts): no closure per request.
   */
  constructor(source: DownstreamH2Stream, limit: number, endStream: boolean) {
    this.#source = source;
    this.#limit = limit;
    this.ended = endStream;
    if (endStream) return;
    listen(source, 'trailers', this.#trailersCame, this, true);
    listen(source, 'end', this.#sourceEnded, this, true);
  }

  #trailersCame(trailers: http2.IncomingHttpHeaders): void {
    this.trailers = trailers;
  }

  #sourceEnded(): void {
    // Node ends a stream's readable side on RST_STREAM too: only a clean end is the body's end (a reset client's
    // request must not look finished to the endpoint: it gets the reset, never END_STREAM).
    const source = this.#source;
    if (source.rstCode !== undefined && source.rstCode !== NGHTTP2_NO_ERROR) return;
    this.ended = true;
    this.#sink?.end();
    const waiting = this.#onEnded;
    this.#onEnded = undefined;
    if (waiting !== undefined) for (const callback of waiting) callback(this.#keptAll ? this.#kept : undefined);
  }

  /** A chunk of the client's body: counted, kept while small, written to the try (paused when it pushes back). */
  #data(chunk: Buffer): void {
    this.bytes += chunk.length;
    if (this.#keptAll) {
      if (this.bytes > this.#limit) {
        this.#keptAll = false;
        this.#kept = [];
      } else {
        this.#kept.push(chunk);
      }
    }
    const sink = this.#sink;
    if (sink !== undefined && !sink.write(chunk)) {
      this.#source.pause();
      if (sink instanceof StreamEvents) sink.listenFor('drain', this.#drained, this, true);
      else sink.once('drain', (this.#drainedBound ??= this.#drained.bind(this)));
    }
  }

  #drained(): void {
    if (this.#sink !== undefined) this.#source.resume();
  }

  #flow(): void {
    this.#flowing = true;
    listen(this.#source, 'data', this.#data, this, false);
  }

  /**
   * `callback` hears the whole body once the client ended it (at once if it has): its chunks, or undefined when it
   * outgrew the limit and was not kept. Not called for a client that reset its stream or never finished.
   */
  whenEnded(callback: (chunks: readonly Buffer[] | undefined) => void): void {
    if (this.ended) callback(this.#keptAll ? this.#kept : undefined);
    else (this.#onEnded ??= []).push(callback);
  }

  /** Whether the request can be sent again: nothing of the body sent yet, or all of it kept and ended. */
  replayable(): boolean {
    return this.bytes === 0 || (this.#keptAll && this.ended);
  }

  /** Sends the body to `sink` (a try's upstream stream, opened with waitForTrailers unless the request had no body). */
  attach(sink: UpstreamH2Stream): void {
    this.#sink = sink;
    // No body at all: the try opened its stream already ended.
    if (this.endsAtHeaders) return;
    for (const chunk of this.#kept) sink.write(chunk);
    if (this.ended) {
      sink.end();
      return;
    }
    if (!this.#flowing) this.#flow();
    this.#source.resume();
  }

  /** The try is over (retried, or cut): nothing more goes to it; the client's stream waits for the next try. */
  detach(sink: UpstreamH2Stream): void {
    if (this.#sink !== sink) return;
    if (sink instanceof StreamEvents) sink.offFor('drain', this.#drained, this);
    else if (this.#drainedBound !== undefined) sink.off('drain', this.#drainedBound);
    this.#sink = undefined;
    if (!this.ended) this.#source.pause();
  }

  /**
   * The answer is complete and no try follows, but the client is still sending: what it sends is read and dropped,
   * so its stream can end (paused, it would hold the stream and its flow-control window until the client gave up).
   */
  discardRest(): void {
    if (this.ended) return;
    this.#sink = undefined;
    this.#keptAll = false;
    this.#kept = [];
    if (!this.#flowing) this.#flow();
    this.#source.resume();
  }

  /** The request as the HTTP/2 session must open it: already ended when it had no body at all. */
  get endsAtHeaders(): boolean {
    return this.ended && !this.#flowing && this.bytes === 0;
  }
}
