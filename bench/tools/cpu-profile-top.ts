/**
 * A V8 CPU profile (the inspector's Profiler.stop result, `.cpuprofile`) summed by function: self time (the samples
 * whose top frame is the function, builtins and native calls it made included) and total time (the samples with the
 * function anywhere on their stack, counted once per sample however often it recurses), per operation, for the
 * harnesses that profile a marked window of the waypoint (bench/waypoint-grpc-instructions.ts `--cpu-profile`).
 *
 * Owns: reading and summing the profile. Must not know about: what the process was doing.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

/** Function name, file and line: one site (V8's nodes split a function by call path). */
function siteOf(node: ProfileNode): string {
  const frame = node.callFrame;
  const file = frame.url === '' ? '' : ` ${path.basename(frame.url)}:${frame.lineNumber + 1}`;
  return `${frame.functionName || '(anonymous)'}${file}`;
}

/**
 * Self and total microseconds per `unit` by site, the top `count` of each, as markdown lines. A sample's time is the
 * delta to the next sample (the last one's: the mean), so idle stretches count as '(idle)' where V8 put them.
 */
export function cpuProfileTop(file: string, operations: number, unit: string, count: number): string[] {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const byId = new Map<number, ProfileNode>();
  const parent = new Map<number, number>();
  for (const node of profile.nodes) {
    byId.set(node.id, node);
    for (const child of node.children ?? []) parent.set(child, node.id);
  }
  const samples = profile.samples;
  const deltas = profile.timeDeltas;
  const mean = samples.length > 0 ? (profile.endTime - profile.startTime) / samples.length : 0;
  const self = new Map<string, number>();
  const total = new Map<string, number>();
  let busy = 0;
  let all = 0;
  for (let index = 0; index < samples.length; index++) {
    const micros = index + 1 < deltas.length ? deltas[index + 1]! : mean;
    const node = byId.get(samples[index]!)!;
    const site = siteOf(node);
    all += micros;
    self.set(site, (self.get(site) ?? 0) + micros);
    if (site !== '(idle)' && site !== '(program)' && site !== '(garbage collector)') busy += micros;
    const seen = new Set<string>();
    for (let at: number | undefined = node.id; at !== undefined; at = parent.get(at)) {
      const name = siteOf(byId.get(at)!);
      if (seen.has(name)) continue;
      seen.add(name);
      total.set(name, (total.get(name) ?? 0) + micros);
    }
  }
  const rows = (map: Map<string, number>): string[] => [...map].sort((a, b) => b[1] - a[1]).slice(0, count)
    .map(([site, micros]) => `| ${(micros / operations).toFixed(1)} | ${((100 * micros) / all).toFixed(1)} % | ${site} |`);
  return [
    `CPU profile of the window (100 µs sampling): ${(all / operations).toFixed(1)} µs per ${unit} sampled, ${(busy / operations).toFixed(1)} of it in JavaScript functions (not idle, GC or "(program)").`,
    '', `Self time, µs per ${unit}:`, '', `| µs per ${unit} | share | function |`, '|---:|---:|---|', ...rows(self),
    '', `Total time (on the stack), µs per ${unit}:`, '', `| µs per ${unit} | share | function |`, '|---:|---:|---|', ...rows(total),
  ];
}
