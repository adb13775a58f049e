/**
 * Where a terminated HBONE stream to an L7 port (protocols.ts) goes: answered 200, its first bytes read to see
 * which HTTP the client speaks, then handed to the HTTP/1.1 proxy's lean path (http-proxy.ts, http1/: the stream
 * itself and the bytes read) or as a connection to the HTTP/2 proxy (h2-proxy.ts), as Envoy's `codec_type: AUTO`
 * does on Istio's waypoint listeners. `AMBIT_WAYPOINT_HTTP1=node` sends HTTP/1.1 to Node's server instead (for A/B
 * runs); HTTP/2 is served by the own layer's server role (h2-own-downstream.ts) straight on the terminated stream, or
 * by node:http2's server over a Duplex adapter (config.ts, AMBIT_WAYPOINT_H2_DOWNSTREAM, says which by default).
 *
 * Owns: that hand-over. Must not know about: requests, routes, endpoints, which HBONE layer carries the stream.
 */
import type { HboneRequest } from '../shared/hbone/index.ts';
import type { MeshState } from '../shared/mesh/mesh-state.ts';
import type { Service } from '../shared/mesh/service.ts';
import type { H2Proxy } from './h2-proxy.ts';
import type { HttpProxy } from './http-proxy.ts';
import { answer, openLeg, type TerminatedStream } from './hbone-leg.ts';
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
    // Either HBONE layer's stream (hbone-leg.ts): node:http2's as it is, the own layer's as its Duplex.
    const stream = openLeg(terminated);
    // The first bytes, read from the stream itself: the HTTP/2 preface, or anything else (HTTP/1.1).
    let seen: Buffer | undefined;
    const decide = (version: 'h1' | 'h2'): void => {
      stream.off('data', onData);
      stream.off('end', onEnd);
      stream.off('close', onClose);
      stream.pause();
      if (version === 'h2' && this.#h2Downstream === 'own') {
        // The own layer reads the terminated stream itself: no Duplex adapter, no nested node:http2 session.
        this.#http2.serveOwnConnection(hbone, stream, seen, service, this.#state.workloadByIp(plainAddress(hbone.remoteAddress)));
      } else if (version === 'h2' || HTTP1_PATH === 'node') {
        const connection = new Http2StreamDuplex(stream);
        if (seen !== undefined) connection.unshift(seen);
        if (stream.readableEnded) connection.push(null);
        if (version === 'h2') this.#http2.serveConnection(hbone, connection, service, this.#state.workloadByIp(plainAddress(hbone.remoteAddress)));
        else this.#http1.serveConnection(hbone, connection, service);
      } else {
        this.#http1.serveLean(hbone, stream, service, seen);
      }
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
}
