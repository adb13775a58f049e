/**
 * Errors of the local workloads (a user's YAML run as a mesh): one class with a stable code.
 *
 * Owns: the catalogue of workload failures. Must not know about: where they are raised.
 */
export type WorkloadErrorCode = 'BAD_IMAGE_MAP' | 'BAD_MANIFEST' | 'NO_COMMAND' | 'NOT_RUNNING' | 'ALREADY_RUNNING' | 'NO_SUCH_POD' | 'START_FAILED' | 'NOT_A_REPLICA';

export class WorkloadError extends Error {
  readonly code: WorkloadErrorCode;
  constructor(code: WorkloadErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'WorkloadError';
    this.code = code;
  }
}
