/**
 * Where a terminated HBONE stream to an L7 port (protocols.ts) goes: answered 200, its first bytes read to see
 * which HTTP the client speaks, then handed as a connection to the HTTP/1.1 proxy (http-proxy.ts) or the HTTP/2
 * proxy (h2-proxy.ts), as Envoy's `codec_type: AUTO` does on Istio's waypoint listeners.
 *
 * Owns: that hand-over. Must not know about: requests, routes, endpoints.
 */
import type http2 from 'node:http2';
import type { HboneRequest } from '../shared/hbone/index.ts';
import type { MeshState } from '../shared/mesh/mesh-state.ts';
import type { Service } from '../shared/mesh/service.ts';
import type { H2Proxy } from './h2-proxy.ts';
import type { HttpProxy } from './http-proxy.ts';
import { sniffHttpVersion } from './protocols.ts';
import { Http2StreamDuplex } from './stream-adapter.ts';

function plainAddress(address: string): string {
  return address.startsWith('::ffff:') ? address.slice(7) : address;
}

export class HttpEntry {
  readonly #http1: HttpProxy;
  readonly #http2: H2Proxy;
  readonly #state: MeshState;

  constructor(options: { http1: HttpProxy; http2: H2Proxy; state: MeshState }) {
    this.#http1 = options.http1;
    this.#http2 = options.http2;
    this.#state = options.state;
  }

  async serve(hbone: HboneRequest, stream: http2.ServerHttp2Stream, service: Service): Promise<void> {
    stream.respond({ ':status': 200 });
    const connection = new Http2StreamDuplex(stream);
    const version = await sniffHttpVersion(connection);
    if (connection.destroyed) return;
    if (version === 'h2') this.#http2.serveConnection(hbone, connection, service, this.#state.workloadByIp(plainAddress(hbone.remoteAddress)));
    else this.#http1.serveConnection(hbone, connection, service);
  }
}
