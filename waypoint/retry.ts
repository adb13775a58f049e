/**
 * When a request the waypoint forwarded may be tried again (HTTPRoute `retry`, Gateway API v1.7 standard channel:
 * `codes`, `attempts`, `backoff`), and the request body kept for it. As Envoy: a retry re-sends the whole request,
 * so only a request whose body was buffered completely can be retried; a body larger than the buffer streams to
 * the first try and is never retried. Connection failures to an endpoint are always retried (Istio's retryOn
 * includes connect-failure); a try that outlasts `timeouts.backendRequest` counts as a 504. A route without
 * `retry` gets Istio's default policy; `attempts: 0` turns retries off. A VirtualService's policy carries Envoy's
 * retry_on conditions instead (`retryOn`), decided as Envoy's router does.
 *
 * Owns: the buffer, the decision and the back-off. Must not know about: sockets, routes beyond their retry policy.
 */
import type { Readable } from 'node:stream';
import type { WaypointError } from './errors.ts';
import type { RetryCondition, RetryPolicy } from './route-table.ts';

/**
 * Bodies up to this size are buffered for retries and mirrors (Envoy buffers up to its connection buffer limit,
 * 1 MiB by default; 64 KiB keeps a waypoint under load small while covering typical API requests).
 */
export const MAX_BUFFERED_BODY_BYTES = 64 * 1024;
const GRPC_CANCELLED = 1;
const GRPC_UNAVAILABLE = 14;
/**
 * Istio's default retry policy, for a route that sets no `retry` (and for a Service with no route): 2 retries on
 * connection failures and 503, and for gRPC on a trailers-only `cancelled` or `unavailable` (retryOn
 * "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"), Envoy's 25 ms base back-off
 * (pilot's retry.DefaultPolicy).
 */
export const ISTIO_DEFAULT_RETRY: RetryPolicy = { codes: new Set([503]), attempts: 2, backoffMs: 25, grpcStatuses: new Set([GRPC_CANCELLED, GRPC_UNAVAILABLE]) };
/** Envoy's cap on the exponential back-off: ten times the base interval. */
const MAX_BACKOFF_FACTOR = 10;

/** A request body read ahead: complete (replayable) or, past the limit, its first part and the rest still in `source`. */
export interface BufferedBody {
  chunks: Buffer[];
  bytes: number;
  /** The whole body is in `chunks`: the request can be sent again. */
  complete: boolean;
  source: Readable;
}

/** Reads `source` until it ends or `limit` bytes are held; never rejects (a client error ends the read). */
export function bufferBody(source: Readable, limit: number): Promise<BufferedBody> {
  return new Promise((resolve) => {
    const body: BufferedBody = { chunks: [], bytes: 0, complete: false, source };
    if (source.readableEnded) {
      body.complete = true;
      resolve(body);
      return;
    }
    const done = (complete: boolean): void => {
      source.off('data', onData);
      source.off('end', onEnd);
      source.off('error', onEnd);
      source.off('close', onEnd);
      if (!complete) source.pause();
      body.complete = complete;
      resolve(body);
    };
    const onData = (chunk: Buffer): void => {
      body.chunks.push(chunk);
      body.bytes += chunk.length;
      if (body.bytes > limit) done(false);
    };
    const onEnd = (): void => done(source.readableEnded);
    source.on('data', onData);
    source.once('end', onEnd);
    source.once('error', onEnd);
    source.once('close', onEnd);
  });
}

/** gRPC status codes of Envoy's gRPC retry conditions, read from a (trailers-only) response's `grpc-status`. */
const GRPC_RETRY_CONDITIONS: readonly (readonly [RetryCondition, number])[] = [['cancelled', 1], ['deadline-exceeded', 4], ['resource-exhausted', 8], ['internal', 13], ['unavailable', 14]];

/** What a try ended with: a response (`status`, and `grpcStatus` when its head carries one) or `error`. */
export interface TryOutcome {
  status?: number;
  grpcStatus?: number;
  error?: WaypointError;
}

/**
 * Envoy's retry_on for a try that ended with a response (`status`, and `grpcStatus` when the response's head
 * carries one) or with `error`: 5xx (any 5xx, resets, connect failures and per-try timeouts), gateway-error (502,
 * 503, 504, the same failures), reset (resets, connect failures, per-try timeouts), connect-failure, retriable-4xx
 * (409), retriable-status-codes (`codes`), the gRPC conditions by grpc-status. refused-stream is an HTTP/2 stream
 * refusal, which an HTTP/1.1 try to an endpoint never gets.
 */
function retryOnMatches(policy: RetryPolicy, retryOn: ReadonlySet<RetryCondition>, outcome: TryOutcome): boolean {
  const status = outcome.status;
  if (status !== undefined) {
    if (retryOn.has('5xx') && status >= 500) return true;
    if (retryOn.has('gateway-error') && (status === 502 || status === 503 || status === 504)) return true;
    if (retryOn.has('retriable-4xx') && status === 409) return true;
    if (retryOn.has('retriable-status-codes') && policy.codes.has(status)) return true;
    if (outcome.grpcStatus !== undefined) for (const [condition, code] of GRPC_RETRY_CONDITIONS) if (retryOn.has(condition) && outcome.grpcStatus === code) return true;
    return false;
  }
  const code = outcome.error?.code;
  const anyFailure = retryOn.has('5xx') || retryOn.has('gateway-error') || retryOn.has('reset');
  if (code === 'WAYPOINT_UPSTREAM_CONNECT_FAILED') return anyFailure || retryOn.has('connect-failure');
  return anyFailure && (code === 'WAYPOINT_UPSTREAM_RESET' || code === 'WAYPOINT_BACKEND_TIMEOUT');
}

/**
 * Whether a try that ended with `status` (a response; `grpcStatus` when it was a trailers-only gRPC answer) or
 * `error` (none) is tried again; `retriesDone` so far. A VirtualService's policy decides by its `retryOn`
 * conditions; an HTTPRoute's (and Istio's default) by `codes`, connection failures and `grpcStatuses`.
 */
export function shouldRetry(policy: RetryPolicy | undefined, replayable: boolean, retriesDone: number, outcome: TryOutcome): boolean {
  if (!policy || !replayable || retriesDone >= policy.attempts) return false;
  if (policy.retryOn) return retryOnMatches(policy, policy.retryOn, outcome);
  // gRPC conditions apply to a trailers-only answer's grpc-status, and only where the policy names them.
  if (outcome.grpcStatus !== undefined && policy.grpcStatuses?.has(outcome.grpcStatus)) return true;
  if (outcome.status !== undefined) return policy.codes.has(outcome.status);
  const code = outcome.error?.code;
  if (code === 'WAYPOINT_UPSTREAM_CONNECT_FAILED') return true;
  if (code === 'WAYPOINT_BACKEND_TIMEOUT') return policy.codes.has(504);
  if (code === 'WAYPOINT_UPSTREAM_RESET') return policy.codes.has(503);
  return false;
}

/** The wait before retry number `retry` (1-based): the policy's back-off doubled each time, at most ten times it. */
export function backoffMs(policy: RetryPolicy, retry: number): number {
  return Math.min(policy.backoffMs * 2 ** (retry - 1), policy.backoffMs * MAX_BACKOFF_FACTOR);
}
