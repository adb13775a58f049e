/**
 * Parses and validates the network configuration the runtime passes on stdin.
 *
 * Owns: our own fields (`type`, `agentSocket`, `clusterDir` | `kubeconfig`, `logLevel`, `logFile`,
 * `statusRequiresAgent`) and the spec's (`cniVersion`, `name`, `prevResult`, GC's `cni.dev/valid-attachments`). Fields other chained plugins set are tolerated and ignored: the
 * runtime hands every plugin the whole network's settings.
 * Must not know about: environment variables, the agent, or how pods are looked up.
 */
import path from 'node:path';
import { DEFAULT_AGENT_SOCKET } from '../shared/cni-protocol.ts';
import { CniError, CniErrorCode } from './errors.ts';

export const PLUGIN_TYPE = 'ambit-cni';
/** What we implement (1.1.0) plus the older versions chained configs still declare for ADD/DEL/VERSION. */
export const SUPPORTED_CNI_VERSIONS = ['0.3.0', '0.3.1', '0.4.0', '1.0.0', '1.1.0'] as const;
/** CHECK was added in spec 0.4.0; older configs must not receive it. */
export const CHECK_MIN_VERSIONS = new Set(['0.4.0', '1.0.0', '1.1.0']);
/** STATUS and GC were added in spec 1.1.0. */
export const STATUS_GC_MIN_VERSIONS = new Set(['1.1.0']);
/**
 * Result versions a result labelled with the key may be re-labelled as: 1.1.0 only added optional result fields
 * (interface MTU, socketPath and pciID, route MTU/table/scope...), so a 1.0.0 result is a valid 1.1.0 one. Never
 * the other way: a 1.1.0 result may hold fields a 1.0.0 reader does not know.
 */
export const RESULT_RELABEL_TO = new Map([['1.0.0', new Set(['1.1.0'])]]);
/** GC's list of the attachments still in use (spec 1.1.0). */
export const VALID_ATTACHMENTS_KEY = 'cni.dev/valid-attachments';
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
/** Quiet by default: the runtime keeps plugin stderr only on failure, and failures are logged at warn/error. */
export const DEFAULT_LOG_LEVEL: LogLevel = 'info';

export type PodSource = { mode: 'local'; clusterDir: string } | { mode: 'kubernetes'; kubeconfig: string };

export interface PluginConfig {
  cniVersion: string;
  name: string;
  agentSocket: string;
  podSource: PodSource;
  logLevel: LogLevel;
  /** Log file path; stderr when absent. Never stdout: stdout is the CNI result. */
  logFile?: string;
  /** The previous plugin's result, as given (chained plugins pass it through unchanged). */
  prevResult?: Record<string, unknown>;
  /**
   * Whether STATUS reports "not available" (code 50) while the node agent does not answer (default true): the
   * runtime then reports the node's network not ready and no pod is scheduled there. False: STATUS always succeeds
   * and only enrolled pods fail, at their ADD (what Istio's plugin does, which implements no STATUS).
   */
  statusRequiresAgent: boolean;
  /** GC only: CNI_CONTAINERID of every attachment still in use (undefined when the key is absent). */
  validContainerIds?: string[];
}

function invalid(message: string): CniError {
  return new CniError(CniErrorCode.INVALID_NETWORK_CONFIG, `invalid ambit-cni network config: ${message}`);
}

function optionalString(raw: Record<string, unknown>, field: string): string | undefined {
  const value = raw[field];
  if (value === undefined) return undefined;
  if (typeof value !== 'string' || value === '') throw invalid(`"${field}" must be a non-empty string`);
  return value;
}

function absolutePath(raw: Record<string, unknown>, field: string): string | undefined {
  const value = optionalString(raw, field);
  if (value !== undefined && !path.isAbsolute(value)) throw invalid(`"${field}" must be an absolute path, got "${value}"`);
  return value;
}

/** Only the version, for error results written before the rest of the config could be trusted. */
export function peekCniVersion(stdin: string): string | undefined {
  try {
    const raw: unknown = JSON.parse(stdin);
    const version = (raw as Record<string, unknown> | null)?.cniVersion;
    return typeof version === 'string' ? version : undefined;
  } catch {
    return undefined;
  }
}

