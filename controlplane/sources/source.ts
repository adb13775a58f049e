/**
 * What every source of cluster objects (a YAML directory, the Kubernetes API) offers the control plane.
 *
 * Owns: the source interface and the problem report shape. Must not know about: any particular source.
 */

export interface SourceProblem {
  /** File and 1-based line/column for the YAML directory; absent for API sources. */
  file?: string;
  line?: number;
  column?: number;
  kind?: string;
  name?: string;
  message: string;
}

export interface ConfigSource {
  /** Starts watching; resolves once the initial state is in the store (the control plane's readiness). */
  start(): Promise<void>;
  stop(): void;
}

export function formatProblem(problem: SourceProblem): string {
  const where = problem.file ? `${problem.file}${problem.line ? `:${problem.line}${problem.column ? `:${problem.column}` : ''}` : ''}: ` : '';
  const what = problem.kind ? `${problem.kind}${problem.name ? ` ${problem.name}` : ''}: ` : '';
  return `${where}${what}${problem.message}`;
}
