/**
 * The catalogue of what can go wrong while capturing a pod's traffic.
 *
 * Owns: one error class with a stable `code` per case and a message a person can act on. Callers (the CNI
 * server, logs, metrics) branch on `code`, never on message text.
 * Must not know about: how rules or listeners are made; HTTP status codes (the CNI server maps codes).
 */

export type CaptureErrorCode =
  /** The pod's network namespace path does not exist or cannot be opened. */
  | 'NETNS_NOT_FOUND'
  /** iptables-save/iptables-restore (or ip rule/route) failed inside the pod's namespace. */
  | 'RULES_FAILED'
  /** A 15001/15006/15008 listener could not be opened inside the pod's namespace. */
  | 'LISTEN_FAILED'
  /** The request names a pod the manager cannot act on (empty uid, no netns, bad IP). */
  | 'INVALID_POD'
  /** A socket could not be created (netns gone, mark refused, bind failed). */
  | 'SOCKET_FAILED'
  /** The manager is closed (agent shutting down). */
  | 'CLOSED'
  /** The native socket addon lacks a function the agent calls: built from older sources than the agent's; rebuild it. */
  | 'NATIVE_ADDON_STALE';

export class CaptureError extends Error {
  readonly code: CaptureErrorCode;
  /** The errno name of the underlying failure when there was one (ENOENT, EADDRINUSE, ...). */
  readonly errnoCode: string | undefined;

  constructor(code: CaptureErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'CaptureError';
    this.code = code;
    const cause = options?.cause as { code?: unknown } | undefined;
    this.errnoCode = typeof cause?.code === 'string' ? cause.code : undefined;
  }
}

/** The errno name carried by a Node or addon error, if any. */
export function errnoOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}