export function parseConfig(stdin: string): PluginConfig {
  let raw: unknown;
  try {
    raw = JSON.parse(stdin);
  } catch (error) {
    throw new CniError(
      CniErrorCode.DECODING_FAILURE,
      `cannot decode the network config on stdin as JSON: ${(error as Error).message}`,
      stdin.length === 0 ? 'stdin was empty' : `first bytes: ${JSON.stringify(stdin.slice(0, 80))}`,
    );
  }
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw invalid('expected a JSON object');
  const config = raw as Record<string, unknown>;

  const cniVersion = config.cniVersion;
  if (typeof cniVersion !== 'string' || cniVersion === '') throw invalid('"cniVersion" is missing');
  if (!(SUPPORTED_CNI_VERSIONS as readonly string[]).includes(cniVersion)) {
    throw new CniError(
      CniErrorCode.INCOMPATIBLE_VERSION,
      `cniVersion "${cniVersion}" is not supported by ambit-cni, which supports ${SUPPORTED_CNI_VERSIONS.join(', ')}`,
    );
  }
  const name = optionalString(config, 'name');
  if (name === undefined) throw invalid('"name" (the network name) is missing');
  if (config.type !== PLUGIN_TYPE) throw invalid(`"type" must be "${PLUGIN_TYPE}", got ${JSON.stringify(config.type)}`);

  const agentSocket = absolutePath(config, 'agentSocket') ?? DEFAULT_AGENT_SOCKET;
  const clusterDir = absolutePath(config, 'clusterDir');
  const kubeconfig = absolutePath(config, 'kubeconfig');
  if (clusterDir !== undefined && kubeconfig !== undefined) {
    throw invalid('set either "clusterDir" (local mode) or "kubeconfig" (Kubernetes mode), not both');
  }
  let podSource: PodSource;
  if (clusterDir !== undefined) podSource = { mode: 'local', clusterDir };
  else if (kubeconfig !== undefined) podSource = { mode: 'kubernetes', kubeconfig };
  else throw invalid('set "clusterDir" (local mode: a directory of Pod/Namespace YAML) or "kubeconfig" (Kubernetes mode)');

  const logLevel = optionalString(config, 'logLevel') ?? DEFAULT_LOG_LEVEL;
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw invalid(`"logLevel" must be one of ${LOG_LEVELS.join(', ')}, got "${logLevel}"`);
  }
  const logFile = absolutePath(config, 'logFile');

  const prevResult = config.prevResult;
  if (prevResult !== undefined && (prevResult === null || typeof prevResult !== 'object' || Array.isArray(prevResult))) {
    throw invalid('"prevResult" must be an object (the previous plugin\'s result)');
  }
  const statusRequiresAgent = config.statusRequiresAgent ?? true;
  if (typeof statusRequiresAgent !== 'boolean') throw invalid('"statusRequiresAgent" must be true or false');
  const validContainerIds = parseValidAttachments(config[VALID_ATTACHMENTS_KEY]);
  return {
    cniVersion,
    name,
    statusRequiresAgent,
    ...(validContainerIds !== undefined ? { validContainerIds } : {}),
    agentSocket,
    podSource,
    logLevel: logLevel as LogLevel,
    ...(logFile !== undefined ? { logFile } : {}),
    ...(prevResult !== undefined ? { prevResult: prevResult as Record<string, unknown> } : {}),
  };
}

/** `[{"containerID": "...", "ifname": "eth0"}, ...]` -> the container ids (the agent knows a pod by its sandbox). */
function parseValidAttachments(raw: unknown): string[] | undefined {
  if (raw === undefined) return undefined;
  if (!Array.isArray(raw)) throw invalid(`"${VALID_ATTACHMENTS_KEY}" must be a list of {"containerID", "ifname"}`);
  return raw.map((entry: unknown, index) => {
    const containerId = (entry as Record<string, unknown> | null)?.containerID;
    if (typeof containerId !== 'string' || containerId === '') throw invalid(`"${VALID_ATTACHMENTS_KEY}"[${index}].containerID must be a non-empty string`);
    return containerId;
  });
}
