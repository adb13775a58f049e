/**
 * What a forwarded request is on both HTTP paths while it goes (http-proxy.ts's LeanRequest over HTTP/1.1,
 * h2-proxy.ts's H2Request over HTTP/2): the facts its metrics and access-log line read (route, destination,
 * endpoint, attempts, bytes, flags), what its tries read (the Service, the VIP, the per-try timeout, a
 * DestinationRule's endpoint choice: LeanTryRequest and H2TryRequest), and the try loop's settings (policy,
 * timeouts, the response facts). Written once here; each path's request extends it with its own downstream, body
 * and relay.
 *
 * Owns: those shared fields and the try-request getters. Must not know about: HTTP framing, either path's streams.
 */
import type { HboneRequest } from '../shared/hbone/index.ts';
import type { Service } from '../shared/mesh/service.ts';
import type { Workload } from '../shared/mesh/workload.ts';
import type { DestinationRequest } from './destination/destination-traffic.ts';
import type { RequestAttempts, ResponseFacts } from './request-attempts.ts';
import { ISTIO_DEFAULT_RETRY } from './retry.ts';
import type { RetryPolicy, RouteBackend, RouteEntry } from './route-table.ts';
import type { TraceContext } from './tracing.ts';

/** What a request needs of its client stream's context (both paths' contexts have these). */
export interface TryRequestContext {
  hbone: HboneRequest;
  service: Service;
}

/** `R`: what a try answers with (a parsed HTTP/1.1 head, an HTTP/2 answer); `C`: the client stream's context. */
export class TryRequestBase<R, C extends TryRequestContext> {
  readonly context: C;
  started = performance.now();
  requestId: string;
  trace: TraceContext;
  /** The route entry that matched (undefined: no route attached, or none matched). */
  entry: RouteEntry | undefined = undefined;
  /** The Service the request goes to (the route's backend, else the one asked for). */
  destination: Service;
  endpoint: Workload | undefined = undefined;
  /** `ip:port` of the last try ('' before one). */
  upstreamHost = '';
  attempts = 0;
  responseBytes = 0;
  details = 'via_upstream';
  /** Its DestinationRule pool slot and endpoint choice, when a rule applies (waypoint/destination/). */
  destinationRequest: DestinationRequest | undefined = undefined;
  /** What VirtualService fault injection did ('DI', 'FI', 'DI,FI'; '' nothing), joined to the flags at the end. */
  faultFlags = '';
  /** The tries, once they began (aborted when the client goes). */
  tries: RequestAttempts<R> | undefined = undefined;
  // What the tries send and the try loop's settings: set once the route is known, before the tries start.
  backend: RouteBackend | undefined = undefined;
  servicePort = 0;
  policy: RetryPolicy = ISTIO_DEFAULT_RETRY;
  requestTimeoutMs = 0;
  readonly facts: ResponseFacts<R>;

  constructor(context: C, requestId: string, trace: TraceContext, facts: ResponseFacts<R>) {
    this.context = context;
    this.requestId = requestId;
    this.trace = trace;
    this.destination = context.service;
    this.facts = facts;
  }

  /**
   * The object made another request's on the same client stream (a path that reuses its request objects, one request
   * at a time per connection): every shared field as the constructor leaves it, with this request's id and trace.
   */
  protected renewBase(requestId: string, trace: TraceContext): void {
    this.started = performance.now();
    this.requestId = requestId;
    this.trace = trace;
    this.entry = undefined;
    this.destination = this.context.service;
    this.endpoint = undefined;
    this.upstreamHost = '';
    this.attempts = 0;
    this.responseBytes = 0;
    this.details = 'via_upstream';
    this.destinationRequest = undefined;
    this.faultFlags = '';
    this.tries = undefined;
    this.backend = undefined;
    this.servicePort = 0;
    this.policy = ISTIO_DEFAULT_RETRY;
    this.requestTimeoutMs = 0;
  }

  // What each try reads (LeanTryRequest, H2TryRequest).
  get service(): Service {
    return this.destination;
  }

  get vip(): string {
    return this.context.hbone.target.host;
  }

  /** timeouts.backendRequest of the matched route; 0: none. */
  get timeoutMs(): number {
    return this.entry?.backendRequestTimeoutMs ?? 0;
  }

  get choose(): DestinationRequest['choose'] | undefined {
    return this.destinationRequest?.choose;
  }

  // AttemptsOptions: a try that is being retried ended with this outcome (for outlier detection).
  onRetried(outcome: number | 'connect-failure'): void {
    this.destinationRequest?.tryEnded(outcome);
  }
}
