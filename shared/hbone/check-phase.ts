/**
 * Work deferred to the event loop's next check phase (where `setImmediate` callbacks run), gathered: one Immediate
 * per loop turn for every call deferred in it, instead of one Immediate object per call.
 *
 * The waypoint's nested HTTP/2 connections flush once per loop turn (connection.ts: the frames a proxied answer's
 * head, body and trailers make from different ticks leave in one outer write), and its client-facing request streams
 * say their close a turn after the layer's (h2-own-downstream.ts). Each was a `setImmediate` of its own: an object per
 * flush and per close, two or three per gRPC call (BENCHMARKS.md, "The gRPC path, session s12 (wpgrpc)"). Calls
 * run in the order deferred; what they defer in turn runs at the next check phase, as a `setImmediate` made during
 * one would.
 *
 * Owns: the list of calls waiting for the check phase. Must not know about: connections, streams or frames.
 */

import { emptyList } from './lists.ts';
import { runReadTurn } from './read-turn.ts';

type Deferred = (target: never) => void;

/** Calls waiting for the next check phase, and the list the running phase takes them from (swapped each phase). */
let calls: Deferred[] = [];
let targets: unknown[] = [];
let runningCalls: Deferred[] = [];
let runningTargets: unknown[] = [];

/** Calls `call(target)` in the loop's next check phase, with whatever else was deferred there. */
export function deferToCheckPhase<T>(call: (target: T) => void, target: T): void {
  if (calls.length === 0) setImmediate(runCheckPhase);
  calls.push(call as Deferred);
  targets.push(target);
}

/**
 * The phase's calls run as one read turn (read-turn.ts): what they defer to the turn's end (the outer connection's
 * flush of what a nested flush wrote into it) runs when they are done, not on a tick object each.
 */
function runCheckPhase(): void {
  runReadTurn(runDeferred, undefined, undefined);
}

function runDeferred(): void {
  const running = calls;
  const runningFor = targets;
  calls = runningCalls;
  targets = runningTargets;
  runningCalls = running;
  runningTargets = runningFor;
  let index = 0;
  try {
    for (; index < running.length; index++) (running[index] as (target: unknown) => void)(runningFor[index]);
  } finally {
    // A call that threw leaves the rest to a phase of their own each, as each had its own Immediate before.
    for (let rest = index + 1; rest < running.length; rest++) setImmediate(running[rest] as (target: unknown) => void, runningFor[rest]);
    emptyList(running);
    emptyList(runningFor);
  }
}
