/**
 * The policy library's catalogue of failures.
 *
 * Owns: one error class whose `code` callers branch on, and the list of problems (each with the field path a
 * user can find in their YAML) that makes a policy invalid.
 * Must not know about: who called (control plane, agent, ambitctl) or how the error is reported.
 */
export type PolicyErrorCode =
  /** The object breaks the CRD schema or Istio's validation rules: `problems` lists every finding. */
  | 'AMBIT_POLICY_INVALID'
  /** The YAML text of one document could not be parsed. */
  | 'AMBIT_POLICY_BAD_YAML'
  /** A compiled Authorization from xDS carries something this build cannot decode (bad address length, ...). */
  | 'AMBIT_POLICY_BAD_RESOURCE';

export interface PolicyProblem {
  /** Where in the object, in the form a person reads YAML: `spec.rules[0].from[0].source.principals[1]`. */
  path: string;
  /** What is wrong there, and when possible how to fix it. */
  message: string;
}

export class PolicyError extends Error {
  readonly code: PolicyErrorCode;
  /** `Kind namespace/name` of the object, when known. */
  readonly resource: string | undefined;
  readonly problems: readonly PolicyProblem[];

  constructor(code: PolicyErrorCode, resource: string | undefined, problems: readonly PolicyProblem[], options?: { cause?: unknown }) {
    const head = resource ? `${resource} is invalid` : 'invalid policy';
    const lines = problems.map((problem) => (problem.path ? `${problem.path}: ${problem.message}` : problem.message));
    super(lines.length === 1 ? `${head}: ${lines[0]}` : `${head}:\n  ${lines.join('\n  ')}`, options);
    this.name = 'PolicyError';
    this.code = code;
    this.resource = resource;
    this.problems = problems;
  }
}
