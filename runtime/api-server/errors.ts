/**
 * The local API server's errors: each a Kubernetes `Status` reason with its HTTP code, so kubectl prints them as it
 * prints a cluster's (`Error from server (NotFound): pods "x" not found`).
 *
 * Owns: the catalogue of API failures and their Status rendering. Must not know about: where they are raised.
 */

export type ApiErrorReason =
  | 'BadRequest'
  | 'Unauthorized'
  | 'NotFound'
  | 'AlreadyExists'
  | 'Conflict'
  | 'Invalid'
  | 'MethodNotAllowed'
  | 'UnsupportedMediaType'
  | 'Expired'
  | 'InternalError';

const HTTP_CODES: Record<ApiErrorReason, number> = {
  BadRequest: 400,
  Unauthorized: 401,
  NotFound: 404,
  MethodNotAllowed: 405,
  AlreadyExists: 409,
  Conflict: 409,
  Expired: 410,
  UnsupportedMediaType: 415,
  Invalid: 422,
  InternalError: 500,
};

export class ApiError extends Error {
  readonly code: ApiErrorReason;
  constructor(code: ApiErrorReason, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'ApiError';
    this.code = code;
  }

  get httpStatus(): number {
    return HTTP_CODES[this.code];
  }

  /** The `Status` object a Kubernetes API server answers with. */
  toStatus(): Record<string, unknown> {
    return { kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message: this.message, reason: this.code, code: this.httpStatus };
  }
}

export function notFound(plural: string, name: string): ApiError {
  return new ApiError('NotFound', `${plural} "${name}" not found`);
}
