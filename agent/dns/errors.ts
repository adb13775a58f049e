/**
 * The catalogue of what can go wrong in the agent's DNS proxy.
 *
 * Owns: one error class with a stable `code` per case and a message a person can act on. The server maps every
 * code to what the client gets back (SERVFAIL, FORMERR or nothing); logs and counters branch on `code`.
 * Must not know about: sockets, pods, the mesh state.
 */

export type DnsErrorCode =
  /** The query could not be parsed, or is not one question of class IN (answered FORMERR when it has a header). */
  | 'MALFORMED_QUERY'
  /** No upstream resolver is configured (AMBIT_DNS_UPSTREAM unset and no nameserver in the agent's resolv.conf). */
  | 'NO_UPSTREAM'
  /** Every upstream resolver was tried and none answered in time. */
  | 'UPSTREAM_TIMEOUT'
  /** The upstream resolver could not be reached (socket error, connection refused, reset). */
  | 'UPSTREAM_FAILED'
  /** The upstream's reply was not a DNS response to our query (too short, wrong id): dropped, the next one waited for. */
  | 'UPSTREAM_BAD_REPLY'
  /** A 15053 socket could not be opened in the pod's namespace. */
  | 'LISTEN_FAILED'
  /** An upstream resolver in the configuration is not an IP address with an optional port. */
  | 'BAD_UPSTREAM';

export class DnsError extends Error {
  readonly code: DnsErrorCode;

  constructor(code: DnsErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'DnsError';
    this.code = code;
  }
}
