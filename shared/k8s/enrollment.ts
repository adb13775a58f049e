/**
 * Decides whether a pod's traffic is captured by the mesh, with Istio ambient's rules and label names.
 *
 * Owns: the enrollment rule and the reason given for each outcome (shown in logs and by ambitctl).
 * Must not know about: how capture is done, or where pods and namespaces come from.
 */
import type { NamespaceObject, PodObject } from './objects.ts';

export const DATAPLANE_MODE_LABEL = 'istio.io/dataplane-mode';
export const DATAPLANE_MODE_AMBIENT = 'ambient';
export const DATAPLANE_MODE_NONE = 'none';
/** The container name Istio's sidecar injector adds. */
export const SIDECAR_CONTAINER_NAME = 'istio-proxy';
/** The annotation Istio's sidecar injector sets on injected pods. */
export const SIDECAR_STATUS_ANNOTATION = 'sidecar.istio.io/status';
/**
 * The annotation the node agent sets on a pod once its traffic is captured (Istio's CNI node agent does the same).
 * istiod sends a workload with tunnel_protocol HBONE only when it is set: peers tunnel to the pod only once its
 * 15008 listener exists.
 */
export const REDIRECTION_ANNOTATION = 'ambient.istio.io/redirection';
export const REDIRECTION_ENABLED = 'enabled';

/** The pod is captured now (the node agent said so with the redirection annotation). */
export function isRedirected(pod: PodObject): boolean {
  return pod.metadata.annotations?.[REDIRECTION_ANNOTATION] === REDIRECTION_ENABLED;
}

export interface CaptureDecision {
  capture: boolean;
  reason: string;
}

/** Istio ambient's rule, checked in the same order as istio-cni's: exclusions first, then opt-out, then opt-in. */
export function captureDecision(pod: PodObject, namespace: NamespaceObject | undefined): CaptureDecision {
  if (pod.spec?.hostNetwork === true) {
    return { capture: false, reason: 'pod uses the host network' };
  }
  if (pod.spec?.containers?.some((container) => container.name === SIDECAR_CONTAINER_NAME)) {
    return { capture: false, reason: `pod has a sidecar (container ${SIDECAR_CONTAINER_NAME})` };
  }
  if (pod.metadata.annotations?.[SIDECAR_STATUS_ANNOTATION] !== undefined) {
    return { capture: false, reason: `pod has a sidecar (annotation ${SIDECAR_STATUS_ANNOTATION})` };
  }
  const podMode = pod.metadata.labels?.[DATAPLANE_MODE_LABEL];
  if (podMode === DATAPLANE_MODE_NONE) {
    return { capture: false, reason: `pod label ${DATAPLANE_MODE_LABEL}=${DATAPLANE_MODE_NONE} opts out` };
  }
  if (podMode === DATAPLANE_MODE_AMBIENT) {
    return { capture: true, reason: `pod label ${DATAPLANE_MODE_LABEL}=${DATAPLANE_MODE_AMBIENT}` };
  }
  if (namespace?.metadata.labels?.[DATAPLANE_MODE_LABEL] === DATAPLANE_MODE_AMBIENT) {
    return { capture: true, reason: `namespace label ${DATAPLANE_MODE_LABEL}=${DATAPLANE_MODE_AMBIENT}` };
  }
  return { capture: false, reason: `neither the pod nor its namespace has ${DATAPLANE_MODE_LABEL}=${DATAPLANE_MODE_AMBIENT}` };
}
