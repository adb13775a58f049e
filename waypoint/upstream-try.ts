/**
 * One try of a request to one endpoint: the least-request pick, a kept-alive or new stream to the endpoint
 * (upstream-connections.ts), the request written (the buffered body, then any rest still streaming from the client), and the outcome: the
 * response's head, or an error (no endpoint UH, connect failure UF, reset before the response UC, the try's
 * timeout UT). The try's timeout (timeouts.backendRequest) runs until the response has ended: fired after the head
 * it cuts the response, which the proxy passes on as a cut.
 *
 * Owns: that one exchange's stream, timer and in-flight count. Must not know about: routes, retries, the client side.
 */
import http from 'node:http';
import type { Service } from '../shared/mesh/service.ts';
import type { Workload } from '../shared/mesh/workload.ts';
import { WaypointError } from './errors.ts';
import type { BufferedBody } from './retry.ts';
import type { UpstreamConnections } from './upstream-connections.ts';
import type { Upstreams } from './upstream.ts';
import type { EndpointChooser } from './destination/destination-traffic.ts';

export interface TryOutcome {
  response?: http.IncomingMessage;
  error?: WaypointError;
}

export interface TryRequest {
  service: Service;
  servicePort: number;
  /** The VIP the client asked for: its family decides the endpoint address's. */
  vip: string;
  method: string;
  url: string;
  headers: http.OutgoingHttpHeaders;
  body: BufferedBody;
  /** timeouts.backendRequest; 0: none. */
  timeoutMs: number;
  /** The previous try's endpoint address, which a retry avoids when another can take it. */
  avoid?: string;
  /** Counts request body bytes streamed after the buffered part. */
  onBodyChunk: (chunk: Buffer) => void;
  /** A DestinationRule's endpoint choice (waypoint/destination/) instead of least request. */
  choose?: EndpointChooser;
  /** The endpoint answered `100 Continue` (the client sent `Expect: 100-continue` and waits for it). */
  onContinue?: () => void;
}

export class UpstreamTry {
  readonly outcome: Promise<TryOutcome>;
  endpoint: Workload | undefined;
  /** `ip:port` dialled ('' before the pick). */
  address = '';
  /** The endpoint's address alone. */
  host = '';
  /** The try's timeout fired (before or after the response's head). */
  timedOut = false;
  readonly #upstreams: Upstreams;
  #outgoing: http.ClientRequest | undefined;
  #timer: NodeJS.Timeout | undefined;
  #inFlight = '';
  #aborted = false;
  /** The response ended whole: its stream went back to the endpoint's pool, nothing to cut. */
  #complete = false;

  constructor(upstreams: Upstreams, connections: UpstreamConnections, request: TryRequest) {
    this.#upstreams = upstreams;
    this.outcome = this.#run(connections, request);
  }

  #run(connections: UpstreamConnections, request: TryRequest): Promise<TryOutcome> {
    let agent: http.Agent;
    try {
      const picked = request.choose ? this.#upstreams.pickWith(request.choose, request.service, request.servicePort, request.vip) : this.#upstreams.pickLeastRequest(request.service, request.servicePort, request.vip, request.avoid);
      this.endpoint = picked.endpoint.workload;
      this.address = `${picked.address}:${picked.targetPort}`;
      this.#inFlight = picked.address;
      this.host = picked.address;
      this.#upstreams.leastRequest.started(picked.address);
      agent = connections.agentFor(request.service, picked);
    } catch (error) {
      this.#release();
      return Promise.resolve({ error: error instanceof WaypointError ? error : new WaypointError('WAYPOINT_UPSTREAM_CONNECT_FAILED', (error as Error).message, { cause: error }) });
    }
    const [host, port] = [this.address.slice(0, this.address.lastIndexOf(':')), Number(this.address.slice(this.address.lastIndexOf(':') + 1))];
    return new Promise((resolve) => {
      // A kept-alive stream to the endpoint when one is idle (upstream-connections.ts), else a new one.
      const outgoing = http.request({ host, port, method: request.method, path: request.url, headers: request.headers, agent });
      this.#outgoing = outgoing;
      if (request.onContinue) outgoing.on('continue', request.onContinue);
      if (request.timeoutMs > 0) {
        this.#timer = setTimeout(() => {
          this.timedOut = true;
          resolve({ error: new WaypointError('WAYPOINT_BACKEND_TIMEOUT', `no response from ${this.address} within timeouts.backendRequest ${request.timeoutMs} ms`) });
          this.abort();
        }, request.timeoutMs);
      }
      outgoing.once('response', (response) => {
        response.once('end', () => (this.#complete = true));
        response.once('close', () => this.#finish());
        resolve({ response });
      });
      outgoing.on('error', (error) => {
        this.#finish();
        resolve({
          error: error instanceof WaypointError ? error : new WaypointError('WAYPOINT_UPSTREAM_RESET', `${this.address} closed the request before a response: ${error.message}`, { cause: error }),
        });
      });
      if (this.#aborted) outgoing.destroy();
      const body = request.body;
      for (const chunk of body.chunks) outgoing.write(chunk);
      if (body.complete) {
        outgoing.end();
      } else {
        body.source.on('data', request.onBodyChunk);
        body.source.pipe(outgoing);
        body.source.resume();
      }
    });
  }

  /** Ends the try now (its stream reset) unless its response already ended: timed out, client gone, or retried. */
  abort(): void {
    this.#aborted = true;
    if (!this.#complete) this.#outgoing?.destroy();
    this.#finish();
  }

  #finish(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#release();
  }

  #release(): void {
    if (this.#inFlight === '') return;
    this.#upstreams.leastRequest.finished(this.#inFlight);
    this.#inFlight = '';
  }
}
