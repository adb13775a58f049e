/**
 * Kubernetes mode of the local mesh: the parts a cluster plays around ambit, wired to an API server instead of the
 * cluster directory and the bootstrap token file, as deploy/manifests/ambit.yaml runs ambit:
 *   - `kubectl apply` of the manifest: Namespace istio-system exists before the control plane starts;
 *   - the control plane Deployment: `--source kubernetes` with a kubeconfig, POD_NAMESPACE=istio-system and
 *     CA_TRUSTED_NODE_ACCOUNTS naming the agent's service account;
 *   - the kubelet for the agent DaemonSet: a projected token of istio-system/ambit-agent bound to the node, and
 *     ConfigMap istio-ca-root-cert (published by the control plane) mounted as root-cert.pem;
 *   - the installer's kubeconfig for ambit-cni (the plugin reads pods from the API server).
 *
 * Owns: the KubernetesApi seam, the files the kubelet would mount, the control plane's Kubernetes settings.
 * Must not know about: which API server answers (a real one or a test's stand-in), or what runs in pods.
 */
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { AGENT as AGENT_SERVICE_ACCOUNT, TOKEN_FILE_NAME } from '../deploy/names.ts';
import { ROOT_CONFIGMAP_KEY, ROOT_CONFIGMAP_NAME } from '../controlplane/ca/config.ts';
import { CONTROL_PLANE_TOKEN_AUDIENCE } from '../shared/ca/token-audience.ts';
import { namespaceObject, type ClusterObjectStore } from './cluster-store.ts';
import { RuntimeError } from './errors.ts';

/** The control plane's and the agents' namespace (POD_NAMESPACE of the control plane, where its CA Secret lives). */
export const CONTROL_PLANE_NAMESPACE = 'istio-system';
/** How long the control plane may take to publish the root ConfigMap after it says it serves. */
const ROOT_CONFIGMAP_TIMEOUT_MS = 10_000;
const ROOT_CONFIGMAP_POLL_MS = 50;

/** What the runtime needs from an API server to run the mesh as in a cluster. */
export interface KubernetesApi {
  /** A kubeconfig (YAML) for the control plane and the CNI plugins: its server must answer in the fabric and node namespaces. */
  kubeconfig: string;
  /** Where the cluster publishes its Namespace and Pod objects. */
  objects: ClusterObjectStore;
  /** The kubelet's TokenRequest: a token of service account `namespace/serviceAccount`, bound to a pod on `node`, for `audiences`. */
  requestToken(namespace: string, serviceAccount: string, node: string, audiences: string[]): Promise<string>;
  /** ConfigMap `namespace/name`'s data, undefined while it does not exist (what the kubelet mounts). */
  readConfigMap(namespace: string, name: string): Promise<Record<string, string> | undefined>;
}

/** Where the API server can listen: the fabric namespace (control plane) is reachable from every node (CNI plugins). */
export interface FabricEndpoint {
  netnsName: string;
  /** `/run/netns/<name>`, for opening a socket inside it. */
  netnsPath: string;
  /** The fabric's own address (the control plane's too: pick another port). */
  address: string;
}

export interface KubernetesMode {
  /** Called once the fabric has its address and before the control plane starts: bring up or point at the API server. */
  connect(fabric: FabricEndpoint): Promise<KubernetesApi>;
}

/**
 * One mesh's Kubernetes wiring: the files it writes live in `dir` (the kubeconfig, and per node what the kubelet
 * mounts into the agent pod).
 */
export class KubernetesWiring {
  readonly kubeconfigFile: string;
  readonly rootCertFile: string;
  readonly #dir: string;
  #api: KubernetesApi | undefined;

  constructor(dir: string) {
    this.#dir = dir;
    this.kubeconfigFile = path.join(dir, 'kubeconfig');
    this.rootCertFile = path.join(dir, ROOT_CONFIGMAP_NAME, ROOT_CONFIGMAP_KEY);
  }

