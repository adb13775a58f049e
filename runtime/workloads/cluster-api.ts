/**
 * The Kubernetes API of a local mesh (runtime/api-server/ serves it), wired to the one source of truth: the user's
 * manifest directory. Reads show the cluster as it runs: the cluster state directory the control plane reads
 * (Namespaces, Pods with the status the runtime and the agents wrote, Services with their cluster IPs, every other
 * object), the directory's Deployments with replica counts, the nodes, and each container's ready flag and
 * restarts. A write is an edit of the directory, a document replaced, removed or added as a file of its own, that
 * the supervisor then applies as it applies a hand edit; if it refuses the edit (a document it cannot run), the
 * edit is undone and the client gets 422 with the reason, so kubectl and an editor can never disagree about the
 * cluster. Status written through the status subresource (the control plane's, in Kubernetes mode) is kept in
 * memory and shown on the object.
 *
 * Owns: the view fed to the API server's store, the mapping of API writes to directory edits, the kubeconfig file.
 * Must not know about: HTTP (the API server), how pods are made or how the directory is planned (the supervisor).
 */
import { watch, type FSWatcher } from 'node:fs';
import path from 'node:path';
import { objectSource, readClusterDir, type ClusterDirParseCache } from '../../shared/k8s/cluster-dir.ts';
import type { K8sObject } from '../../shared/k8s/objects.ts';
import { makeServingCredentials, writeKubeconfig } from '../api-server/credentials.ts';
import { ApiError, notFound } from '../api-server/errors.ts';
import { VersionedObjectStore } from '../api-server/object-store.ts';
import type { ApiResource } from '../api-server/resources.ts';
import { LocalApiServer, type ClusterWrites } from '../api-server/server.ts';
import { containerLogFile } from './containers.ts';
import type { LocalPodState, LocalState } from './local-state.ts';
import { addDocumentFile, findDocument, removeDocument, replaceDocument, type Undo } from './manifest-files.ts';

/** Changes in the directories come in bursts (a file written, renamed, a pod's status): read once they settle. */
const REFRESH_DEBOUNCE_MS = 100;
/** A slow re-read in case a watch event was missed (inotify queue overflow, a directory made after the watch). */
const REFRESH_INTERVAL_MS = 2_000;
const API_HOST = '127.0.0.1';

export function kubeconfigFile(runDir: string): string {
  return path.join(runDir, 'kubeconfig');
}

/** The control plane's kubeconfig: the same API, reached inside the fabric namespace where it runs. */
export function controlPlaneKubeconfigFile(runDir: string): string {
  return path.join(runDir, 'kubeconfig-controlplane');
}

export interface ClusterApiOptions {
  /** The user's manifest directory: the source of truth, where writes go. */
  userDir: string;
  /** The cluster state directory (what the control plane reads). */
  clusterDir: string;
  runDir: string;
  logDir: string;
  pods(): readonly LocalPodState[];
  nodes(): LocalState['nodes'];
  /**
   * Applies the user directory as it is now, as the supervisor applies a hand edit; resolves with the problems that
   * made it refuse the change (empty: applied, pods made or deleted).
   */
  apply(): Promise<string[]>;
  /**
   * Deletes one of a Deployment's pods, which its Deployment replaces under a new name (`kubectl delete pod` on a
   * replica, as in a cluster).
   */
  deleteReplica?(namespace: string, name: string): Promise<unknown>;
  /** Also serve in this network namespace (path) on this address, for the control plane, and write its kubeconfig. */
  controlPlaneIn?: { netns: string; address: string };
}

type Loose = K8sObject & { spec?: Record<string, unknown>; status?: Record<string, unknown> };

function keyOf(object: K8sObject): string {
  return `${object.kind}/${object.metadata?.namespace ?? ''}/${object.metadata?.name}`;
}

/** The container statuses a kubelet reports, from what the supervisor knows of the pod's processes. */
function withContainerStatuses(pod: Loose, state: LocalPodState | undefined): K8sObject {
  if (state === undefined) return pod;
  const waiting = state.phase === 'Waiting';
  const containerStatuses = state.containers.map((name, index) => ({
    name,
    image: state.images[index] ?? '',
    ready: state.ready,
    restartCount: index === 0 ? state.restarts : 0,
    started: state.phase === 'Running',
    state: state.phase === 'Running' ? { running: {} } : waiting ? { waiting: { reason: 'CrashLoopBackOff' } } : state.phase === 'Pending' ? { waiting: { reason: 'ContainerCreating' } } : { terminated: { exitCode: state.phase === 'Succeeded' ? 0 : 1 } },
  }));
  return {
    ...pod,
    status: {
      ...pod.status,
      // "Waiting" is the runtime's restart back-off, which a kubelet reports as a Running pod with a waiting container.
      ...(waiting ? { phase: 'Running', reason: 'CrashLoopBackOff' } : {}),
      containerStatuses,
    },
  };
}

