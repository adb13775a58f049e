/**
 * One try of a lean-path request to one endpoint (the lean counterpart of upstream-try.ts): the least-request pick
 * (or a DestinationRule's), a kept-alive or new connection from the pool, the request written in one batch, and the
 * outcome: the response's head, or an error (no endpoint UH, connect failure UF, reset before the response UC, the
 * try's timeout UT). The try's timeout (timeouts.backendRequest) runs until the response has ended: fired after the
 * head it cuts the response, which the proxy passes on as a cut.
 *
 * Owns: that one exchange's connection, timer and in-flight count. Must not know about: routes, retries, the
 * client side (the body goes to a BodyReceiver).
 */
import type { Service } from '../../shared/mesh/service.ts';
import type { Workload } from '../../shared/mesh/workload.ts';
import type { EndpointChooser } from '../destination/destination-traffic.ts';
import { WaypointError } from '../errors.ts';
import type { Attempt, AttemptOutcome, OutcomeListener } from '../request-attempts.ts';
import type { Upstreams } from '../upstream.ts';
import type { ResponseHead } from './heads.ts';
import type { UpstreamHttp1Pool } from './upstream-pool.ts';
import type { ResponseSink, UpstreamHttp1Stream } from './upstream-stream.ts';

/**
 * Where a response's body goes once the proxy takes it: a client's exchange, which serves the connection's next
 * request once this one is over. Each call carries the `generation` the receiver had when relayBody was called; a
 * receiver that moved on to another request drops it.
 */
export interface BodyReceiver {
  readonly generation: number;
  bodyChunk(generation: number, bytes: Buffer, start: number, end: number): void;
  bodyEnd(generation: number): void;
  /** The response was cut after its head (reset, bad framing, or the try's timeout). */
  bodyCut(generation: number): void;
}

export interface LeanTryRequest {
  /** Which request the (reused) request object is now: a try's outcome is taken only by the request that started it. */
  readonly generation: number;
  service: Service;
  servicePort: number;
  vip: string;
  /** The request (head and whole body) as written to the endpoint; every try sends the same buffer. */
  wire: Buffer;
  headRequest: boolean;
  /** timeouts.backendRequest; 0: none. */
  timeoutMs: number;
  choose?: EndpointChooser | undefined;
}

export class LeanTry implements Attempt<ResponseHead>, ResponseSink {
  endpoint: Workload | undefined;
  /** `ip:port` dialled ('' before the pick). */
  address = '';
  host = '';
  timedOut = false;
  /** The generation of the request that started it (LeanTryRequest). */
  readonly requestGeneration: number;
  /** The outcome, once known (the first one counts, as a promise's first resolution). */
  private result: AttemptOutcome<ResponseHead> | undefined;
  private listener: OutcomeListener<ResponseHead> | undefined;
  private promise: Promise<AttemptOutcome<ResponseHead>> | undefined;
  private resolvePromise: ((outcome: AttemptOutcome<ResponseHead>) => void) | undefined;
  private readonly upstreams: Upstreams;
  private stream: UpstreamHttp1Stream | undefined;
  private receiver: BodyReceiver | undefined;
  /** The receiver's generation when it took the body (its calls carry it). */
  private receiverGeneration = 0;
  private timer: NodeJS.Timeout | undefined;
  private inFlight = '';
  private aborted = false;
  private headSeen = false;
  /** The response ended or was cut: nothing more goes to the receiver. */
  private settled = false;

  /** `request` is read while the try is on (the proxy's per-request object); `avoid`: the previous try's endpoint address. */
  constructor(upstreams: Upstreams, pool: UpstreamHttp1Pool, request: LeanTryRequest, avoid: string | undefined) {
    this.upstreams = upstreams;
    this.requestGeneration = request.generation;
    this.start(pool, request, avoid);
  }

  /** The outcome as a promise (made only when asked for: the try loop's runThen is told through `notify`). */
  get outcome(): Promise<AttemptOutcome<ResponseHead>> {
    if (this.promise === undefined) {
      const result = this.result;
      this.promise = result !== undefined ? Promise.resolve(result) : new Promise((resolve) => (this.resolvePromise = resolve));
    }
    return this.promise;
  }

