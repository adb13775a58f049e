/**
 * The local runtime's errors: one class, a stable `code` to branch on, a message a person can act on.
 *
 * Owns: the catalogue of runtime failures. Must not know about: where they are raised.
 */

export type RuntimeErrorCode =
  | 'COMMAND_FAILED'
  | 'CNI_PLUGIN_FAILED'
  | 'AGENT_NOT_READY'
  | 'NO_AGENT_COMMAND'
  | 'POD_EXISTS'
  | 'NO_SUCH_NODE'
  | 'BAD_OPTIONS'
  | 'CLUSTER_DESTROYED'
  | 'SERVICE_IP_REFUSED'
  | 'SERVICE_INVALID'
  | 'CLUSTER_DNS_NOT_READY';

/** A CNI plugin's error result as printed on its stdout (spec "Error" section). */
export interface CniErrorOutput {
  cniVersion?: string;
  code: number;
  msg: string;
  details?: string;
}

export class RuntimeError extends Error {
  readonly code: RuntimeErrorCode;
  constructor(code: RuntimeErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'RuntimeError';
    this.code = code;
  }
}

/** A CNI plugin refused ADD/DEL; carries the plugin's own spec error so callers can assert on its code. */
export class CniPluginError extends RuntimeError {
  readonly plugin: string;
  readonly command: string;
  readonly cniError: CniErrorOutput;
  readonly stderr: string;
  constructor(plugin: string, command: string, cniError: CniErrorOutput, stderr: string) {
    super('CNI_PLUGIN_FAILED', `CNI plugin ${plugin} ${command} failed (code ${cniError.code}): ${cniError.msg}${cniError.details ? ` (${cniError.details})` : ''}`);
    this.name = 'CniPluginError';
    this.plugin = plugin;
    this.command = command;
    this.cniError = cniError;
    this.stderr = stderr;
  }
}
