/**
 * One try of a request to one endpoint: the least-request pick, a new stream to the endpoint (upstream.ts), the
 * request written (the buffered body, then any rest still streaming from the client), and the outcome: the
 * response's head, or an error (no endpoint UH, connect failure UF, reset before the response UC, the try's
 * timeout UT). The try's timeout (timeouts.backendRequest) runs until the response has ended: fired after the head
 * it cuts the response, which the proxy passes on as a cut.
 *
 * Owns: that one exchange's stream, timer and in-flight count. Must not know about: routes, retries, the client side.
 */
import http from 'node:http';
import type { Duplex } from 'node:stream';
import type { Service } from '../shared/mesh/service.ts';
import type { Workload } from '../shared/mesh/workload.ts';
import { WaypointError } from './errors.ts';
import type { BufferedBody } from './retry.ts';
import { Http2StreamDuplex } from './stream-adapter.ts';
import type { Upstreams } from './upstream.ts';

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
  /** Counts request body bytes streamed after the buffered part. */
  onBodyChunk: (chunk: Buffer) => void;
}

export class UpstreamTry {
  readonly outcome: Promise<TryOutcome>;
  endpoint: Workload | undefined;
  /** `ip:port` dialled ('' before the pick). */
  address = '';
  /** The try's timeout fired (before or after the response's head). */
  timedOut = false;
  readonly #upstreams: Upstreams;
  #connection: Duplex | undefined;
  #timer: NodeJS.Timeout | undefined;
  #inFlight = '';
  #aborted = false;

  constructor(upstreams: Upstreams, request: TryRequest) {
    this.#upstreams = upstreams;
    this.outcome = this.#run(request);
  }

  async #run(request: TryRequest): Promise<TryOutcome> {
    let connection: Duplex;
    try {
      const picked = this.#upstreams.pickLeastRequest(request.service, request.servicePort, request.vip);
      this.endpoint = picked.endpoint.workload;
      this.address = `${picked.address}:${picked.targetPort}`;
      this.#inFlight = picked.address;
      this.#upstreams.leastRequest.started(picked.address);
      const upstream = await this.#upstreams.connect(request.service, picked);
      // Through the adapter: the HTTP client writing a body straight into an Http2Stream reached the backend
      // garbled (its parser answered 400), as the server side once did (stream-adapter.ts).
      connection = upstream.kind === 'hbone' ? new Http2StreamDuplex(upstream.stream) : upstream.socket;
    } catch (error) {
      this.#release();
      return { error: error instanceof WaypointError ? error : new WaypointError('WAYPOINT_UPSTREAM_CONNECT_FAILED', (error as Error).message, { cause: error }) };
    }
    this.#connection = connection;
    if (this.#aborted) {
      connection.destroy();
      return { error: new WaypointError('WAYPOINT_REQUEST_TIMEOUT', 'the request timed out') };
    }
    return new Promise((resolve) => {
      const outgoing = http.request({
        method: request.method,
        path: request.url,
        headers: request.headers,
        // No agent (not `agent: false`, which makes a fresh one that dials itself): this stream carries this one
        // request (`connection: close`); the pooled HBONE connection under it is what is reused.
        createConnection: () => connection as never,
      });
      if (request.timeoutMs > 0) {
        this.#timer = setTimeout(() => {
          this.timedOut = true;
          resolve({ error: new WaypointError('WAYPOINT_BACKEND_TIMEOUT', `no response from ${this.address} within timeouts.backendRequest ${request.timeoutMs} ms`) });
          this.abort();
        }, request.timeoutMs);
      }
      outgoing.once('response', (response) => {
        response.once('close', () => this.#finish());
        resolve({ response });
      });
      outgoing.on('error', (error) => {
        this.#finish();
        connection.destroy();
        resolve({ error: new WaypointError('WAYPOINT_UPSTREAM_RESET', `${this.address} closed the request before a response: ${error.message}`, { cause: error }) });
      });
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

  /** Ends the try now (its stream reset): the request timed out, the client left, or the try is being retried. */
  abort(): void {
    this.#aborted = true;
    this.#connection?.destroy();
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
