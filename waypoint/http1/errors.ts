/**
 * What a peer's HTTP/1.1 bytes can do wrong, as the lean path's codec reports it (request-head.ts, response-head.ts,
 * body-framing.ts): a code per rule broken and the status a client gets for it (400, or 431 for a head too large).
 * Each code names the rule Node's llhttp enforces the same way, so the two HTTP/1.1 paths refuse the same requests.
 *
 * A request that arrives too slowly is answered 408, as Node's server answers it.
 *
 * Owns: the catalogue. Must not know about: where the bytes came from or what is done with the refusal.
 */
export type Http1ErrorCode =
  /** Method not one Node's parser knows, bad spacing, bad request-target or version. */
  | 'HTTP1_BAD_REQUEST_LINE'
  /** A status line that is not `HTTP/1.x NNN reason`. */
  | 'HTTP1_BAD_STATUS_LINE'
  /** A header name with a non-token character, whitespace before the colon, an empty name, or obs-fold. */
  | 'HTTP1_BAD_HEADER_NAME'
  /** A control character (other than HTAB) in a header value. */
  | 'HTTP1_BAD_HEADER_VALUE'
  /** A CR not followed by LF, or an LF without CR, in the head. */
  | 'HTTP1_BAD_LINE_ENDING'
  /** The head is over MAX_HEAD_BYTES or has more than MAX_HEADERS fields. */
  | 'HTTP1_HEAD_TOO_LARGE'
  /** Content-Length not digits, given twice, or given with Transfer-Encoding. */
  | 'HTTP1_BAD_CONTENT_LENGTH'
  /** Transfer-Encoding whose last coding is not chunked, or given twice. */
  | 'HTTP1_BAD_TRANSFER_ENCODING'
  /** An HTTP/1.1 request without Host. */
  | 'HTTP1_MISSING_HOST'
  /** A chunk size that is not hex, too long, or a chunk without its CRLF; a bad chunk extension. */
  | 'HTTP1_BAD_CHUNK'
  /** A request's head (or the whole request, body included) did not arrive in time (Node's headersTimeout/requestTimeout). */
  | 'HTTP1_REQUEST_TIMEOUT';

export class Http1Error extends Error {
  readonly code: Http1ErrorCode;
  /** What a client that sent this gets. */
  readonly status: 400 | 408 | 431;
  constructor(code: Http1ErrorCode, message: string) {
    super(message);
    this.name = 'Http1Error';
    this.code = code;
    this.status = code === 'HTTP1_HEAD_TOO_LARGE' ? 431 : code === 'HTTP1_REQUEST_TIMEOUT' ? 408 : 400;
  }
}
