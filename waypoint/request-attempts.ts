/**
 * The tries of one forwarded request, for both HTTP paths (http-proxy.ts over HTTP/1.1 tries, h2-proxy.ts over
 * HTTP/2 tries): the route's `timeouts.request` running over every try and the response, a new try while the retry
 * policy allows it (retry.ts decides; the back-off between tries; a retry avoids the previous endpoint), and the
 * outcome the proxy answers with, with Envoy's flags (`URX` once retries ran out).
 *
 * Owns: the request timer, the try loop and the retry count. Must not know about: HTTP framing, how a try reaches
 * an endpoint (a try is anything with an outcome, the endpoint it chose and an abort), the client side.
 */
import { WaypointError } from './errors.ts';
import { backoffMs, shouldRetry } from './retry.ts';
import type { RetryPolicy } from './route-table.ts';

/** What a try ends with: a response's head, or an error before it. */
export interface AttemptOutcome<R> {
  response?: R;
  error?: WaypointError;
}

/** Told a try's outcome without a promise (RequestAttempts.runThen). */
export interface OutcomeListener<R> {
  attemptSettled(attempt: Attempt<R>, outcome: AttemptOutcome<R>): void;
}

/** Told the result of runThen's tries (one object per request: no closure per request). */
export interface AttemptsListener<R> {
  attemptsDone(result: AttemptsResult<R>): void;
}

/** One try to one endpoint (upstream-try.ts over HTTP/1.1, h2-try.ts over HTTP/2). */
export interface Attempt<R> {
  readonly outcome: Promise<AttemptOutcome<R>>;
  /** The endpoint's address ('' before the pick). */
  readonly host: string;
  /** Ends the try now unless its response already ended. */
  abort(): void;
  /**
   * Optional: `listener` is told the outcome once (at once when it is known already), instead of through `outcome`:
   * a try that offers it costs the loop no promise (http1/lean-try.ts).
   */
  notify?(listener: OutcomeListener<R>): void;
}

/** What the loop needs to know of a response: its status (and gRPC status, in a trailers-only answer), and how to drop it. */
export interface ResponseFacts<R> {
  status(response: R): number;
  grpcStatus?(response: R): number | undefined;
  /** A response that is retried: read and dropped (or reset). */
  discard(response: R): void;
}

export type AttemptsResult<R> =
  /** `timeouts.request` ran out before a response: the proxy answers 504 (UT). */
  | { kind: 'timeout'; attempt: Attempt<R>; error: WaypointError }
  /** No try got a response: the last try's error, with URX added once retries ran out. */
  | { kind: 'error'; attempt: Attempt<R>; error: WaypointError; flags: string }
  /** A response to pass on: `flags` is URX when it is a retriable answer after the last retry, else '-'. */
  | { kind: 'response'; attempt: Attempt<R>; response: R; flags: string };

export interface AttemptsOptions<R> {
  policy: RetryPolicy;
  /** timeouts.request; 0: none. */
  requestTimeoutMs: number;
  facts: ResponseFacts<R>;
  /** Starts try number `attempts` (1-based); `avoid`: the previous try's endpoint address. */
  start(avoid: string | undefined): Attempt<R>;
  /** Whether the request can be sent again now (its body replayable, its client still there). */
  replayable(): boolean;
  /** A try that is being retried ended with this status (or a connect failure): for outlier detection. */
  onRetried?(outcome: number | 'connect-failure'): void;
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

export class RequestAttempts<R> implements OutcomeListener<R> {
  /** Tries started so far. */
  attempts = 0;
  /** `timeouts.request` fired (before or after the response's head). */
  timedOut = false;
  private currentTry: Attempt<R> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private timeoutPromise: Promise<undefined> | undefined;
  private readonly options: AttemptsOptions<R>;
  private retriesDone = 0;
  private previousHost: string | undefined;
  /** runThen's receiver of the result, until it got it. */
  private doneListener: AttemptsListener<R> | undefined;

  constructor(options: AttemptsOptions<R>) {
    this.options = options;
    if (options.requestTimeoutMs > 0) {
      this.timeoutPromise = new Promise<undefined>((resolve) => {
        this.timer = setTimeout(() => {
          this.timedOut = true;
          this.currentTry?.abort();
          resolve(undefined);
          // runThen: the timeout is the result, if none was given yet (also during a retry's back-off).
          const done = this.doneListener;
          this.doneListener = undefined;
          if (done !== undefined) done.attemptsDone({ kind: 'timeout', attempt: this.currentTry!, error: this.timeoutError() });
        }, options.requestTimeoutMs);
      });
    }
  }