  /** The cluster's object store: forwards to the API server once `connect` has run (no pod exists before). */
  readonly objectStore: ClusterObjectStore = {
    writeNamespace: (namespace) => this.#connected().objects.writeNamespace(namespace),
    writePod: (pod) => this.#connected().objects.writePod(pod),
    updatePodStatus: (pod, status) => this.#connected().objects.updatePodStatus(pod, status),
    removePod: (namespace, name) => this.#connected().objects.removePod(namespace, name),
    updatePodMetadata: (pod, change) => {
      const objects = this.#connected().objects;
      if (objects.updatePodMetadata === undefined) throw new RuntimeError('BAD_OPTIONS', 'the API server wiring cannot change a pod\'s metadata in place');
      return objects.updatePodMetadata(pod, change);
    },
  };

  /** Connects, writes the kubeconfig (0600: it holds a token) and creates the control plane's namespace. */
  async connect(mode: KubernetesMode, fabric: FabricEndpoint): Promise<void> {
    this.#api = await mode.connect(fabric);
    await mkdir(this.#dir, { recursive: true, mode: 0o700 });
    await writeFile(this.kubeconfigFile, this.#api.kubeconfig, { mode: 0o600 });
    await this.#api.objects.writeNamespace(namespaceObject(CONTROL_PLANE_NAMESPACE, {}));
  }

  /** The control plane Deployment's environment. */
  controlPlaneEnv(): Record<string, string> {
    return { POD_NAMESPACE: CONTROL_PLANE_NAMESPACE, CA_TRUSTED_NODE_ACCOUNTS: `system:serviceaccount:${CONTROL_PLANE_NAMESPACE}:${AGENT_SERVICE_ACCOUNT}` };
  }

  controlPlaneArgs(): string[] {
    // The agents here get no in-cluster API credentials (no kubelet mounts them), so they cannot annotate captured
    // pods: the control plane sends HBONE on enrollment instead of on istiod's redirection annotation.
    return ['--source', 'kubernetes', '--kubeconfig', this.kubeconfigFile, '--hbone-when', 'enrolled'];
  }

  tokenFile(node: string): string {
    return path.join(this.#dir, 'tokens', node, TOKEN_FILE_NAME);
  }

  /**
   * What the kubelet mounts into each node's agent pod: the root from ConfigMap istio-ca-root-cert (waiting until
   * the control plane published it) and a projected token bound to the node.
   */
  async mountAgentFiles(nodes: string[]): Promise<void> {
    const api = this.#connected();
    const deadline = Date.now() + ROOT_CONFIGMAP_TIMEOUT_MS;
    let rootCertPem: string | undefined;
    while ((rootCertPem = (await api.readConfigMap(CONTROL_PLANE_NAMESPACE, ROOT_CONFIGMAP_NAME))?.[ROOT_CONFIGMAP_KEY]) === undefined) {
      if (Date.now() > deadline) {
        throw new RuntimeError('AGENT_NOT_READY', `the control plane did not publish ConfigMap ${CONTROL_PLANE_NAMESPACE}/${ROOT_CONFIGMAP_NAME} within ${ROOT_CONFIGMAP_TIMEOUT_MS} ms: the agents have no root to trust`);
      }
      await new Promise((resolve) => setTimeout(resolve, ROOT_CONFIGMAP_POLL_MS));
    }
    await mkdir(path.dirname(this.rootCertFile), { recursive: true });
    await writeFile(this.rootCertFile, rootCertPem);
    for (const node of nodes) {
      // The DaemonSet's projected token: for the control plane's audience (istio-ca), as ztunnel's.
      const token = await api.requestToken(CONTROL_PLANE_NAMESPACE, AGENT_SERVICE_ACCOUNT, node, [CONTROL_PLANE_TOKEN_AUDIENCE]);
      await mkdir(path.dirname(this.tokenFile(node)), { recursive: true, mode: 0o700 });
      await writeFile(this.tokenFile(node), token, { mode: 0o600 });
    }
  }

  #connected(): KubernetesApi {
    if (this.#api === undefined) throw new RuntimeError('BAD_OPTIONS', 'Kubernetes mode: the API server is not connected yet (objects are published only after createLocalMesh started the control plane)');
    return this.#api;
  }
}
