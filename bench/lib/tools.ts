/**
 * How the harness starts its own Node tools (bench/tools/*.ts): with this Node, type stripping, and, when
 * profiling, `--cpu-prof` into the run's profile directory under the tool's role name.
 *
 * Owns: the command line of a tool process. Must not know about: what the tools do.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const TOOLS_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'tools');

export interface ToolCommand {
  command: string;
  args: string[];
}

/** `node <tool> ...args`; with `profileDir`, the process writes `<profileDir>/<role>.cpuprofile` on exit. */
export function nodeTool(tool: string, args: readonly string[], profile?: { dir: string; role: string }): ToolCommand {
  const flags = ['--no-warnings=ExperimentalWarning'];
  if (profile) flags.push('--cpu-prof', `--cpu-prof-dir=${profile.dir}`, `--cpu-prof-name=${profile.role}.cpuprofile`);
  return { command: process.execPath, args: [...flags, path.join(TOOLS_DIR, tool), ...args] };
}
