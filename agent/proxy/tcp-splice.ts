/**
 * Joins two TCP sockets (plaintext passthrough and inbound delivery): bytes both ways with backpressure,
 * half-close both ways (FIN -> FIN), and a reset on one side reset on the other.
 *
 * Owns: the byte pump between two net.Sockets and the count of bytes each way.
 * Must not know about: what the sockets are for, policy, telemetry sinks (it reports counts to a callback).
 */
import type net from 'node:net';
import { resetSocket } from '../../shared/hbone/index.ts';

export interface SpliceResult {
  /** Bytes read from `downstream` and written to `upstream`. */
  bytesUp: number;
  /** Bytes read from `upstream` and written to `downstream`. */
  bytesDown: number;
  error?: Error;
}

/** Resolves when both sockets are closed. Never rejects: failures are in `error`. */
export function spliceTcp(downstream: net.Socket, upstream: net.Socket): Promise<SpliceResult> {
  return new Promise((resolve) => {
    let firstError: Error | undefined;
    let closed = 0;
    const onClose = (): void => {
      if (++closed < 2) return;
      const result: SpliceResult = { bytesUp: upstream.bytesWritten, bytesDown: downstream.bytesWritten };
      if (firstError) result.error = firstError;
      resolve(result);
    };
    // A reset (or any error) on one side resets the other: the peer learns the connection failed, not that it ended.
    const onDownstreamError = (error: Error): void => {
      firstError ??= error;
      resetSocket(upstream);
    };
    const onUpstreamError = (error: Error): void => {
      firstError ??= error;
      resetSocket(downstream);
    };
    downstream.on('error', onDownstreamError);
    upstream.on('error', onUpstreamError);
    downstream.on('close', onClose);
    upstream.on('close', onClose);
    // pipe() carries backpressure and, with end: true, turns one side's FIN into the other's end().
    downstream.pipe(upstream);
    upstream.pipe(downstream);
  });
}
