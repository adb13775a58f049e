/**
 * Instructions per request of the waypoint's HTTP/1.1 head work alone, counted by callgrind in a process of its own:
 * the request head the suite's http-load sends parsed, its request id and trace context read, the head forwarded as
 * sent (less hop-by-hop and trace fields, with the waypoint's trace lines), the endpoint's response head (Node's
 * http-target's) parsed, its keep-alive hint and grpc-status read, and the head the client gets written. The work of
 * `bench/waypoint-instructions.ts`'s window without the rest of the request (TLS, HTTP/2, the loop), so that a change
 * to the head code is compared without the JIT-state spread of the whole-waypoint count (BENCHMARKS.md, session s11).
 *
 *   node bench/waypoint-http1-heads.ts [--tree DIR] [--iterations 50000] [--warm 20000]
 *
 * `--tree`: the ambit checkout whose waypoint/ code runs (default: this one), so a base tree and this one are compared
 * side by side with the same script. The count is the difference between two runs under callgrind, one with the
 * warm-up only and one with warm-up and `--iterations` more, divided by `--iterations` (start-up and warm-up cancel).
 * Trees from before session s11 (the header map built per head, no FieldFacts.fieldText) are driven the way their
 * http-proxy.ts drove them; trees from session s13 on write both heads as bytes (waypoint/http1/forwarded-heads.ts),
 * the older ones as text then written into a buffer each (since s13: before, the text was only flattened, so counts
 * taken with earlier versions of this script are not comparable with later ones).
 *
 * Since session s14 the relayed response head is written, as the waypoint writes it, into a buffer with room for the
 * body's first 1 KiB after it (the head's native write needs room for the received text): counts taken before are
 * not comparable with later ones.
 *
 * Owns: this measurement. Must not know about: how the heads are parsed.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';

const { values } = parseArgs({
  options: {
    tree: { type: 'string', default: path.resolve(import.meta.dirname, '..') },
    iterations: { type: 'string', default: '50000' },
    warm: { type: 'string', default: '20000' },
    /** Internal: run the loop (count times after warm) instead of measuring. */
    loop: { type: 'string' },
  },
});

const tree = path.resolve(values.tree);
const REQUEST = Buffer.from('POST / HTTP/1.1\r\ncontent-length: 1024\r\ncontent-type: application/octet-stream\r\nHost: 10.240.5.11\r\nConnection: keep-alive\r\n\r\n', 'latin1');
/** The response body's bytes that come with its head (the suite's 1 KiB), written after the head in one buffer. */
const RESPONSE_BODY_BYTES = 1024;
const RESPONSE = Buffer.from('HTTP/1.1 200 OK\r\nx-backend: v1\r\nContent-Type: application/octet-stream\r\nContent-Length: 1024\r\nDate: Mon, 07 Dec 2026 11:00:00 GMT\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n\r\n', 'latin1');

