/**
 * The CA service's refusals, each mapped to the gRPC status an agent sees.
 *
 * Owns: one error class carrying the gRPC status code and a message a person can act on, and the counter
 * bucket each refusal is counted in.
 * Must not know about: how callers are authenticated or how certificates are signed.
 */
import { status } from '@grpc/grpc-js';

/**
 * `unavailable`: something the CA depends on did not answer (the API server, for a TokenReview); the caller may
 * retry, as it would after a lost connection. Not a bug, unlike `internal`.
 */
export type CaRefusalReason = 'unauthenticated' | 'permissionDenied' | 'invalidArgument' | 'unavailable' | 'internal';

const STATUS_BY_REASON: Record<CaRefusalReason, status> = {
  unauthenticated: status.UNAUTHENTICATED,
  permissionDenied: status.PERMISSION_DENIED,
  invalidArgument: status.INVALID_ARGUMENT,
  unavailable: status.UNAVAILABLE,
  internal: status.INTERNAL,
};

export class CaServiceError extends Error {
  readonly reason: CaRefusalReason;
  readonly grpcCode: status;

  constructor(reason: CaRefusalReason, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'CaServiceError';
    this.reason = reason;
    this.grpcCode = STATUS_BY_REASON[reason];
  }
}
