/**
 * Starts a program that has no ready line (stunnel) and announces it once it listens, for processes started
 * inside a network namespace: bench/lib/processes.ts polls /proc/net/tcp of the runner's own namespace, which
 * cannot see a pod's sockets; this wrapper runs inside the namespace, so its /proc/net/tcp is the pod's.
 *
 *   node bench/tools/ready-on-listen.ts --port P -- <command> [args...]
 *
 * Prints `{"ready":{"port":P,"pid":<child pid>}}` (the child's pid, for CPU accounting) once a socket in that
 * namespace is in LISTEN on P. Exits when the child exits (with its code); kills the child when it is stopped
 * or when its parent goes (stdin closes).
 * Must not know about: what the program is.
 */
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { announceReady, exitWithParent } from './common.ts';

const TIMEOUT_MS = 15_000;

const { values, positionals } = parseArgs({ allowPositionals: true, options: { port: { type: 'string' } } });
const port = Number(values.port);
const [command, ...args] = positionals;
if (!Number.isInteger(port) || port <= 0 || !command) throw new Error('usage: ready-on-listen.ts --port P -- <command> [args...]');

const child = spawn(command, args, { stdio: ['ignore', 'ignore', 'inherit'] });
child.once('error', (error) => {
  process.stderr.write(`ready-on-listen: ${command}: ${error.message}\n`);
  process.exit(1);
});
child.once('exit', (code, signal) => process.exit(code ?? (signal ? 1 : 0)));
exitWithParent(() => child.kill('SIGKILL'));

function listening(): boolean {
  const hexPort = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  for (const table of ['/proc/net/tcp', '/proc/net/tcp6']) {
    let rows: string[];
    try {
      rows = readFileSync(table, 'utf8').split('\n');
    } catch {
      continue;
    }
    // Columns: sl local_address rem_address st ...; LISTEN is state 0A.
    if (rows.some((row) => { const cols = row.trim().split(/\s+/); return cols[1]?.endsWith(hexPort) && cols[3] === '0A'; })) return true;
  }
  return false;
}

const deadline = Date.now() + TIMEOUT_MS;
const poll = (): void => {
  if (listening()) {
    announceReady({ port, pid: child.pid });
    return;
  }
  if (Date.now() > deadline) {
    process.stderr.write(`ready-on-listen: ${command} is not listening on ${port} after ${TIMEOUT_MS} ms\n`);
    child.kill('SIGKILL');
    process.exit(1);
  }
  setTimeout(poll, 25);
};
poll();
