/**
 * Where a terminated HBONE stream to an L7 port (protocols.ts) goes: answered 200, its first bytes read to see
 * which HTTP the client speaks, then handed to the HTTP/1.1 proxy's lean path (http-proxy.ts, http1/: the stream
 * itself and the bytes read) or as a connection to the HTTP/2 proxy (h2-proxy.ts), as Envoy's `codec_type: AUTO`
 * does on Istio's waypoint listeners. `AMBIT_WAYPOINT_HTTP1=node` sends HTTP/1.1 to Node's server instead (for A/B
 * runs); HTTP/2 is served by the own layer's server role (h2-own-downstream.ts) straight on the terminated stream, or
 * by node:http2's server over a Duplex adapter (config.ts, AMBIT_WAYPOINT_H2_DOWNSTREAM, says which by default).
 *
 * On the own HTTP/2 layer the terminated H2Stream is read directly from the sniff on (http1/h2-stream-transport.ts):
 * an HTTP/1.1 client's first chunk goes to the lean path as the view of the layer's read buffer it came in; HTTP/2 and
 * Node's server get the stream as a Duplex.
 *
 * Owns: that hand-over. Must not know about: requests, routes, endpoints.
 */
import type { HboneRequest } from '../shared/hbone/index.ts';
import type { MeshState } from '../shared/mesh/mesh-state.ts';
import type { Service } from '../shared/mesh/service.ts';
import type { H2Proxy } from './h2-proxy.ts';
import type { HttpProxy } from './http-proxy.ts';
import { H2Stream } from '../shared/hbone/h2/stream.ts';
import type { SharedReadBuffer } from '../shared/hbone/pooled-reads.ts';
import { answer, openLeg, type HboneLegStream, type TerminatedStream } from './hbone-leg.ts';
import { DuplexTransport } from './http1/duplex-transport.ts';
import { H2StreamTransport } from './http1/h2-stream-transport.ts';
import type { Http1StreamReader } from './http1/transport.ts';
import { versionFromFirstBytes } from './protocols.ts';
import { Http2StreamDuplex } from './stream-adapter.ts';

/** Which HTTP/1.1 path serves streams: the lean one (http1/), or Node's server for every request. */
const HTTP1_PATH = process.env.AMBIT_WAYPOINT_HTTP1 === 'node' ? 'node' : 'lean';

function plainAddress(address: string): string {
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}

export class HttpEntry {
  readonly #http1: HttpProxy;
  readonly #http2: H2Proxy;
  readonly #state: MeshState;
  /** Which HTTP/2 server serves h2c streams: the own layer (h2-own-downstream.ts) or node:http2's. */
  readonly #h2Downstream: 'own' | 'node';

  constructor(options: { http1: HttpProxy; http2: H2Proxy; state: MeshState; h2Downstream: 'own' | 'node' }) {
    this.#http1 = options.http1;
    this.#http2 = options.http2;
    this.#state = options.state;
    this.#h2Downstream = options.h2Downstream;
  }

  serve(hbone: HboneRequest, terminated: TerminatedStream, service: Service): void {
    answer(terminated, 200);
    if (terminated instanceof H2Stream) {
      this.#serveOwn(hbone, terminated, service);
      return;
    }
    // node:http2's stream, read as it is.
    const stream = openLeg(terminated);
    // The first bytes, read from the stream itself: the HTTP/2 preface, or anything else (HTTP/1.1).
    let seen: Buffer | undefined;
    const decide = (version: 'h1' | 'h2'): void => {
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('close', onClose);
      stream.pause();
      if (version === 'h1' && HTTP1_PATH === 'lean') this.#http1.serveLean(hbone, new DuplexTransport(stream), service, seen, undefined);
      else this.#handOn(hbone, stream, service, version, seen);
    };
    const onData = (chunk: Buffer): void => {
      seen = seen === undefined ? chunk : Buffer.concat([seen, chunk]);
      const version = versionFromFirstBytes(seen);
      if (version !== undefined) decide(version);
    };
    const onEnd = (): void => decide('h1');
    const onClose = (): void => {
      stream.off('data', onData);
      stream.off('end', onEnd);
    };
    stream.on('data', onData);
    stream.once('end', onEnd);
    stream.once('close', onClose);
  }

  /**
   * The own layer's terminated stream: read directly (h1/h2-stream-transport.ts) from the sniff on, so an HTTP/1.1
   * client's first request is parsed from the layer's read buffer as it came; HTTP/2 (and HTTP/1.1 for Node's server)
   * gets the stream as a Duplex once the sniff decided.
   */
  #serveOwn(hbone: HboneRequest, stream: H2Stream, service: Service): void {
    const transport = new H2StreamTransport(stream);
    let seen: Buffer | undefined;
    const decide = (version: 'h1' | 'h2', shared: SharedReadBuffer | undefined): void => {
      if (version === 'h1' && HTTP1_PATH === 'lean') this.#http1.serveLean(hbone, transport, service, seen, shared);
      else this.#handOn(hbone, transport.handOff(), service, version, seen);
    };
    const sniff: Http1StreamReader = {
      onBytes: (chunk, shared) => {
        if (seen === undefined) {
          const version = versionFromFirstBytes(chunk);
          // Usually the first chunk decides: handed on as it is (a view of the read buffer, valid during this call).
          if (version !== undefined) {
            seen = version === 'h1' && HTTP1_PATH === 'lean' ? chunk : shared === undefined ? chunk : Buffer.from(chunk);
            decide(version, version === 'h1' ? shared : undefined);
            return;
          }
          seen = shared === undefined ? chunk : Buffer.from(chunk);
          return;
        }
        seen = Buffer.concat([seen, chunk]);
        const version = versionFromFirstBytes(seen);
        if (version !== undefined) decide(version, undefined);
      },
      onPeerEnd: () => decide('h1', undefined),
      onDrained: () => undefined,
      onClosed: () => undefined,
      onIdle: () => undefined,
    };
    transport.attach(sniff);
  }

  /** HTTP/2 to its proxy (own layer's server or node:http2's), or HTTP/1.1 to Node's server (AMBIT_WAYPOINT_HTTP1=node). */
  #handOn(hbone: HboneRequest, stream: HboneLegStream, service: Service, version: 'h1' | 'h2', seen: Buffer | undefined): void {
    if (version === 'h2' && this.#h2Downstream === 'own') {
      // The own layer reads the terminated stream itself: no Duplex adapter, no nested node:http2 session.
      this.#http2.serveOwnConnection(hbone, stream, seen, service, this.#state.workloadByIp(plainAddress(hbone.remoteAddress)));
      return;
    }
    const connection = new Http2StreamDuplex(stream);
    if (seen !== undefined) connection.unshift(seen);
    if (stream.readableEnded) connection.push(null);
    if (version === 'h2') this.#http2.serveConnection(hbone, connection, service, this.#state.workloadByIp(plainAddress(hbone.remoteAddress)));
    else this.#http1.serveConnection(hbone, connection, service);
  }
}
