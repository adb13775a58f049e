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
  /** `--method`, `--path`, `--header` (repeatable): authz check of an HTTP request through a waypoint. */
  httpRequest?: { method: string | undefined; path: string | undefined; headers: string[] };
  /** Command-specific flags (`--name`, `--for`, `--kubeconfig`, `--run-dir`), as given. */
  flags: Readonly<Record<string, string | undefined>>;
  /** Arguments after the command name. */
  args: string[];
  write(text: string): void;
}

export interface Command {
  name: string;
  usage: string;
  summary: string;
  /**
   * Exit code for any failure of this command (default: 2 for usage, 1 otherwise). `authz check` uses 2 for every
   * failure, so that 1 means only "denied".
   */
  failureExitCode?: number;
  /** Resolves with the exit code (default 0). */
  run(context: CommandContext): Promise<number | void>;
}
