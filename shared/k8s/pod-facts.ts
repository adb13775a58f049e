/**
 * Facts about a Pod that istiod derives for the workload API, shared by the control plane's model and the agent's
 * cluster-directory source so both say the same thing:
 *  - health: UNHEALTHY while the pod is being deleted (deletionTimestamp) or not Ready, as istiod sends it;
 *  - workload name: the owning controller's name, as istiod's deploy metadata gives it (a ReplicaSet's
 *    `<deployment>-<pod-template-hash>` becomes the Deployment name, a CronJob's Job `<cronjob>-<schedule time>`
 *    the CronJob name), else the pod's own name.
 *  - a Service port's target port on the pod: a number, or a named container port the pod declares.
 *
 * Owns: those derivations. Must not know about: the workload API's encoding, stores, the mesh state.
 */
import type { PodObject } from './objects.ts';

interface OwnerReference {
  kind?: string;
  name?: string;
  controller?: boolean;
}

interface PodCondition {
  type?: string;
  status?: string;
}

/**
 * False while the pod is being deleted, or not Ready. A pod whose status carries no conditions at all counts as
 * Ready once Running: the local runtime does not model readiness probes (a kubelet always reports the condition).
 */
export function podReady(pod: PodObject): boolean {
  if ((pod.metadata as { deletionTimestamp?: string }).deletionTimestamp) return false;
  const conditions = (pod.status as { conditions?: PodCondition[] } | undefined)?.conditions;
  if (!conditions || conditions.length === 0) return pod.status?.phase === 'Running';
  return conditions.some((condition) => condition.type === 'Ready' && condition.status === 'True');
}

/** A Job created by a CronJob is named `<cronjob>-<scheduled time in minutes>`. */
const CRONJOB_SUFFIX = /-\d+$/;

export function podWorkloadName(pod: PodObject): string {
  const owners = (pod.metadata as { ownerReferences?: OwnerReference[] }).ownerReferences ?? [];
  const owner = owners.find((reference) => reference.controller) ?? owners[0];
  if (!owner?.name) return pod.metadata.name;
  if (owner.kind === 'ReplicaSet') {
    const hash = pod.metadata.labels?.['pod-template-hash'];
    if (hash && owner.name.endsWith(`-${hash}`)) return owner.name.slice(0, -hash.length - 1);
    return owner.name;
  }
  if (owner.kind === 'Job' && CRONJOB_SUFFIX.test(owner.name)) return owner.name.replace(CRONJOB_SUFFIX, '');
  return owner.name;
}

/**
 * A service port's target on `pod`: the target port when it is a number, the container port of that name when it
 * is a name, the service port itself when none is given; undefined when the pod declares no port of that name (istiod
 * leaves such an endpoint port out).
 */
export function podTargetPort(targetPort: number | string | undefined, servicePort: number, pod: PodObject): number | undefined {
  if (targetPort === undefined || targetPort === '') return servicePort;
  if (typeof targetPort === 'number') return targetPort;
  if (/^\d+$/.test(targetPort)) return Number(targetPort);
  for (const container of pod.spec?.containers ?? []) {
    const ports = (container as { ports?: { name?: string; containerPort?: number }[] }).ports;
    const port = ports?.find((entry) => entry.name === targetPort);
    if (port?.containerPort) return port.containerPort;
  }
  return undefined;
}
