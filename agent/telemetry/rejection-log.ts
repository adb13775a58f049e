/**
 * The log of connections turned away before they reached an application (a failed HBONE handshake, a CONNECT for
 * another address, a stream flood): one warning line per rejection, as ztunnel logs an early deny, but at most
 * `linesPerWindow` lines per reason per window, because a peer decides how fast it fails. What was held back is
 * counted and said in the next line of that reason; metrics count every rejection regardless.
 *
 * Owns: the line's fields and the rate limit.
 * Must not know about: metrics, sockets, HBONE, where the log goes (the pino logger it is given decides).
 */
import type { ConnectionRecord, RejectionReason } from '../proxy/report.ts';
import { accessLogLine } from './access-log.ts';

export const REJECTION_LOG_MESSAGE = 'connection rejected';

/** Ten lines per reason every ten seconds: enough to see who and what, too few to fill a disk under a flood. */
export const REJECTION_LOG_LINES_PER_WINDOW = 10;
export const REJECTION_LOG_WINDOW_MS = 10_000;

export interface RejectionLogger {
  warn(object: object, message: string): void;
}

interface Window {
  startedAt: number;
  lines: number;
  /** Lines held back since the last one written. */
  suppressed: number;
}

export class RejectionLog {
  readonly #log: RejectionLogger;
  readonly #linesPerWindow: number;
  readonly #windowMs: number;
  readonly #now: () => number;
  readonly #windows = new Map<RejectionReason, Window>();

  constructor(log: RejectionLogger, options: { linesPerWindow?: number; windowMs?: number; now?: () => number } = {}) {
    this.#log = log;
    this.#linesPerWindow = options.linesPerWindow ?? REJECTION_LOG_LINES_PER_WINDOW;
    this.#windowMs = options.windowMs ?? REJECTION_LOG_WINDOW_MS;
    this.#now = options.now ?? Date.now;
  }

  rejected(record: ConnectionRecord, reason: RejectionReason): void {
    const now = this.#now();
    let window = this.#windows.get(reason);
    if (!window) {
      window = { startedAt: now, lines: 0, suppressed: 0 };
      this.#windows.set(reason, window);
    } else if (now - window.startedAt >= this.#windowMs) {
      window.startedAt = now;
      window.lines = 0;
    }
    if (window.lines >= this.#linesPerWindow) {
      window.suppressed++;
      return;
    }
    window.lines++;
    const line: Record<string, unknown> = { ...accessLogLine(record), reason };
    if (window.suppressed > 0) {
      line.suppressed = window.suppressed;
      window.suppressed = 0;
    }
    this.#log.warn(line, REJECTION_LOG_MESSAGE);
  }
}
