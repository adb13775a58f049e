/**
 * Names the deploy objects share with the programs that look for them: change one here and the test that
 * cross-checks the programs (test/unit/deploy-manifests.test.ts) says what else must change.
 *
 * Owns: object names, labels, paths inside the containers, and the image's layout.
 * Must not know about: the objects themselves.
 */
export const AGENT = 'ambit-agent';
export const CONTROLPLANE = 'ambit-controlplane';
/** The app label every ambit object carries, plus a component label per program. */
export const PART_OF = 'ambit';

/** Where the image keeps the repository (package.json, node_modules, agent/, cni/, ...); node is on PATH. */
export const IMAGE_APP_DIR = '/opt/ambit';
/** Host directories as the installer container sees them. */
export const HOST_MOUNT = '/host';
/** The agent's CNI socket and captured-pods record: a host directory, so the plugin on the host reaches the socket. */
export const AGENT_RUN_DIR = '/var/run/ambit';
/** Where container runtimes (containerd, CRI-O) keep pods' network namespaces; CNI_NETNS points here. */
export const NETNS_DIR = '/var/run/netns';
/** The host's /proc/sys/net in the agent container (AMBIT_PROC_SYS_NET): the container's own /proc/sys is read-only. */
export const HOST_PROC_SYS_NET = '/host/proc/sys/net';
/** The mesh root (ConfigMap istio-ca-root-cert) in the agent container. */
export const ROOT_CERT_DIR = '/var/run/secrets/istio';
/** The agent's projected service account token, which the control plane checks with a TokenReview. */
export const TOKEN_DIR = '/var/run/secrets/tokens';
export const TOKEN_FILE_NAME = 'ambit-agent';

export function labels(component: string): Record<string, string> {
  return { app: component, 'app.kubernetes.io/name': component, 'app.kubernetes.io/part-of': PART_OF };
}

export function image(hub: string, tag: string): string {
  return `${hub}/ambit:${tag}`;
}
