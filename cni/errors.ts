/**
 * The CNI plugin's catalogue of failures, each a spec error code plus a message a person can act on.
 *
 * Owns: the mapping from what went wrong to CNI spec error codes (SPEC.md "Error" section, spec 1.1.0:
 * 0-99 are well-known, 100+ are plugin-specific).
 * Must not know about: how errors are printed (main.ts) or where they come from.
 */

/** Well-known CNI error codes from the spec, plus our plugin-specific catch-all. */
export const CniErrorCode = {
  INCOMPATIBLE_VERSION: 1,
  UNSUPPORTED_FIELD: 2,
  UNKNOWN_CONTAINER: 3,
  INVALID_ENVIRONMENT: 4,
  IO_FAILURE: 5,
  DECODING_FAILURE: 6,
  INVALID_NETWORK_CONFIG: 7,
  TRY_AGAIN_LATER: 11,
  /** STATUS (spec 1.1.0): the plugin cannot serve ADD now. */
  PLUGIN_NOT_AVAILABLE: 50,
  /** Plugin-specific (100+): anything else, including the agent refusing to capture a pod. */
  INTERNAL: 999,
} as const;
export type CniErrorCodeValue = (typeof CniErrorCode)[keyof typeof CniErrorCode];

export class CniError extends Error {
  readonly code: CniErrorCodeValue;
  readonly details: string;
  constructor(code: CniErrorCodeValue, message: string, details = '') {
    super(message);
    this.name = 'CniError';
    this.code = code;
    this.details = details;
  }
}

/** The spec's error result: printed on stdout with a non-zero exit status. */
export interface CniErrorResult {
  cniVersion: string;
  code: number;
  msg: string;
  details?: string;
}

export function toErrorResult(error: unknown, cniVersion: string): CniErrorResult {
  if (error instanceof CniError) {
    return { cniVersion, code: error.code, msg: error.message, ...(error.details ? { details: error.details } : {}) };
  }
  // Never a stack trace on stdout: the message only; the stack goes to the log.
  return { cniVersion, code: CniErrorCode.INTERNAL, msg: `ambit-cni internal error: ${(error as Error)?.message ?? String(error)}` };
}
