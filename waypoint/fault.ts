/**
 * Fault injection (VirtualService `fault`), as Envoy's fault filter does it before the router: a share of requests
 * waits `fixedDelay` before going upstream (flag DI), a share is answered by the waypoint and never goes upstream
 * (flag FI): the configured HTTP status with the body `fault filter abort`, or for `grpcStatus` a trailers-only gRPC
 * answer (HTTP 200, `grpc-status`, `grpc-message: fault filter abort`). The delay is drawn first, then the abort,
 * each with its own percentage, as Envoy's filter.
 *
 * Owns: the draws, the wait and the abort's answer. Must not know about: routes, upstreams, metrics.
 */
import type { FaultInjection } from './route-table.ts';

/** Envoy's body for an aborted request. */
export const FAULT_ABORT_BODY = 'fault filter abort';

/** What the fault filter did to one request. */
export interface FaultOutcome {
  /** Envoy's response flags for it: '' (nothing injected), 'DI', 'FI' or 'DI,FI'. */
  flags: string;
  /** The request was aborted: the status the client was answered with (200 for a gRPC abort). */
  abortedWith?: number;
  /** The client went away during the delay: nothing more to do for it. */
  clientGone?: boolean;
}

/** What the fault filter uses of the client's response. */
interface FaultResponse {
  readonly headersSent: boolean;
  writeHead(statusCode: number, headers?: Record<string, string>): unknown;
  end(body?: string): unknown;
  once(event: 'close', listener: () => void): unknown;
  off(event: 'close', listener: () => void): unknown;
  readonly destroyed?: boolean;
}

function drawn(percentage: number, random: () => number): boolean {
  return percentage >= 100 || random() * 100 < percentage;
}

/** Waits `ms`; false when the client's response closed first. */
function delay(ms: number, response: FaultResponse): Promise<boolean> {
  return new Promise((resolve) => {
    const onClose = (): void => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      response.off('close', onClose);
      resolve(true);
    }, ms);
    response.once('close', onClose);
  });
}

/** Applies `fault` to one request: waits when its delay is drawn, answers `response` when its abort is drawn. */
export async function applyFault(fault: FaultInjection, response: FaultResponse, random: () => number = Math.random): Promise<FaultOutcome> {
  let flags = '';
  if (fault.delay && drawn(fault.delay.percentage, random)) {
    flags = 'DI';
    if (!(await delay(fault.delay.fixedDelayMs, response)) || response.destroyed) return { flags, clientGone: true };
  }
  if (!fault.abort || !drawn(fault.abort.percentage, random)) return { flags };
  flags = flags === '' ? 'FI' : `${flags},FI`;
  const { httpStatus, grpcStatus } = fault.abort;
  if (httpStatus !== 0) {
    response.writeHead(httpStatus, { 'content-type': 'text/plain', 'content-length': String(FAULT_ABORT_BODY.length) });
    response.end(FAULT_ABORT_BODY);
    return { flags, abortedWith: httpStatus };
  }
  response.writeHead(200, { 'content-type': 'application/grpc', 'grpc-status': String(grpcStatus), 'grpc-message': FAULT_ABORT_BODY, 'content-length': '0' });
  response.end();
  return { flags, abortedWith: 200 };
}