/* eslint-disable @typescript-eslint/no-explicit-any -- two trees' module shapes, checked by what they export */
function loop(count: number): void {
  // Loaded with require() (ES modules, Node 24): the tree is chosen at run time, and an import() of a computed
  // specifier is what cni/host-runtime.ts's import scan refuses in this repo.
  const load = createRequire(import.meta.url);
  const heads = load(path.join(tree, 'waypoint/http1/heads.ts'));
  const fields = load(path.join(tree, 'waypoint/http1/head-fields.ts'));
  const serialize = load(path.join(tree, 'waypoint/http1/serialize.ts'));
  const tracing = load(path.join(tree, 'waypoint/tracing.ts'));
  const filters = load(path.join(tree, 'waypoint/filters.ts'));
  // Session s13's trees write the heads as bytes into their write's buffer (waypoint/http1/forwarded-heads.ts).
  const bytesModule = path.join(tree, 'waypoint/http1/forwarded-heads.ts');
  const forwarded = existsSync(bytesModule) ? load(bytesModule) : undefined;
  const notForwarded: ReadonlySet<string> = new Set([...filters.HOP_BY_HOP, 'x-request-id', 'traceparent', 'tracestate']);
  const lazy = typeof fields.FieldFacts === 'function';
  let sink = 0;
  const warm = Number(values.warm);
  for (let index = 0; index < warm + count; index++) {
    const request: any = heads.parseRequestHead(REQUEST, 0, REQUEST.length);
    let requestId: string;
    let trace: any;
    if (lazy) {
      requestId = tracing.requestIdFrom(request.value(fields.FIELD_X_REQUEST_ID));
      trace = tracing.traceContextFrom(request.value(fields.FIELD_TRACEPARENT), request.value(fields.FIELD_TRACESTATE));
    } else {
      requestId = tracing.requestIdOf(request.headers);
      trace = tracing.traceContextOf(request.headers);
    }
    const response: any = heads.parseResponseHead(RESPONSE, 0, RESPONSE.length);
    const hint = lazy ? response.value(fields.FIELD_KEEP_ALIVE) : response.headers['keep-alive'];
    const grpc = lazy ? response.value(fields.FIELD_GRPC_STATUS) : response.headers['grpc-status'];
    if (forwarded !== undefined && !request.mapRead && !request.firstWinsRepeated && !response.mapRead && !response.firstWinsRepeated) {
      const wire: Buffer = forwarded.forwardedRequest(request.method, request.url, request, requestId, trace, [], 0);
      // As the waypoint writes it: into the buffer of the response's first write, in front of the body's first bytes.
      const headBytes: number = forwarded.relayedResponseHeadBytes(response.status, response, 0);
      const responseBytes = Buffer.allocUnsafe(headBytes + RESPONSE_BODY_BYTES);
      forwarded.writeRelayedResponseHead(responseBytes, 0, response.status, response, 0);
      sink += wire.length + responseBytes.length + (hint === undefined ? 0 : 1) + (grpc === undefined ? 0 : 1);
      continue;
    }
    const traceLines = serialize.fieldLineText('x-request-id', requestId) + serialize.fieldLineText('traceparent', tracing.traceparentOf(trace));
    const headText: string = lazy && !request.mapRead && !request.firstWinsRepeated
      ? `${request.method} ${request.url} HTTP/1.1\r\n${request.fieldText(fields.SKIP_HOP_BY_HOP | fields.SKIP_TRACE)}${traceLines}\r\n`
      : serialize.requestHeadText(request.method, request.url, request.headers, notForwarded, traceLines);
    const responseText: string = lazy && !response.mapRead && !response.firstWinsRepeated
      ? `HTTP/1.1 ${response.status} OK\r\n${response.fieldText(fields.SKIP_HOP_BY_HOP)}\r\n`
      : serialize.responseHeadText(response.status, response.headers, '', filters.HOP_BY_HOP);
    // Written as the write would: each head into a buffer of its own (flattened on the way), as the waypoint joins it with its body.
    const requestBytes = Buffer.allocUnsafe(headText.length);
    requestBytes.write(headText, 0, headText.length, 'latin1');
    const responseBytes = Buffer.allocUnsafe(responseText.length);
    responseBytes.write(responseText, 0, responseText.length, 'latin1');
    sink += requestBytes.length + responseBytes.length + (hint === undefined ? 0 : 1) + (grpc === undefined ? 0 : 1);
  }
  process.stdout.write(`${sink}\n`);
}
/* eslint-enable @typescript-eslint/no-explicit-any */

function instructions(count: number): number {
  const dir = mkdtempSync(path.join(tmpdir(), 'ambit-http1-heads-'));
  try {
    execFileSync('valgrind', ['--tool=callgrind', '--separate-threads=yes', '--smc-check=all-non-file', `--callgrind-out-file=${dir}/out.%p`, process.execPath, ...process.execArgv, import.meta.filename, '--tree', tree, '--warm', values.warm, '--loop', String(count)], { stdio: ['ignore', 'ignore', 'ignore'] });
    let total = 0;
    // The main thread only (V8's compiler and GC workers vary from run to run).
    for (const file of readdirSync(dir).filter((name) => name.endsWith('-01'))) {
      const summary = /^summary: (\d+)/m.exec(readFileSync(path.join(dir, file), 'utf8'));
      if (summary) total += Number(summary[1]);
    }
    return total;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (values.loop !== undefined) {
  loop(Number(values.loop));
} else {
  const count = Number(values.iterations);
  const base = instructions(0);
  const measured = instructions(count);
  process.stdout.write(`${tree}: ${((measured - base) / count / 1000).toFixed(2)} thousand instructions per request's heads (main thread; ${count} after ${values.warm} warm-up; load ${loadavg()[0]!.toFixed(1)})\n`);
}
