/**
 * The waypoint's L4 path: a terminated CONNECT stream for a TCP port of a Service goes to one endpoint, bytes as they
 * are. The client gets 200 only once the endpoint's stream is open, else the status of the WaypointError. Either
 * HBONE layer (hbone-leg.ts).
 *
 * Owns: answering the CONNECT and joining it to the upstream. Must not know about: HTTP routes, how endpoints are picked.
 */
import type http2 from 'node:http2';
import { splice, type HboneRequest } from '../shared/hbone/index.ts';
import { spliceH2 } from '../shared/hbone/h2/splice.ts';
import { H2Stream } from '../shared/hbone/h2/stream.ts';
import { answer, canAnswer, openLeg, type TerminatedStream } from './hbone-leg.ts';
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

  async forward(request: HboneRequest, downstream: TerminatedStream, service: Service): Promise<void> {
    let upstream;
    try {
      upstream = await this.#upstreams.open(service, request.target.port, request.target.host);
    } catch (error) {
      const status = error instanceof WaypointError ? error.status : 503;
      if (canAnswer(downstream)) answer(downstream, status);
      this.#onDone({ request, service, error: error as Error });
      return;
    }
    if (!canAnswer(downstream)) {
      if (upstream.kind === 'hbone') upstream.stream.close();
      else upstream.socket.destroy();
      return;
    }
    answer(downstream, 200);
    const endpoint = `${upstream.endpoint.namespace}/${upstream.endpoint.name}`;
    let result: { error?: Error | undefined };
    if (upstream.kind === 'hbone') result = await joinStreams(openLeg(downstream), upstream.stream);
    // An endpoint outside the mesh: the terminated stream spliced to its TCP socket, by the stream's own layer.
    else if (downstream instanceof H2Stream) result = await spliceH2(upstream.socket, downstream);
    else result = await splice(upstream.socket, downstream as http2.ServerHttp2Stream);
    this.#onDone({ request, service, endpoint, ...(result.error ? { error: result.error } : {}) });
  }
}
