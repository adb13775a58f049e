/**
 * The settings an operator may change when installing ambit, their defaults, and their Helm names.
 *
 * Owns: the shape of the install's values (the same tree as the Helm chart's values.yaml), the defaults, and the
 * placeholder values from which the chart's templates are made (each leaf becomes `{{ .Values.<path> }}`).
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
