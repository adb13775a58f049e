/**
 * Reading the relays' V8 CPU profiles (`--profile`): the top frames by self time, per process.
 *
 * Owns: reducing a .cpuprofile to "where did the busy time go". Must not know about: which relay it was.
 */
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

const TOP_FRAMES = 15;

function frameName(node: ProfileNode): string {
  const { functionName, url, lineNumber } = node.callFrame;
  if (!url) return functionName || '(anonymous)';
  const file = url.replace(/^file:\/\//, '').replace(/^.*\/(shared|bench|agent)\//, '$1/');
  return `${functionName || '(anonymous)'} ${file}:${lineNumber + 1}`;
}

/** Where a frame's self time belongs, coarsely: what a reader needs to see what limits a relay. */
export function frameCategory(node: ProfileNode): string {
  const { functionName, url } = node.callFrame;
  if (functionName === '(program)') return 'native, not attributed to JS (OpenSSL, nghttp2, libuv, syscalls)';
  if (functionName === '(garbage collector)') return 'garbage collector';
  if (!url) return 'native bindings called from JS (e.g. writeBuffer: socket writes)';
  if (/^node:internal\/(modules|bootstrap|deps\/amaro)|^node:internal\/main/.test(url)) return 'start-up (module loading, type stripping)';
  if (/^node:(internal\/)?http2/.test(url)) return 'node:http2 (JS)';
  if (/^node:internal\/streams|^node:stream/.test(url)) return 'node streams (JS)';
  if (/^node:(net|tls|_tls_wrap|internal\/stream_base_commons|internal\/net)/.test(url)) return 'node net/tls (JS)';
  if (/^node:(events|internal\/process|internal\/timers|timers|internal\/fixed_queue|internal\/async_hooks|async_hooks)/.test(url)) {
    return 'node events, ticks, timers, async context (JS)';
  }
  if (url.includes('/shared/hbone/')) return 'ambit HBONE library (JS)';
  if (url.includes('/bench/')) return 'bench relay tool (JS)';
  return 'other JS';
}

/** Self time by category, as a share of the busy (non-idle) time. */
export function categories(profile: CpuProfile): { name: string; share: number }[] {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const micros = new Map<string, number>();
  let busy = 0;
  profile.samples.forEach((id, index) => {
    const node = byId.get(id);
    const delta = profile.timeDeltas[index + 1] ?? 0;
    if (!node || node.callFrame.functionName === '(idle)') return;
    const category = frameCategory(node);
    micros.set(category, (micros.get(category) ?? 0) + delta);
    busy += delta;
  });
  return [...micros].sort((a, b) => b[1] - a[1]).map(([name, value]) => ({ name, share: busy === 0 ? 0 : value / busy }));
}

/** Self time by frame, as a share of the busy (non-idle) time. */
export function topFrames(profile: CpuProfile, limit = TOP_FRAMES): { busyMs: number; frames: { name: string; ms: number; share: number }[] } {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const selfMicros = new Map<string, number>();
  let busy = 0;
  profile.samples.forEach((id, index) => {
    const node = byId.get(id);
    const delta = profile.timeDeltas[index + 1] ?? 0;
    if (!node || node.callFrame.functionName === '(idle)') return;
    const name = frameName(node);
    selfMicros.set(name, (selfMicros.get(name) ?? 0) + delta);
    busy += delta;
  });
  const frames = [...selfMicros]
    .sort((a, b) => b[1] - a[1])
    .slice(0, limit)
    .map(([name, micros]) => ({ name, ms: micros / 1e3, share: busy === 0 ? 0 : micros / busy }));
  return { busyMs: busy / 1e3, frames };
}

/** A markdown summary of every profile in `directory`; also written to `<directory>/summary.md`. */
export function summarizeProfiles(directory: string): string {
  const files = readdirSync(directory).filter((file) => file.endsWith('.cpuprofile')).sort();
  if (files.length === 0) return 'No CPU profiles were written (did the relays run?).';
  const sections = files.map((file) => {
    const profile = JSON.parse(readFileSync(path.join(directory, file), 'utf8')) as CpuProfile;
    const { busyMs, frames } = topFrames(profile);
    return [
      `### ${file} (busy ${(busyMs / 1e3).toFixed(1)} s)`,
      '',
      '| self % | category |',
      '|---:|---|',
      ...categories(profile).map((category) => `| ${(category.share * 100).toFixed(1)} | ${category.name} |`),
      '',
      `Top ${frames.length} frames by self time:`,
      '',
      '| self % | self ms | frame |',
      '|---:|---:|---|',
      ...frames.map((frame) => `| ${(frame.share * 100).toFixed(1)} | ${frame.ms.toFixed(0)} | ${frame.name.replaceAll('|', '\\|')} |`),
    ].join('\n');
  });
  const summary = `## CPU profiles of our relays\n\n${sections.join('\n\n')}\n`;
  writeFileSync(path.join(directory, 'summary.md'), summary);
  return summary;
}
