/**
 * When a request the waypoint forwarded may be tried again (HTTPRoute `retry`, Gateway API v1.7 standard channel:
 * `codes`, `attempts`, `backoff`), and the request body kept for it. As Envoy: a retry re-sends the whole request,
 * so only a request whose body was buffered completely can be retried; a body larger than the buffer streams to
 * the first try and is never retried. Connection failures to an endpoint are always retried (Istio's retryOn
 * includes connect-failure); a try that outlasts `timeouts.backendRequest` counts as a 504. A route without
 * `retry` gets Istio's default policy; `attempts: 0` turns retries off.
 *
 * Owns: the buffer, the decision and the back-off. Must not know about: sockets, routes beyond their retry policy.
 */
import type { Readable } from 'node:stream';
import type { WaypointError } from './errors.ts';
import type { RetryPolicy } from './route-table.ts';

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

/**
 * Whether a try that ended with `status` (a response; `grpcStatus` when it was a trailers-only gRPC answer) or
 * `error` (none) is tried again; `retriesDone` so far.
 */
export function shouldRetry(policy: RetryPolicy | undefined, replayable: boolean, retriesDone: number, outcome: { status?: number; grpcStatus?: number; error?: WaypointError }): boolean {
  if (!policy || !replayable || retriesDone >= policy.attempts) return false;
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
