/**
 * What every ambitctl command gets and offers.
 *
 * Owns: the command interface. Must not know about: any one command.
 */
import type { AdminTarget } from './admin-client.ts';
import type { OutputFormat } from './output.ts';

export interface CommandContext {
  target: AdminTarget;
  output: OutputFormat;
  /** `-n/--namespace`: only this namespace's objects (table and documents alike). */
  namespace: string | undefined;
  /** `--cluster-dir`: the YAML directory the control plane reads in local mode (authz check). */
  clusterDir: string | undefined;
  rootNamespace: string | undefined;
  trustDomain: string | undefined;
  /** Arguments after the command name. */
  args: string[];
  write(text: string): void;
}

export interface Command {
  name: string;
  usage: string;
  summary: string;
  run(context: CommandContext): Promise<void>;
}