function deploymentWithStatus(deployment: Loose, pods: readonly K8sObject[]): K8sObject {
  const name = deployment.metadata?.name;
  const owned = pods.filter((pod) => {
    const owner = (pod.metadata as { ownerReferences?: { kind?: string; name?: string }[] } | undefined)?.ownerReferences?.[0];
    return pod.metadata?.namespace === (deployment.metadata?.namespace || 'default') && owner?.kind === 'ReplicaSet' && owner.name === `${name}-${pod.metadata?.labels?.['pod-template-hash']}`;
  });
  const ready = owned.filter((pod) => ((pod.status as { containerStatuses?: { ready?: boolean }[] } | undefined)?.containerStatuses ?? []).every((status) => status.ready === true)).length;
  return { ...deployment, status: { replicas: owned.length, updatedReplicas: owned.length, readyReplicas: ready, availableReplicas: ready } };
}

function nodeObject(node: LocalState['nodes'][number]): K8sObject {
  return {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: { name: node.name, labels: { 'kubernetes.io/hostname': node.name, 'kubernetes.io/os': 'linux' } },
    status: { conditions: [{ type: 'Ready', status: 'True' }], nodeInfo: { kubeletVersion: 'ambit-local' } },
  };
}

/** An object as the view shows it, reduced to what a user's file would hold (a runtime-made Namespace written out). */
function asUserObject(object: K8sObject): K8sObject {
  const { uid: _uid, resourceVersion: _version, creationTimestamp: _created, ...metadata } = object.metadata as Record<string, unknown>;
  const { status: _status, ...rest } = object;
  return { ...rest, metadata: metadata as K8sObject['metadata'] };
}

/** JSON with object keys sorted: two specs that differ only in key order are the same spec. */
function canonical(value: unknown): string {
  return JSON.stringify(value, (_key, inner: unknown) =>
    typeof inner === 'object' && inner !== null && !Array.isArray(inner) ? Object.fromEntries(Object.entries(inner).sort(([a], [b]) => a.localeCompare(b))) : inner,
  );
}

/**
 * A Pod's spec cannot change through the API, as a cluster's API server refuses it (labels and annotations can: the
 * runtime updates the running pod in place). Editing the pod's file is how to have it made again with a new spec.
 */
function refuseImmutablePodChange(current: K8sObject, next: K8sObject): void {
  if (current.kind !== 'Pod' || canonical(current.spec ?? {}) === canonical(next.spec ?? {})) return;
  const source = objectSource(current);
  throw new ApiError(
    'Invalid',
    `Pod "${current.metadata?.name}" is invalid: spec: Forbidden: pod updates may not change fields other than metadata.labels and metadata.annotations in the local cluster${source ? `; edit ${source.file} to have the pod made again with the new spec` : ''}`,
  );
}

export class ClusterApi {
  readonly kubeconfigFile: string;
  readonly store = new VersionedObjectStore();
  readonly #options: ClusterApiOptions;
  readonly #clusterCache: ClusterDirParseCache = new Map();
  readonly #userCache: ClusterDirParseCache = new Map();
  readonly #watchers: FSWatcher[] = [];
  /**
   * Status written through the API (the control plane's Accepted conditions, route parents) by `Kind/ns/name`:
   * kept here, not in the user's files (status is the controller's, not the user's), for as long as the object is.
   */
  readonly #statuses = new Map<string, Record<string, unknown>>();
  #server: LocalApiServer | undefined;
  #timer: NodeJS.Timeout | undefined;
  #debounce: NodeJS.Timeout | undefined;
  #refreshing: Promise<void> = Promise.resolve();
  #writing: Promise<unknown> = Promise.resolve();

  private constructor(options: ClusterApiOptions) {
    this.#options = options;
    this.kubeconfigFile = kubeconfigFile(options.runDir);
  }

  get url(): string {
    return this.#server!.url;
  }

