/**
 * Joins two HBONE legs (hbone-leg.ts, either layer): the client's CONNECT stream the waypoint terminated and the HBONE stream it opened to
 * the endpoint, for ports forwarded at L4.
 *
 * Owns: data both ways with backpressure (pipe), END_STREAM passed on as END_STREAM in each direction, a reset on
 * one side passed on as a reset of the other (CONNECT_ERROR, so neither end takes a cut stream for a complete one).
 * Must not know about: services, endpoints, TLS.
 * Hot path: pipe's own per-chunk write; nothing allocated per chunk here.
 */
import http2 from 'node:http2';
import { resetLeg, type HboneLegStream } from './hbone-leg.ts';

const { NGHTTP2_CONNECT_ERROR, NGHTTP2_NO_ERROR } = http2.constants;

export interface JoinResult {
  /** Why it ended abnormally: a reset (its code) or an error on either side. */
  error?: Error;
}

/** Resolves when both streams are closed; never rejects. */
export function joinStreams(downstream: HboneLegStream, upstream: HboneLegStream): Promise<JoinResult> {
  return new Promise((resolve) => {
    let open = 2;
    let error: Error | undefined;
    const onClose = (stream: HboneLegStream, other: HboneLegStream) => (): void => {
      if (stream.rstCode !== undefined && stream.rstCode !== NGHTTP2_NO_ERROR) {
        error ??= new Error(`stream reset with code ${stream.rstCode}`);
        resetLeg(other, NGHTTP2_CONNECT_ERROR);
      } else if (!stream.readableEnded && !other.destroyed) {
        // Closed without END_STREAM (destroyed locally): the other side must not see a clean end.
        resetLeg(other, NGHTTP2_CONNECT_ERROR);
      }
      if (--open === 0) resolve(error ? { error } : {});
    };
    const onError = (cause: Error): void => {
      error ??= cause;
    };
    downstream.on('error', onError);
    upstream.on('error', onError);
    downstream.once('close', onClose(downstream, upstream));
    upstream.once('close', onClose(upstream, downstream));
    downstream.pipe(upstream);
    upstream.pipe(downstream);
  });
}
