/**
 * The CNI_* environment a container runtime (containerd via libcni) gives a plugin for a Kubernetes pod, as the
 * CNI plugin tests run the ambit-cni executable with it.
 */
export function cniEnvironment(command: string, pod: { namespace: string; name?: string }, overrides: Record<string, string> = {}): NodeJS.ProcessEnv {
  const name = pod.name ?? 'web';
  return {
    PATH: process.env.PATH,
    CNI_COMMAND: command,
    CNI_CONTAINERID: 'c0ffee',
    CNI_NETNS: '/run/netns/ambit-test-web',
    CNI_IFNAME: 'eth0',
    CNI_PATH: '/usr/lib/cni',
    CNI_ARGS: `IgnoreUnknown=1;K8S_POD_NAMESPACE=${pod.namespace};K8S_POD_NAME=${name};K8S_POD_INFRA_CONTAINER_ID=c0ffee;K8S_POD_UID=uid-${pod.namespace}`,
    ...overrides,
  };
}
