/**
 * The plugin's logger: JSON lines (pino) to stderr or to the config's `logFile`, written synchronously so
 * nothing is lost when the short-lived plugin process exits.
 *
 * Owns: where logs go. Never stdout: stdout carries the CNI result and nothing else.
 * Must not know about: what is logged.
 */
import { pino, type Logger } from 'pino';
import type { LogLevel } from './config.ts';

/** stderr's file descriptor. */
const STDERR_FD = 2;

export type { Logger };

export function createLogger(level: LogLevel, logFile?: string): Logger {
  const destination = pino.destination({ dest: logFile ?? STDERR_FD, sync: true, mkdir: logFile !== undefined });
  return pino({ name: 'ambit-cni', level, base: { pid: process.pid } }, destination);
}