  /** The try going on (or the last one). */
  get current(): Attempt<R> | undefined {
    return this.currentTry;
  }

  /** Runs tries until one gives an answer to pass on, the retries run out, or the request times out. */
  async run(): Promise<AttemptsResult<R>> {
    for (;;) {
      this.attempts++;
      const attempt = this.options.start(this.previousHost);
      this.currentTry = attempt;
      const outcome = this.timeoutPromise ? await Promise.race([attempt.outcome, this.timeoutPromise]) : await attempt.outcome;
      if (this.timedOut || outcome === undefined) {
        attempt.abort();
        if (outcome?.response !== undefined) this.options.facts.discard(outcome.response);
        return { kind: 'timeout', attempt, error: this.timeoutError() };
      }
      const result = this.verdict(attempt, outcome);
      if (result !== undefined) return result;
      await sleep(backoffMs(this.options.policy, this.retriesDone));
      if (!this.timedOut) continue;
      return { kind: 'timeout', attempt, error: this.timeoutError() };
    }
  }

  /**
   * run() without a promise where the tries offer `notify` (the common case, a single try that answers, costs no
   * promise, no async function and no microtask): `done` gets the same result run() would give, once. Tries without
   * `notify` are awaited.
   */
  runThen(done: AttemptsListener<R>): void {
    this.doneListener = done;
    this.startTry();
  }

  private startTry(): void {
    this.attempts++;
    const attempt = this.options.start(this.previousHost);
    this.currentTry = attempt;
    if (attempt.notify !== undefined) attempt.notify(this);
    else void attempt.outcome.then((outcome) => this.attemptSettled(attempt, outcome));
  }

  /** OutcomeListener: a try of runThen's ended with `outcome`. */
  attemptSettled(attempt: Attempt<R>, outcome: AttemptOutcome<R>): void {
    // The request timed out (its result given) or a later try is current: this outcome is no longer waited for.
    if (this.doneListener === undefined || attempt !== this.currentTry) return;
    const result = this.verdict(attempt, outcome);
    if (result === undefined) {
      setTimeout(() => {
        if (this.doneListener !== undefined) this.startTry();
      }, backoffMs(this.options.policy, this.retriesDone));
      return;
    }
    const done = this.doneListener;
    this.doneListener = undefined;
    done.attemptsDone(result);
  }

  /**
   * What a try's outcome means: the result to give, or undefined when it is retried (its answer dropped, the try
   * aborted, the next one to avoid its endpoint; the caller waits the back-off and starts it).
   */
  private verdict(attempt: Attempt<R>, outcome: AttemptOutcome<R>): AttemptsResult<R> | undefined {
    const { policy, facts } = this.options;
    const response = outcome.response;
    const status = response !== undefined ? facts.status(response) : undefined;
    const grpcStatus = response !== undefined ? facts.grpcStatus?.(response) : undefined;
    const retried = status === undefined ? { error: outcome.error! } : grpcStatus === undefined ? { status } : { status, grpcStatus };
    if (this.options.replayable() && shouldRetry(policy, true, this.retriesDone, retried)) {
      this.options.onRetried?.(status ?? 'connect-failure');
      if (response !== undefined) facts.discard(response);
      attempt.abort();
      this.previousHost = attempt.host || undefined;
      this.retriesDone++;
      return undefined;
    }
    const exhausted = this.retriesDone > 0 && this.retriesDone >= policy.attempts;
    if (outcome.error) {
      this.stop();
      return { kind: 'error', attempt, error: outcome.error, flags: exhausted ? `${outcome.error.responseFlags},URX` : outcome.error.responseFlags };
    }
    // A response the policy would have retried, had a retry been left: the answer carries URX.
    const retriable = exhausted && shouldRetry(policy, true, 0, retried);
    return { kind: 'response', attempt, response: response!, flags: retriable ? 'URX' : '-' };
  }

  /** Stops the request timer (the response ended, or the proxy answered). */
  stop(): void {
    if (this.timer !== undefined) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** The client went away: no try goes on for it. */
  abort(): void {
    this.stop();
    this.currentTry?.abort();
  }

  private timeoutError(): WaypointError {
    return new WaypointError('WAYPOINT_REQUEST_TIMEOUT', `no response within timeouts.request ${this.options.requestTimeoutMs} ms`);
  }
}
