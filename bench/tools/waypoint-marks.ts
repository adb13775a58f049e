/**
 * The measuring side of the waypoint tools that mark a window inside a running waypoint
 * (bench/waypoint-grpc-instructions.ts, bench/waypoint-http1-bytes.ts): finding the waypoint's process by the mark
 * directory its environment names (AMBIT_GRPC_INSTR_DIR, read by bench/waypoint-grpc-preload.ts), asking it for a
 * mark (SIGUSR2: the preload writes mark-N.json), and reading the sampling heap profile of the window.
 *
 * Owns: those three steps. Must not know about: what the tool sends through the waypoint.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';

/** What the preload writes at a mark: GCs by kind so far, and V8's bytes allocated so far where it counts them. */
export interface WaypointMark {
  gcs: Record<string, number>;
  allocatedBytes?: number;
}

/**
 * The waypoint's process (valgrind's tool under callgrind, node without it): the one whose environment names
 * `markDir` (not the `ip netns exec` wrapper that started it).
 */
export function waypointPid(markDir: string): number {
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (readFileSync(`/proc/${entry}/cmdline`, 'utf8').includes('waypoint/main.ts') && readFileSync(`/proc/${entry}/environ`, 'utf8').includes(`AMBIT_GRPC_INSTR_DIR=${markDir}\0`) && readFileSync(`/proc/${entry}/comm`, 'utf8').trim() !== 'ip') return Number(entry);
    } catch {
      // gone meanwhile
    }
  }
  throw new Error(`the waypoint process marking into ${markDir} was not found`);
}

/** Asks the preload for mark `index` and reads it once written whole (a slow waypoint under callgrind: up to 120 s). */
export async function markOf(pid: number, markDir: string, index: number): Promise<WaypointMark> {
  process.kill(pid, 'SIGUSR2');
  const file = path.join(markDir, `mark-${index}.json`);
  for (let waited = 0; waited <= 120_000; waited += 200) {
    if (existsSync(file)) {
      try {
        return JSON.parse(readFileSync(file, 'utf8')) as WaypointMark;
      } catch {
        // seen between its creation and the end of its write
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
  throw new Error(`the waypoint wrote no ${file} in 120 s`);
}

/** V8's sampling heap profile of the window: self bytes per `unit` (request, call) by function and script, the top `count`. */
export function heapProfileTop(file: string, operations: number, unit: string, count: number): string[] {
  interface Node { callFrame: { functionName: string; url: string; lineNumber: number }; selfSize: number; children: Node[] }
  const profile = JSON.parse(readFileSync(file, 'utf8')) as { head: Node };
  const bySite = new Map<string, number>();
  let total = 0;
  const visit = (node: Node): void => {
    const frame = node.callFrame;
    const site = `${frame.functionName || '(anonymous)'} ${path.basename(frame.url)}:${frame.lineNumber + 1}`;
    bySite.set(site, (bySite.get(site) ?? 0) + node.selfSize);
    total += node.selfSize;
    for (const child of node.children) visit(child);
  };
  visit(profile.head);
  const top = [...bySite].sort((a, b) => b[1] - a[1]).slice(0, count);
  return [`Sampled allocations, ${(total / operations).toFixed(0)} bytes per ${unit}; self bytes per ${unit} by function:`, '', `| bytes per ${unit} | share | function |`, '|---:|---:|---|',
    ...top.map(([site, bytes]) => `| ${(bytes / operations).toFixed(0)} | ${((100 * bytes) / total).toFixed(1)} % | ${site} |`)];
}
