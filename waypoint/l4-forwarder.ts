/**
 * The waypoint's L4 path: a terminated CONNECT stream for a TCP port of a Service goes to one endpoint, bytes as they
 * are. The client gets 200 only once the endpoint's stream is open, else the status of the WaypointError.
 *
 * Owns: answering the CONNECT and joining it to the upstream. Must not know about: HTTP routes, how endpoints are picked.
 */
import type http2 from 'node:http2';
import { splice, type HboneRequest } from '../shared/hbone/index.ts';
import { joinStreams } from './stream-join.ts';
import { WaypointError } from './errors.ts';
import type { Upstreams } from './upstream.ts';
import type { Service } from '../shared/mesh/service.ts';

export interface L4Outcome {
  request: HboneRequest;
  service?: Service;
  endpoint?: string;
  error?: Error;
}

export class L4Forwarder {
  readonly #upstreams: Upstreams;
  readonly #onDone: (outcome: L4Outcome) => void;

  constructor(upstreams: Upstreams, onDone: (outcome: L4Outcome) => void) {
    this.#upstreams = upstreams;
    this.#onDone = onDone;
  }

  async forward(request: HboneRequest, downstream: http2.ServerHttp2Stream, service: Service): Promise<void> {
    let upstream;
    try {
      upstream = await this.#upstreams.open(service, request.target.port, request.target.host);
    } catch (error) {
      const status = error instanceof WaypointError ? error.status : 503;
      if (!downstream.destroyed && !downstream.headersSent) downstream.respond({ ':status': status }, { endStream: true });
      this.#onDone({ request, service, error: error as Error });
      return;
    }
    if (downstream.destroyed || downstream.closed) {
      if (upstream.kind === 'hbone') upstream.stream.close();
      else upstream.socket.destroy();
      return;
    }
    downstream.respond({ ':status': 200 });
    const endpoint = `${upstream.endpoint.namespace}/${upstream.endpoint.name}`;
    const result = upstream.kind === 'hbone' ? await joinStreams(downstream, upstream.stream) : await splice(upstream.socket, downstream);
    this.#onDone({ request, service, endpoint, ...(result.error ? { error: result.error } : {}) });
  }
}
