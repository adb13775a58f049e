/**
 * The CNI_* environment a container runtime (containerd via libcni) gives a plugin for a Kubernetes pod, as the
 * CNI plugin tests run the ambit-cni executable with it.
 */
import type { ExecutionContext } from 'ava';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { namespaceObject, writeNamespace, writePod } from '../../runtime/cluster-store.ts';

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

/** A temp dir with a cluster directory of namespace `mesh` (enrolled) and `plain`, each with pod `web`, and where the agent's socket goes. */
export interface CniFixture {
  dir: string;
  clusterDir: string;
  socket: string;
}

export async function cniFixture(t: ExecutionContext, prefix: string): Promise<CniFixture> {
  const dir = await mkdtemp(path.join(os.tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const clusterDir = path.join(dir, 'cluster');
  await writeNamespace(clusterDir, namespaceObject('mesh', { 'istio.io/dataplane-mode': 'ambient' }));
  await writeNamespace(clusterDir, namespaceObject('plain', {}));
  for (const namespace of ['mesh', 'plain']) {
    await writePod(clusterDir, { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web', namespace, uid: `uid-${namespace}` }, spec: { containers: [{ name: 'app' }] } });
  }
  return { dir, clusterDir, socket: path.join(dir, 'cni.sock') };
}
