/**
 * The try loop both waypoint HTTP paths share (waypoint/request-attempts.ts), driven by scripted tries: retries on
 * the policy's codes and on connect failures, none when the body is not replayable, gRPC conditions only when the
 * policy names them, URX once retries ran out, the previous endpoint avoided, the request timeout over the tries.
 */
import test from 'ava';
import { WaypointError } from '../../waypoint/errors.ts';
import { RequestAttempts, type Attempt, type AttemptOutcome } from '../../waypoint/request-attempts.ts';
import { ISTIO_DEFAULT_RETRY } from '../../waypoint/retry.ts';
import type { RetryPolicy } from '../../waypoint/route-table.ts';

interface FakeResponse {
  status: number;
  grpc?: number;
  discarded?: boolean;
}

class ScriptedAttempt implements Attempt<FakeResponse> {
  readonly outcome: Promise<AttemptOutcome<FakeResponse>>;
  readonly host: string;
  aborted = false;
  constructor(host: string, outcome: AttemptOutcome<FakeResponse> | 'never') {
    this.host = host;
    this.outcome = outcome === 'never' ? new Promise(() => {}) : Promise.resolve(outcome);
  }
  abort(): void {
    this.aborted = true;
  }
}

const FACTS = {
  status: (response: FakeResponse) => response.status,
  grpcStatus: (response: FakeResponse) => response.grpc,
  discard: (response: FakeResponse) => {
    response.discarded = true;
  },
};
const POLICY: RetryPolicy = { codes: new Set([503]), attempts: 2, backoffMs: 1 };

function run(script: (AttemptOutcome<FakeResponse> | 'never')[], options: { policy?: RetryPolicy; replayable?: boolean; timeoutMs?: number } = {}) {
  const started: { avoid: string | undefined; attempt: ScriptedAttempt }[] = [];
  const retried: (number | string)[] = [];
  const tries = new RequestAttempts<FakeResponse>({
    policy: options.policy ?? POLICY,
    requestTimeoutMs: options.timeoutMs ?? 0,
    facts: FACTS,
    replayable: () => options.replayable ?? true,
    onRetried: (outcome) => retried.push(outcome),
    start: (avoid) => {
      const attempt = new ScriptedAttempt(`10.0.0.${started.length + 1}`, script[started.length] ?? 'never');
      started.push({ avoid, attempt });
      return attempt;
    },
  });
  return { tries, started, retried, result: tries.run() };
}

const connectFailed = (): AttemptOutcome<FakeResponse> => ({ error: new WaypointError('WAYPOINT_UPSTREAM_CONNECT_FAILED', 'refused') });

test('a retriable status is tried again on another endpoint until a success; the dropped answers are discarded', async (t) => {
  const first: FakeResponse = { status: 503 };
  const { result, started, retried, tries } = run([{ response: first }, connectFailed(), { response: { status: 200 } }]);
  const outcome = await result;
  t.is(outcome.kind, 'response');
  t.is(outcome.kind === 'response' ? outcome.flags : '', '-');
  t.is(tries.attempts, 3);
  t.deepEqual(started.map((entry) => entry.avoid), [undefined, '10.0.0.1', '10.0.0.2'], 'each retry avoids the previous endpoint');
  t.deepEqual(retried, [503, 'connect-failure'], 'outlier detection hears every retried try');
  t.true(first.discarded);
  t.true(started[0]!.attempt.aborted && started[1]!.attempt.aborted);
});

test('retries run out: the last answer is passed on with URX, the last error gets URX added', async (t) => {
  const answered = await run([{ response: { status: 503 } }, { response: { status: 503 } }, { response: { status: 503 } }]).result;
  t.is(answered.kind === 'response' ? answered.flags : answered.kind, 'URX');
  const failed = await run([connectFailed(), connectFailed(), connectFailed()]).result;
  t.is(failed.kind, 'error');
  t.is(failed.kind === 'error' ? failed.flags : '', 'UF,URX');
});

test('a body that cannot be sent again is never retried', async (t) => {
  const { result, tries } = run([{ response: { status: 503 } }, { response: { status: 200 } }], { replayable: false });
  const outcome = await result;
  t.is(tries.attempts, 1);
  t.is(outcome.kind === 'response' ? outcome.response.status : 0, 503);
  t.is(outcome.kind === 'response' ? outcome.flags : '', '-', 'no retry ran, so no URX');
});

test('gRPC statuses are retried only where the policy names them (Istio default: unavailable, cancelled)', async (t) => {
  const unavailable = { status: 200, grpc: 14 };
  const plain = await run([{ response: unavailable }, { response: { status: 200, grpc: 0 } }]);
  t.is((await plain.result).kind === 'response' && plain.tries.attempts, 1, 'an HTTPRoute retry with codes only does not retry grpc-status 14');
  const istio = run([{ response: { status: 200, grpc: 14 } }, { response: { status: 200, grpc: 0 } }], { policy: { ...ISTIO_DEFAULT_RETRY, backoffMs: 1 } });
  const outcome = await istio.result;
  t.is(istio.tries.attempts, 2);
  t.is(outcome.kind === 'response' ? outcome.response.grpc : -1, 0);
  const notFound = run([{ response: { status: 200, grpc: 5 } }], { policy: { ...ISTIO_DEFAULT_RETRY, backoffMs: 1 } });
  await notFound.result;
  t.is(notFound.tries.attempts, 1, 'NOT_FOUND is no retry condition');
});

test('the request timeout runs over the tries: a try that never answers ends in a timeout and is aborted', async (t) => {
  const { result, started, tries } = run([{ response: { status: 503 } }, 'never'], { timeoutMs: 400 }); // long enough that a loaded machine's late timers still start the second try first
  const outcome = await result;
  if (outcome.kind !== 'timeout') return t.fail(outcome.kind);
  t.is(outcome.error.code, 'WAYPOINT_REQUEST_TIMEOUT');
  t.is(outcome.error.status, 504);
  t.true(tries.timedOut);
  t.is(started.length, 2);
  t.true(started[1]!.attempt.aborted, 'the try in flight was cut');
});

test('abort (the client left) stops the timer and cuts the try in flight', async (t) => {
  const { tries, started } = run(['never'], { timeoutMs: 60_000 });
  await new Promise((resolve) => setImmediate(resolve));
  tries.abort();
  t.true(started[0]!.attempt.aborted);
  t.false(tries.timedOut);
});
