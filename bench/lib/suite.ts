/**
 * What a benchmark suite is, and what it hands back: tables of figures with goals checked against anchors from
 * the same run. bench/run.ts runs suites; each suite lives in bench/suites/<name>.ts.
 *
 * Owns: the suite contract. Must not know about: any particular suite.
 */
import type { BenchCertificates } from './certs.ts';
import type { ProcessGroup } from './processes.ts';

export interface SuiteContext {
  /** Smaller sizes and fewer repetitions: a smoke run. */
  quick: boolean;
  /** The run's temp directory (configs, certificates, logs); removed at the end. */
  runDir: string;
  /** Every process the suite starts goes through this group; the runner stops it even on error. */
  processes: ProcessGroup;
  certs: BenchCertificates;
  /** When set, our relays run with --cpu-prof and write their profiles here. */
  profileDir?: string;
  /** Progress line on stderr. */
  log(message: string): void;
}

export interface Goal {
  /** What is compared, e.g. "throughput, 1 stream: HBONE ÷ stunnel". */
  name: string;
  /** The measured ratio (undefined when it could not be measured). */
  value: number | undefined;
  /** The target as text, e.g. "≥ 1.0x". */
  target: string;
  met: boolean | undefined;
  /** Word after the ratio in the table, e.g. "cheaper" for a goal stated as "10x cheaper". */
  phrase?: string;
}

export interface Table {
  title: string;
  columns: string[];
  rows: string[][];
  /** Lines printed under the table: how to read it, what failed. */
  notes: string[];
}

export interface SuiteResult {
  suite: string;
  tables: Table[];
  goals: Goal[];
  /** Every raw figure, for the JSON file and for later comparison between runs. */
  data: unknown;
}

export interface Suite {
  name: string;
  summary: string;
  run(context: SuiteContext): Promise<SuiteResult>;
}
