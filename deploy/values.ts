/**
 * The settings an operator may change when installing ambit, their defaults, and their Helm names.
 *
 * Owns: the shape of the install's values (the same tree as the Helm chart's values.yaml), the defaults, their
 * JSON schema (the chart's values.schema.json: Helm refuses an install whose values do not match it, naming the
 * value), and the placeholder values from which the chart's templates are made (each leaf becomes
 * `{{ .Values.<path> }}`).
 * Must not know about: which object uses which value (agent.ts, controlplane.ts, rbac.ts).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';

/** Every leaf is a string, so a template placeholder can stand in for any of them. */
export interface InstallValues {
  /** Where ambit's control plane, agents and CA secret live (istiod's namespace). */
  namespace: string;
  /** Image registry and tag: the image is `<hub>/ambit:<tag>`, one image for every program. */
  hub: string;
  tag: string;
  /** SPIFFE trust domain of workload identities. */
  trustDomain: string;
  logLevel: string;
  agent: {
    /** Data-plane threads per agent; empty: one per two cores (set it to match a CPU limit). */
    workerThreads: string;
    cpuRequest: string;
    memoryRequest: string;
    memoryLimit: string;
  };
  cni: {
    /** The node's CNI directories, as the container runtime sees them. */
    binDir: string;
    confDir: string;
    /** Where the plugin's Node runtime is copied on the node. */
    runtimeDir: string;
  };
  controlplane: {
    cpuRequest: string;
    memoryRequest: string;
    memoryLimit: string;
  };
}

const packageJson = JSON.parse(readFileSync(path.join(import.meta.dirname, '..', 'package.json'), 'utf8')) as { version: string };

export const DEFAULT_VALUES: InstallValues = {
  namespace: 'istio-system',
  hub: 'ghcr.io/ambit-mesh',
  tag: packageJson.version,
  trustDomain: 'cluster.local',
  logLevel: 'info',
  agent: { workerThreads: '', cpuRequest: '200m', memoryRequest: '256Mi', memoryLimit: '1Gi' },
  cni: { binDir: '/opt/cni/bin', confDir: '/etc/cni/net.d', runtimeDir: '/opt/ambit-cni' },
  controlplane: { cpuRequest: '500m', memoryRequest: '512Mi', memoryLimit: '2Gi' },
};

type Tree = { [key: string]: string | Tree };

/** The values with every leaf replaced by its Helm reference; the namespace is the release's, as Helm charts do. */
export function helmPlaceholderValues(values: InstallValues = DEFAULT_VALUES): InstallValues {
  const walk = (node: Tree, prefix: string): Tree =>
    Object.fromEntries(Object.entries(node).map(([key, value]) => [key, typeof value === 'string' ? `{{ .Values.${prefix}${key} }}` : walk(value, `${prefix}${key}.`)]));
  return { ...(walk(values as unknown as Tree, '') as unknown as InstallValues), namespace: '{{ .Release.Namespace }}' };
}

/** values.yaml's content: the defaults without the namespace (Helm's --namespace decides it). */
export function helmValues(values: InstallValues = DEFAULT_VALUES): Omit<InstallValues, 'namespace'> {
  const { namespace: _namespace, ...rest } = values;
  return rest;
}

/** A Kubernetes resource quantity (`200m`, `1Gi`, `0.5`): the API server's own pattern (IoK8sApimachineryPkgApiResourceQuantity). */
const QUANTITY = '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$';
/** An absolute path on the node. */
const ABSOLUTE_PATH = '^/';

/** values.schema.json: every value typed and checked, unknown values refused (a misspelt key is not silently ignored). */
export function helmValuesSchema(): Record<string, unknown> {
  const string = (description: string, pattern?: string) => ({ type: 'string', description, ...(pattern ? { pattern } : {}) });
  const object = (properties: Record<string, unknown>) => ({ type: 'object', additionalProperties: false, required: Object.keys(properties), properties });
  const root = {
    $schema: 'http://json-schema.org/draft-07/schema#',
    title: 'ambit Helm chart values',
    ...object({
      hub: string('image registry: the image is <hub>/ambit:<tag>', '^[^\\s]+$'),
      tag: string('image tag', '^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$'),
      trustDomain: string('SPIFFE trust domain of workload identities', '^[a-z0-9._-]+$'),
      logLevel: { type: 'string', enum: ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'], description: 'agents and control plane' },
      agent: object({
        workerThreads: string('data-plane threads per agent (AMBIT_WORKER_THREADS); empty: one per two cores, at most 4', '^([1-9][0-9]?)?$'),
        cpuRequest: string('agent CPU request', QUANTITY),
        memoryRequest: string('agent memory request', QUANTITY),
        memoryLimit: string('agent memory limit', QUANTITY),
      }),
      cni: object({
        binDir: string("the node's CNI bin directory", ABSOLUTE_PATH),
        confDir: string("the node's CNI config directory", ABSOLUTE_PATH),
        runtimeDir: string("where the plugin's Node runtime is copied on the node", ABSOLUTE_PATH),
      }),
      controlplane: object({
        cpuRequest: string('control plane CPU request', QUANTITY),
        memoryRequest: string('control plane memory request', QUANTITY),
        memoryLimit: string('control plane memory limit', QUANTITY),
      }),
    }),
  };
  // Helm hands every chart a `global` map (shared with subcharts when ambit is one): allowed, not required.
  return { ...root, properties: { ...root.properties, global: { type: 'object', description: 'values shared with a parent chart' } } };
}
