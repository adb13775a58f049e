/**
 * The identity library's catalogue of failures.
 *
 * Owns: one error class whose `code` callers branch on, with messages a person can act on.
 * Must not know about: who called (agent, control plane, waypoint).
 */
export type IdentityErrorCode =
  | 'AMBIT_IDENTITY_INVALID_SPIFFE_ID'
  | 'AMBIT_IDENTITY_BAD_CSR'
  | 'AMBIT_IDENTITY_BAD_CERTIFICATE'
  | 'AMBIT_IDENTITY_UNTRUSTED'
  | 'AMBIT_IDENTITY_EXPIRED'
  | 'AMBIT_IDENTITY_WRONG_TRUST_DOMAIN'
  | 'AMBIT_IDENTITY_UNEXPECTED_PEER';

export class IdentityError extends Error {
  readonly code: IdentityErrorCode;

  constructor(code: IdentityErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'IdentityError';
    this.code = code;
  }
}
