/**
 * The waypoint's fault filter (fault.ts) on a real HTTP server on loopback: the abort's answer as Envoy's (status,
 * `fault filter abort`, the gRPC form), the delay, the draws by percentage, a client leaving during the delay; and
 * Envoy's retry_on conditions as retry.ts decides them for a VirtualService's policy.
 */
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import test from 'ava';
import { WaypointError } from '../../waypoint/errors.ts';
import { applyFault, type FaultOutcome } from '../../waypoint/fault.ts';
import { shouldRetry } from '../../waypoint/retry.ts';
import { RouteTable, type FaultInjection, type RetryCondition, type RetryPolicy } from '../../waypoint/route-table.ts';

/** Serves one request with `fault`; resolves the client's status, headers, body and the filter's outcome. */
async function faulted(fault: FaultInjection, random: () => number = Math.random): Promise<{ status: number; headers: http.IncomingHttpHeaders; body: string; outcome: FaultOutcome; ms: number }> {
  let outcome: Promise<FaultOutcome> | undefined;
  const server = http.createServer((_request, response) => {
    outcome = applyFault(fault, response, random).then((result) => {
      if (result.abortedWith === undefined) response.writeHead(200).end('upstream');
      return result;
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  try {
    const started = performance.now();
    const response = await new Promise<http.IncomingMessage>((resolve, reject) => http.get({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, path: '/' }, resolve).on('error', reject));
    let body = '';
    for await (const chunk of response) body += String(chunk);
    return { status: response.statusCode!, headers: response.headers, body, outcome: await outcome!, ms: performance.now() - started };
  } finally {
    server.close();
  }
}

test("an abort answers the status with Envoy's body and flag FI; nothing else is served", async (t) => {
  const result = await faulted({ abort: { httpStatus: 503, grpcStatus: 0, percentage: 100 } });
  t.is(result.status, 503);
  t.is(result.body, 'fault filter abort');
  t.deepEqual(result.outcome, { flags: 'FI', abortedWith: 503 });
});

test('a gRPC abort is a trailers-only gRPC answer: HTTP 200 with grpc-status', async (t) => {
  const result = await faulted({ abort: { httpStatus: 0, grpcStatus: 14, percentage: 100 } });
  t.is(result.status, 200);
  t.is(result.headers['grpc-status'], '14');
  t.is(result.headers['grpc-message'], 'fault filter abort');
  t.is(result.headers['content-type'], 'application/grpc');
});

test('a delay holds the request for fixedDelay and then lets it through (flag DI); delay then abort is DI,FI', async (t) => {
  const delayed = await faulted({ delay: { fixedDelayMs: 150, percentage: 100 } });
  t.is(delayed.body, 'upstream');
  t.true(delayed.ms >= 145, `took ${delayed.ms} ms`);
  t.deepEqual(delayed.outcome, { flags: 'DI' });
  const both = await faulted({ delay: { fixedDelayMs: 10, percentage: 100 }, abort: { httpStatus: 429, grpcStatus: 0, percentage: 100 } });
  t.is(both.status, 429);
  t.is(both.outcome.flags, 'DI,FI');
});

test('each fault is drawn with its own percentage: a draw under the share faults, one at or over it does not', async (t) => {
  const fault: FaultInjection = { delay: { fixedDelayMs: 1, percentage: 30 }, abort: { httpStatus: 500, grpcStatus: 0, percentage: 2.5 } };
  // Draws in order: the delay's, then the abort's.
  t.is((await faulted(fault, sequence([0.29, 0.024]))).outcome.flags, 'DI,FI');
  t.is((await faulted(fault, sequence([0.3, 0.025]))).outcome.flags, '');
  t.is((await faulted(fault, sequence([0.5, 0.01]))).outcome.flags, 'FI');
  t.is((await faulted({ abort: { httpStatus: 500, grpcStatus: 0, percentage: 0 } }, () => 0)).outcome.flags, '', '0 % never aborts');
});

test('a client that leaves during the delay ends the filter: nothing is answered or sent upstream', async (t) => {
  let outcome: Promise<FaultOutcome> | undefined;
  const server = http.createServer((_request, response) => {
    outcome = applyFault({ delay: { fixedDelayMs: 30_000, percentage: 100 }, abort: { httpStatus: 500, grpcStatus: 0, percentage: 100 } }, response);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const request = http.get({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, path: '/' });
  request.on('error', () => undefined);
  while (outcome === undefined) await new Promise((resolve) => setTimeout(resolve, 10));
  request.destroy();
  t.deepEqual(await outcome, { flags: 'DI', clientGone: true });
  server.close();
});

function sequence(values: number[]): () => number {
  let index = 0;
  return () => values[index++ % values.length]!;
}

const policy = (retryOn: RetryCondition[], codes: number[] = []): RetryPolicy => ({ codes: new Set(codes), attempts: 2, backoffMs: 25, retryOn: new Set(retryOn) });
const connectFailed = { error: new WaypointError('WAYPOINT_UPSTREAM_CONNECT_FAILED', 'refused') };
const reset = { error: new WaypointError('WAYPOINT_UPSTREAM_RESET', 'reset') };
const perTryTimeout = { error: new WaypointError('WAYPOINT_BACKEND_TIMEOUT', 'slow') };
const noEndpoint = { error: new WaypointError('WAYPOINT_NO_HEALTHY_UPSTREAM', 'none') };

const conditions: [string, RetryPolicy, { status?: number; grpcStatus?: number; error?: WaypointError }, boolean][] = [
  ['5xx retries any 5xx', policy(['5xx']), { status: 500 }, true],
  ['5xx does not retry a 4xx', policy(['5xx']), { status: 404 }, false],
  ['5xx retries a reset', policy(['5xx']), reset, true],
  ['5xx retries a per-try timeout', policy(['5xx']), perTryTimeout, true],
  ['5xx retries a failed connect', policy(['5xx']), connectFailed, true],
  ['gateway-error retries 502', policy(['gateway-error']), { status: 502 }, true],
  ['gateway-error retries 504', policy(['gateway-error']), { status: 504 }, true],
  ['gateway-error does not retry 500', policy(['gateway-error']), { status: 500 }, false],
  ['reset retries a reset', policy(['reset']), reset, true],
  ['reset does not retry a 503 answer', policy(['reset']), { status: 503 }, false],
  ['connect-failure retries a failed connect', policy(['connect-failure']), connectFailed, true],
  ['connect-failure does not retry a reset', policy(['connect-failure']), reset, false],
  ['connect-failure does not retry a per-try timeout', policy(['connect-failure']), perTryTimeout, false],
  ['retriable-4xx retries 409', policy(['retriable-4xx']), { status: 409 }, true],
  ['retriable-4xx does not retry 404', policy(['retriable-4xx']), { status: 404 }, false],
  ['retriable-status-codes retries its codes', policy(['retriable-status-codes'], [503, 418]), { status: 418 }, true],
  ['retriable-status-codes does not retry others', policy(['retriable-status-codes'], [503]), { status: 500 }, false],
  ['unavailable retries grpc-status 14', policy(['unavailable']), { status: 200, grpcStatus: 14 }, true],
  ['cancelled retries grpc-status 1', policy(['cancelled']), { status: 200, grpcStatus: 1 }, true],
  ['unavailable does not retry grpc-status 13', policy(['unavailable']), { status: 200, grpcStatus: 13 }, false],
  ['internal retries grpc-status 13', policy(['internal']), { status: 200, grpcStatus: 13 }, true],
  ['no condition retries no endpoint at all (UH)', policy(['5xx', 'reset', 'connect-failure']), noEndpoint, false],
];

for (const [title, retryPolicy, outcome, expected] of conditions) {
  test(`retryOn: ${title}`, (t) => {
    t.is(shouldRetry(retryPolicy, true, 0, outcome), expected);
  });
}

test('retryOn: attempts and a body that cannot be replayed still bound the retries', (t) => {
  t.false(shouldRetry(policy(['5xx']), true, 2, { status: 500 }), 'two retries done of two');
  t.false(shouldRetry(policy(['5xx']), false, 0, { status: 500 }), 'a body that streamed past the buffer');
});

test('a route resource with a fault or retry condition the waypoint cannot apply is NACKed, the last good one kept', (t) => {
  const table = new RouteTable();
  const entry = (extra: object) => ({ service: 'shop/web', entries: [{ route: 'VirtualService/shop/web', match: { path: { type: 'PATH_PREFIX', value: '/' } }, backends: [{ service: 'shop/web', port: 80, weight: 1 }], ...extra }] });
  t.is(table.apply([{ name: 'shop/web', version: '1', resource: entry({ fault: { abort: { httpStatus: 503, percentage: 50 } } }) }], []), undefined);
  const bad: [object, RegExp][] = [
    [{ fault: { abort: { httpStatus: 0, grpcStatus: 0, percentage: 50 } } }, /fault abort with HTTP status 0 and gRPC status 0/],
    [{ fault: { delay: { fixedDelayMs: 10, percentage: 150 } } }, /fault delay percentage 150 is not from 0 to 100/],
    [{ retry: { attempts: 2, retryOn: ['5xx', 'sometimes'] } }, /unknown retry condition sometimes/],
  ];
  for (const [extra, reason] of bad) {
    const result = table.apply([{ name: 'shop/web', version: '2', resource: entry(extra) }], []);
    t.regex(result?.rejected?.[0]?.reason ?? '', reason);
  }
  t.deepEqual(table.entriesFor('shop/web')![0]!.fault, { abort: { httpStatus: 503, grpcStatus: 0, percentage: 50 } }, 'the last good routes still serve');
});
