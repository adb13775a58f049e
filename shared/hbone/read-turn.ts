/**
 * Work deferred to the end of the read callback that is running, or to the next tick when none is.
 *
 * The own HTTP/2 layer gathers the frames one turn produces and writes them together (a connection's flush), and a
 * splice corks the TCP socket it writes into and uncorks it once the turn's chunks are in. Both used to wait for
 * `process.nextTick`: per tick an object with two computed keys (two V8 runtime calls) and a trip through Node's
 * tick queue. A relay end at one request per wake-up took about three ticks per request, two of them these (counted
 * with a wrapped `process.nextTick`; BENCHMARKS.md, "Instructions per request"). Inside a pooled read's callback (the readers in
 * pooled-reads.ts wrap their sink in `runReadTurn`) the deferred work runs when the callback returns instead: still
 * after every frame the read produced, before the loop goes back to the kernel.
 *
 * Owns: the list of deferred calls and the nesting depth of read callbacks. Must not know about: sockets or frames.
 */

import { emptyList } from './lists.ts';

type Deferred = (target: never) => void;

let depth = 0;
const calls: Deferred[] = [];
const targets: unknown[] = [];

/** Calls `call(target)` when the running read callback ends, or on the next tick outside one. */
export function deferToTurnEnd<T>(call: (target: T) => void, target: T): void {
  if (depth === 0) {
    process.nextTick(call, target);
    return;
  }
  calls.push(call as Deferred);
  targets.push(target);
}

/** Whether a read callback (runReadTurn) is running: deferToTurnEnd then waits for its end, not for a tick. */
export function inReadTurn(): boolean {
  return depth > 0;
}

/**
 * Runs `read(first, second)` as a read callback: what it defers with `deferToTurnEnd` runs when it returns (or
 * throws), in the order deferred, including what those calls defer in turn.
 */
export function runReadTurn<A, B, R>(read: (first: A, second: B) => R, first: A, second: B): R {
  depth++;
  try {
    return read(first, second);
  } finally {
    if (--depth === 0 && calls.length > 0) runDeferred();
  }
}

function runDeferred(): void {
  depth++;
  let index = 0;
  try {
    for (; index < calls.length; index++) (calls[index] as (target: unknown) => void)(targets[index]);
  } finally {
    depth--;
    // A call that threw leaves the rest to the next tick, as each would have run on a tick of its own before.
    for (let rest = index + 1; rest < calls.length; rest++) process.nextTick(calls[rest] as (target: unknown) => void, targets[rest]);
    emptyList(calls);
    emptyList(targets);
  }
}
