/**
 * The wire contract between the CNI plugin (cni/) and the node agent (agent/): HTTP/1.1 over a unix socket.
 *
 * Owns: paths, request/response shapes and the timeout both sides agree on.
 * Must not know about: how either side does its job (CNI chaining, iptables, listeners).
 *
 *   POST /v1/pod-add  PodAddRequest -> 200 PodAddResponse; any other status -> ProtocolErrorResponse
 *   POST /v1/pod-del  PodDelRequest -> 200 (body ignored); any other status -> ProtocolErrorResponse
 *   POST /v1/pod-gc   PodGcRequest -> 200 PodGcResponse (CNI GC: forget every pod whose sandbox is not listed)
 *   POST /v1/status   {} -> 200 AgentStatusResponse once the agent serves ADDs (CNI STATUS)
 *   POST /v1/cni-call a whole CNI call from the native ambit-cni forwarder (cni/native/forwarder.c): the body is
 *                     the CNI_* environment as NAME=VALUE entries each ended by NUL, an empty entry, then the stdin
 *                     config; -> 200 with the plugin's stdout as body and its exit code in the `ambit-cni-exit`
 *                     header; 421 when the config names another agent's socket or a pod source (cluster
 *                     directory, kubeconfig) the agent does not see (the forwarder then runs the Node plugin)
 */

/** Where the agent listens unless the plugin config's `agentSocket` says otherwise. */
export const DEFAULT_AGENT_SOCKET = '/var/run/ambit/cni.sock';

export const POD_ADD_PATH = '/v1/pod-add';
export const POD_DEL_PATH = '/v1/pod-del';
/**
 * Best-effort notice of a pod that is not enrolled (same body as pod-add): the agent remembers its namespace so it
 * can capture the running pod if its namespace or pod label later enrolls it (Istio's ambient does the same).
 */
export const POD_SEEN_PATH = '/v1/pod-seen';
/** A best-effort notice must never hold up a pod that needs no capture. */
export const POD_SEEN_TIMEOUT_MS = 1000;
export const POD_GC_PATH = '/v1/pod-gc';
export const STATUS_PATH = '/v1/status';
export const CNI_CALL_PATH = '/v1/cni-call';
/** The plugin's exit code in a cni-call answer (lower case: the forwarder matches it case-insensitively anyway). */
export const CNI_CALL_EXIT_HEADER = 'ambit-cni-exit';

/**
 * The whole budget of one ADD (pod lookup with its retries, then the agent call), not of each step: the agent acks
 * ADD only after the pod's rules and listeners are in place (a few hundred ms even on a busy node); 10 s leaves room
 * for a slow node while staying well under the container runtime's own CNI timeout, so the runtime sees our error,
 * not its own.
 */
export const AGENT_CALL_TIMEOUT_MS = 10_000;
/**
 * DEL is best effort (it always succeeds; a pod whose namespace is gone is forgotten by the agent anyway), so a
 * frozen agent must not hold it up: containerd calls DEL two or three times per pod, and once more after a failed
 * ADD before it reports the failure. The agent answers once the pod's release is queued (a few ms) and releases after
 * the answer (agent/pod-releases.ts).
 */
export const POD_DEL_TIMEOUT_MS = 2000;
/**
 * STATUS runs every few seconds (kubelet asks the runtime every 5 s): an answering agent replies at once; one that
 * has not answered in 1 s is not ready to serve an ADD either.
 */
export const STATUS_TIMEOUT_MS = 1000;
/** GC walks every known pod; the agent releases the stale ones before it answers. */
export const POD_GC_TIMEOUT_MS = 5000;

export interface PodAddRequest {
  podName: string;
  podNamespace: string;
  podUid: string;
  containerId: string;
  /** Path of the pod's network namespace, e.g. /run/netns/<name> or /proc/<pid>/ns/net. */
  netns: string;
  /** The pod's IP addresses without prefix length, e.g. ["10.1.0.5"]. */
  ips: string[];
}

export interface PodAddResponse {
  captured: true;
}

export interface PodDelRequest {
  podName: string;
  podNamespace: string;
  podUid: string;
  containerId: string;
  /** May be empty: container runtimes call DEL a second time without a namespace. */
  netns: string;
}

export interface PodGcRequest {
  /** The sandboxes (CNI_CONTAINERID of their ADD) still attached to the network: every other pod is forgotten. */
  validContainerIds: string[];
}

export interface PodGcResponse {
  /** `<namespace>/<name>` of each pod the agent released or forgot. */
  forgotten: string[];
}

export interface AgentStatusResponse {
  ready: true;
}

export interface ProtocolErrorResponse {
  error: string;
}
