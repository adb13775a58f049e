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
 * Two lists, in this order: the phase's calls (`deferToCheckPhase`: the flushes), run as one read turn, so the outer
 * connections' writes they cause go out when they are done; then the calls deferred past those writes
 * (`deferPastCheckPhaseWrites`: the streams' closes, whose listeners log and count the request). With one list the
 * closes ran between a nested flush and the outer write it caused: a call's metrics and access-log line were on its
 * answer's way out (session s13, BENCHMARKS.md "The gRPC path, session s13 (wpgrpc)"); with one Immediate each
 * before s12 the flush's write went first.
 *
 * Owns: the lists of calls waiting for the check phase. Must not know about: connections, streams or frames.
 */

import { emptyList } from './lists.ts';
import { runReadTurn } from './read-turn.ts';

type Deferred = (target: never) => void;

/** A list of calls and their targets, filled during a turn and run (then emptied) at the next check phase. */
interface CallList {
  calls: Deferred[];
  targets: unknown[];
}

/** The calls waiting for the next check phase, and the lists the running phase takes them from (swapped each phase). */
let flushes: CallList = { calls: [], targets: [] };
let pastWrites: CallList = { calls: [], targets: [] };
let runningFlushes: CallList = { calls: [], targets: [] };
let runningPastWrites: CallList = { calls: [], targets: [] };
let scheduled = false;

/** Calls `call(target)` in the loop's next check phase, with whatever else was deferred there. */
export function deferToCheckPhase<T>(call: (target: T) => void, target: T): void {
  if (!scheduled) schedule();
  flushes.calls.push(call as Deferred);
  flushes.targets.push(target);
}

/**
 * Calls `call(target)` in the loop's next check phase after its `deferToCheckPhase` calls and the writes those
 * caused (the outer connections' flushes at their read turn's end).
 */
export function deferPastCheckPhaseWrites<T>(call: (target: T) => void, target: T): void {
  if (!scheduled) schedule();
  pastWrites.calls.push(call as Deferred);
  pastWrites.targets.push(target);
}

function schedule(): void {
  scheduled = true;
  setImmediate(runCheckPhase);
}

/**
 * Each list's calls run as one read turn (read-turn.ts): what they defer to the turn's end (the outer connection's
 * flush of what a nested flush wrote into it) runs when they are done, not on a tick object each. Both lists are
 * taken before either runs: what the calls defer meanwhile waits for the next phase.
 */
function runCheckPhase(): void {
  scheduled = false;
  const phaseFlushes = flushes;
  const phasePastWrites = pastWrites;
  flushes = runningFlushes;
  pastWrites = runningPastWrites;
  runningFlushes = phaseFlushes;
  runningPastWrites = phasePastWrites;
  try {
    if (phaseFlushes.calls.length > 0) runReadTurn(runList, phaseFlushes, undefined);
  } finally {
    if (phasePastWrites.calls.length > 0) runReadTurn(runList, phasePastWrites, undefined);
  }
}

function runList(list: CallList): void {
  const calls = list.calls;
  const targets = list.targets;
  let index = 0;
  try {
    for (; index < calls.length; index++) (calls[index] as (target: unknown) => void)(targets[index]);
  } finally {
    // A call that threw leaves the rest to a phase of their own each, as each had its own Immediate before.
    for (let rest = index + 1; rest < calls.length; rest++) setImmediate(calls[rest] as (target: unknown) => void, targets[rest]);
    emptyList(calls);
    emptyList(targets);
  }
}
