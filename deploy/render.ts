/**
 * Everything an operator applies, as objects and as YAML: the plain manifests (deploy/manifests/) and the Helm
 * chart (deploy/helm/ambit/) are both made from here by generate.ts, so they cannot drift apart.
 *
 * Owns: which objects make an install, their order (what others refer to first), and the YAML text.
 * Must not know about: any one object's content (agent.ts, controlplane.ts, rbac.ts, crds.ts).
 */
import { Namespace } from 'kubernetes-models/v1/Namespace';
import { stringify } from 'yaml';
import { agentObjects } from './agent.ts';
import { controlPlaneObjects } from './controlplane.ts';
import { ambitCrdObjects, crdObjects, istioCrdObjects } from './crds.ts';
import { rbacObjects } from './rbac.ts';
import type { InstallValues } from './values.ts';

export interface KubernetesObject {
  apiVersion: string;
  kind: string;
  metadata?: { name?: string; namespace?: string };
  validate(): void;
}

/** The install without CRDs and without the Namespace (Helm creates the release's namespace). */
export function installObjects(values: InstallValues): KubernetesObject[] {
  return [...rbacObjects(values), ...controlPlaneObjects(values), ...agentObjects(values)];
}

export function namespaceObject(values: InstallValues): KubernetesObject {
  return new Namespace({ metadata: { name: values.namespace } });
}

export { ambitCrdObjects, crdObjects, istioCrdObjects };

/** Multi-document YAML, one object per document, with a header saying where it comes from. */
export function toYaml(objects: readonly KubernetesObject[], header: string): string {
  const documents = objects.map((object) => stringify(JSON.parse(JSON.stringify(object)), { lineWidth: 0 }));
  return `${header
    .split('\n')
    .map((line) => `# ${line}`.trimEnd())
    .join('\n')}\n---\n${documents.join('---\n')}`;
}