  /** Serves the API on 127.0.0.1 (any free port) and writes the kubeconfig (0600) into the run directory. */
  static async start(options: ClusterApiOptions): Promise<ClusterApi> {
    const api = new ClusterApi(options);
    await api.refresh();
    const inside = options.controlPlaneIn;
    const credentials = await makeServingCredentials([API_HOST, ...(inside ? [inside.address] : [])]);
    api.#server = await LocalApiServer.start({ store: api.store, writes: api.#writes(), credentials, host: API_HOST, ...(inside ? { alsoIn: { netns: inside.netns, host: inside.address } } : {}) });
    await writeKubeconfig(api.kubeconfigFile, api.#server.url, credentials);
    if (api.#server.inNamespaceUrl !== undefined) await writeKubeconfig(controlPlaneKubeconfigFile(options.runDir), api.#server.inNamespaceUrl, credentials);
    for (const dir of [options.clusterDir, options.userDir]) {
      api.#watchers.push(watch(dir, { recursive: true }, () => api.#scheduleRefresh()).on('error', () => undefined));
    }
    api.#timer = setInterval(() => api.#scheduleRefresh(), REFRESH_INTERVAL_MS);
    return api;
  }

  async close(): Promise<void> {
    if (this.#timer !== undefined) clearInterval(this.#timer);
    if (this.#debounce !== undefined) clearTimeout(this.#debounce);
    for (const watcher of this.#watchers) watcher.close();
    await this.#server?.close();
  }

  #scheduleRefresh(): void {
    if (this.#debounce !== undefined) return;
    this.#debounce = setTimeout(() => {
      this.#debounce = undefined;
      this.refresh().catch(() => undefined);
    }, REFRESH_DEBOUNCE_MS);
  }

  /** Re-reads the cluster and feeds the store; refreshes run one at a time. */
  refresh(): Promise<void> {
    this.#refreshing = this.#refreshing.catch(() => undefined).then(async () => this.store.replaceAll(await this.#view()));
    return this.#refreshing;
  }

  async #view(): Promise<K8sObject[]> {
    const cluster = await readClusterDir(this.#options.clusterDir, this.#clusterCache);
    const user = await readClusterDir(this.#options.userDir, this.#userCache);
    const states = new Map(this.#options.pods().map((pod) => [`${pod.namespace}/${pod.name}`, pod]));
    const objects = new Map<string, K8sObject>();
    for (const object of cluster.objects) {
      const shown =
        object.kind === 'Pod'
          ? withContainerStatuses(object, states.get(`${object.metadata?.namespace || 'default'}/${object.metadata?.name}`))
          : object.kind === 'Namespace'
            ? { ...object, status: { phase: 'Active' } }
            : object;
      const written = this.#statuses.get(keyOf(shown));
      objects.set(keyOf(shown), written === undefined ? shown : { ...shown, status: { ...(shown.status as Record<string, unknown> | undefined), ...written } });
    }
    for (const key of this.#statuses.keys()) if (!objects.has(key)) this.#statuses.delete(key);
    const pods = [...objects.values()].filter((object) => object.kind === 'Pod');
    for (const object of user.objects) {
      if (object.kind !== 'Deployment') continue;
      const deployment = { ...object, metadata: { ...object.metadata, namespace: object.metadata?.namespace || 'default' } };
      objects.set(keyOf(deployment), deploymentWithStatus(deployment, pods));
    }
    for (const node of this.#options.nodes()) objects.set(`Node//${node.name}`, nodeObject(node));
    return [...objects.values()];
  }

  /** Runs one write at a time: each edits the directory, has it applied, and undoes it if refused. */
  #serialised<T>(write: () => Promise<T>): Promise<T> {
    const next = this.#writing.catch(() => undefined).then(write);
    this.#writing = next;
    return next;
  }

  async #commit(undo: Undo): Promise<void> {
    const problems = await this.#options.apply();
    if (problems.length > 0) {
      await undo();
      await this.#options.apply();
      throw new ApiError('Invalid', `the local cluster refused the change: ${problems.join('; ')}`);
    }
    await this.refresh();
  }

  /** The user's document for an object, or for a runtime-made Namespace a new one; anything else the runtime made is refused. */
  async #editable(resource: ApiResource, namespace: string | undefined, name: string): Promise<{ object: K8sObject; write: (object: K8sObject) => Promise<Undo> }> {
    const ref = await findDocument(this.#options.userDir, resource.kind, resource.namespaced ? namespace : undefined, name);
    if (ref !== undefined) return { object: ref.object, write: (object) => replaceDocument(ref, object) };
    const live = this.store.get(resource, namespace, name);
    if (live === undefined) throw notFound(resource.plural, name);
    if (resource.kind === 'Namespace') return { object: asUserObject(live), write: (object) => addDocumentFile(this.#options.userDir, object, false) };
    const owner = (live.metadata as { ownerReferences?: { kind?: string; name?: string }[] }).ownerReferences?.[0];
    if (resource.kind === 'Pod' && owner?.kind === 'ReplicaSet') {
      const deployment = owner.name?.replace(/-[^-]+$/, '');
      throw new ApiError('MethodNotAllowed', `pod ${namespace}/${name} belongs to Deployment ${namespace}/${deployment}: edit or scale the Deployment (in ${this.#options.userDir}) instead`);
    }
    throw new ApiError('MethodNotAllowed', `${resource.kind} ${namespace ? `${namespace}/` : ''}${name} is written by the local runtime, not by a file in ${this.#options.userDir}, and cannot be changed`);
  }

  #writes(): ClusterWrites {
    const { userDir } = this.#options;
    const stored = (resource: ApiResource, object: K8sObject): K8sObject => this.store.get(resource, object.metadata?.namespace, object.metadata!.name!) ?? object;
    return {
      create: (resource, object, dryRun) =>
        this.#serialised(async () => {
          if (dryRun) return object;
          await this.#commit(await addDocumentFile(userDir, object, resource.namespaced));
          return stored(resource, object);
        }),
      update: (resource, namespace, name, object, dryRun) =>
        this.#serialised(async () => {
          const target = await this.#editable(resource, namespace, name);
          refuseImmutablePodChange(target.object, object);
          if (dryRun) return object;
          await this.#commit(await target.write(object));
          return stored(resource, object);
        }),
      patch: (resource, namespace, name, change, dryRun) =>
        this.#serialised(async () => {
          const target = await this.#editable(resource, namespace, name);
          const next = change(structuredClone(target.object));
          refuseImmutablePodChange(target.object, next);
          if (dryRun) return next;
          await this.#commit(await target.write(next));
          return stored(resource, { ...next, metadata: { ...next.metadata, namespace } });
        }),
      // Not queued behind the user's writes (an apply that makes pods takes seconds): it edits no file.
      setStatus: async (resource, namespace, name, status) => {
        const key = `${resource.kind}/${resource.namespaced ? (namespace ?? '') : ''}/${name}`;
        if (status === undefined) this.#statuses.delete(key);
        else this.#statuses.set(key, status as Record<string, unknown>);
        await this.refresh();
        const stored = this.store.get(resource, namespace, name);
        if (stored === undefined) throw notFound(resource.plural, name);
        return stored;
      },
      remove: (resource, namespace, name, dryRun) =>
        this.#serialised(async () => {
          const live = this.store.get(resource, namespace, name);
          if (live === undefined) throw notFound(resource.plural, name);
          if (resource.kind === 'Namespace') throw new ApiError('MethodNotAllowed', `deleting a namespace is not supported by the local cluster: delete the objects in ${name} (or their files in ${userDir})`);
          const ref = await findDocument(userDir, resource.kind, resource.namespaced ? namespace : undefined, name);
          const owner = (live.metadata as { ownerReferences?: { kind?: string }[] } | undefined)?.ownerReferences?.[0];
          if (ref === undefined && resource.kind === 'Pod' && owner?.kind === 'ReplicaSet' && this.#options.deleteReplica !== undefined) {
            if (dryRun) return live;
            await this.#options.deleteReplica(namespace!, name);
            await this.refresh();
            return live;
          }
          if (ref === undefined) await this.#editable(resource, namespace, name); // throws the reason it cannot go
          if (dryRun) return live;
          await this.#commit(await removeDocument(ref!));
          return live;
        }),
      containerLogFile: async (namespace, pod, container) => {
        const state = this.#options.pods().find((candidate) => candidate.namespace === namespace && candidate.name === pod);
        if (state === undefined) throw notFound('pods', pod);
        const name = container ?? state.containers[0]!;
        if (!state.containers.includes(name)) throw new ApiError('BadRequest', `container ${name} is not valid for pod ${pod}`);
        return containerLogFile(this.#options.logDir, namespace, pod, name);
      },
      podExists: (namespace, pod) => this.#options.pods().some((candidate) => candidate.namespace === namespace && candidate.name === pod),
    };
  }
}
