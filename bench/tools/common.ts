/**
 * What every benchmark tool process shares: announcing readiness and results on stdout, dying with its parent,
 * and reading the run's certificate material.
 *
 * Owns: the stdout protocol between bench/lib/processes.ts and the tools (`{"ready":...}`, `{"result":...}`).
 * Must not know about: what the tool measures.
 */
import { readFileSync } from 'node:fs';
import type { WorkloadCertificate } from '../../shared/identity/index.ts';
import { parseSpiffeId } from '../../shared/identity/index.ts';

/** The tool is listening: the parent may start load. */
export function announceReady(info: Record<string, unknown>): void {
  process.stdout.write(`${JSON.stringify({ ready: info })}\n`);
}

/** The tool's one result; the parent takes the last such line. */
export function emitResult(result: unknown): void {
  process.stdout.write(`${JSON.stringify({ result })}\n`);
}

/**
 * Exits when the parent goes (its end of our stdin closes, even if it was SIGKILLed) and exits cleanly on
 * SIGTERM/SIGINT, so `--cpu-prof` gets to write its profile.
 */
export function exitWithParent(onExit?: () => void): void {
  const leave = (): void => {
    onExit?.();
    process.exit(0);
  };
  process.stdin.on('end', leave);
  process.stdin.on('error', leave);
  process.stdin.resume();
  process.on('SIGTERM', leave);
  process.on('SIGINT', leave);
}

/** A workload certificate as the run writes it to disk (dates as ISO strings). */
interface StoredCertificate {
  identity: string;
  certPem: string;
  keyPem: string;
  chainPem: string[];
  rootsPem: string[];
  notBefore: string;
  notAfter: string;
}

export function readWorkloadCertificate(file: string): WorkloadCertificate {
  const stored = JSON.parse(readFileSync(file, 'utf8')) as StoredCertificate;
  return {
    identity: parseSpiffeId(stored.identity),
    certPem: stored.certPem,
    keyPem: stored.keyPem,
    chainPem: stored.chainPem,
    rootsPem: stored.rootsPem,
    notBefore: new Date(stored.notBefore),
    notAfter: new Date(stored.notAfter),
  };
}

export function parseHostPort(value: string): { host: string; port: number } {
  const separator = value.lastIndexOf(':');
  const port = Number(value.slice(separator + 1));
  if (separator < 0 || !Number.isInteger(port)) throw new Error(`expected host:port, got ${JSON.stringify(value)}`);
  return { host: value.slice(0, separator).replace(/^\[|\]$/g, ''), port };
}