  notify(listener: OutcomeListener<ResponseHead>): void {
    const result = this.result;
    if (result !== undefined) listener.attemptSettled(this, result);
    else this.listener = listener;
  }

  private resolve(outcome: AttemptOutcome<ResponseHead>): void {
    if (this.result !== undefined) return;
    this.result = outcome;
    const listener = this.listener;
    this.listener = undefined;
    this.resolvePromise?.(outcome);
    listener?.attemptSettled(this, outcome);
  }

  private start(pool: UpstreamHttp1Pool, request: LeanTryRequest, avoid: string | undefined): void {
    let acquired;
    try {
      const picked = request.choose ? this.upstreams.pickWith(request.choose, request.service, request.servicePort, request.vip) : this.upstreams.pickLeastRequest(request.service, request.servicePort, request.vip, avoid);
      this.endpoint = picked.endpoint.workload;
      this.address = picked.hostPort;
      this.host = picked.address;
      this.inFlight = picked.address;
      this.upstreams.leastRequest.started(picked.address);
      acquired = pool.acquire(request.service, picked);
    } catch (error) {
      this.finish();
      this.resolve({ error: error instanceof WaypointError ? error : new WaypointError('WAYPOINT_UPSTREAM_CONNECT_FAILED', (error as Error).message, { cause: error }) });
      return;
    }
    if (request.timeoutMs > 0) {
      this.timer = setTimeout(() => {
        this.timedOut = true;
        // Aborted first: the outcome's listener runs at once and may answer the client or start the next try.
        this.abort();
        this.resolve({ error: new WaypointError('WAYPOINT_BACKEND_TIMEOUT', `no response from ${this.address} within timeouts.backendRequest ${request.timeoutMs} ms`) });
      }, request.timeoutMs);
    }
    if (acquired instanceof Promise) {
      acquired.then(
        (stream) => this.send(stream, request),
        (error: Error) => {
          this.finish();
          this.resolve({ error: error instanceof WaypointError ? error : new WaypointError('WAYPOINT_UPSTREAM_CONNECT_FAILED', error.message, { cause: error }) });
        },
      );
    } else {
      this.send(acquired, request);
    }
  }

  private send(stream: UpstreamHttp1Stream, request: LeanTryRequest): void {
    this.stream = stream;
    if (this.aborted) {
      stream.destroy();
      return;
    }
    stream.send(request.wire, request.headRequest, this);
  }

  /** The response's body bytes so far (read when it ended or was cut, before its connection carries another). */
  get responseBodyBytes(): number {
    return this.stream?.bodyBytes ?? 0;
  }

  /** The proxy passes the response's body on to `receiver`. */
  relayBody(receiver: BodyReceiver): void {
    this.receiver = receiver;
    this.receiverGeneration = receiver.generation;
    this.stream?.startBody();
  }

  pause(): void {
    this.stream?.pause();
  }

  resume(): void {
    this.stream?.resume();
  }

  onHead(head: ResponseHead): void {
    this.headSeen = true;
    this.resolve({ response: head });
  }

  onBody(bytes: Buffer, start: number, end: number): void {
    this.receiver?.bodyChunk(this.receiverGeneration, bytes, start, end);
  }

  onEnd(): void {
    this.settled = true;
    this.finish();
    this.receiver?.bodyEnd(this.receiverGeneration);
  }

  onError(error: Error): void {
    this.finish();
    if (!this.headSeen) {
      this.resolve({ error: new WaypointError('WAYPOINT_UPSTREAM_RESET', `${this.address} closed the request before a response: ${error.message}`, { cause: error }) });
      return;
    }
    this.cut();
  }

  /** Ends the try now (its connection closed) unless its response already ended: timed out, client gone, or retried. */
  abort(): void {
    this.aborted = true;
    if (!this.settled) {
      this.stream?.destroy();
      if (this.headSeen) this.cut();
    }
    this.finish();
  }

  private cut(): void {
    if (this.settled) return;
    this.settled = true;
    this.receiver?.bodyCut(this.receiverGeneration);
  }

  private finish(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.inFlight === '') return;
    this.upstreams.leastRequest.finished(this.inFlight);
    this.inFlight = '';
  }
}
