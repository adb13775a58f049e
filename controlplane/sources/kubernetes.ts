/**
 * The Kubernetes source: one @kubernetes/client-node ListWatch (the informer machinery) per watched kind:
 * Namespaces, Nodes, Pods, Services, EndpointSlices, Gateways, AuthorizationPolicies, PeerAuthentications,
 * HTTPRoutes, GRPCRoutes, RequestAuthentications and ambit's LocalRateLimitPolicies.
 *
 * Owns: the list/watch per kind (watches ask for bookmarks, so a reconnect resumes from a recent
 * resourceVersion), restarting a stopped watch with exponential backoff (resuming from the last
 * resourceVersion, so no event is lost; a 410 Gone makes the informer relist, and the relist's deletions and
 * changes arrive as events), and feeding the store, which drops anything already applied (same resourceVersion).
 * The initial lists of every kind reach the store as one batch, so the first push is computed once.
 * Must not know about: the model, xDS.
 */
import {
  CoreV1Api,
  CustomObjectsApi,
  DiscoveryV1Api,
  ListWatch,
  Watch,
  type KubeConfig,
  type KubernetesListObject,
  type KubernetesObject,
} from '@kubernetes/client-node';
import type { K8sObject } from '../../shared/k8s/objects.ts';
import type { ObjectStore, SourceEvent } from '../store.ts';
import type { ConfigSource, SourceProblem } from './source.ts';

/** First delay before restarting a failed list/watch; doubled per failure. */
export const WATCH_RESTART_INITIAL_BACKOFF_MS = 200;
/** Cap on that delay: a recovered API server is noticed within this long. */
export const WATCH_RESTART_MAX_BACKOFF_MS = 30_000;

interface KindDescriptor {
  kind: string;
  apiVersion: string;
  /** Cluster-wide list/watch path. */
  path: string;
  list: (apis: Apis) => Promise<KubernetesListObject<KubernetesObject>>;
  /** A CRD that may not be installed: its absence is reported, not fatal. */
  optional?: boolean;
}

interface Apis {
  core: CoreV1Api;
  discovery: DiscoveryV1Api;
  custom: CustomObjectsApi;
}

function custom(group: string, version: string, plural: string) {
  return (apis: Apis) => apis.custom.listClusterCustomObject({ group, version, plural }) as Promise<KubernetesListObject<KubernetesObject>>;
}

/** In dependency order: an object's namespace and waypoint arrive before it in the first batch. */
export const WATCHED_RESOURCES: KindDescriptor[] = [
  { kind: 'Namespace', apiVersion: 'v1', path: '/api/v1/namespaces', list: (apis) => apis.core.listNamespace() },
  { kind: 'Node', apiVersion: 'v1', path: '/api/v1/nodes', list: (apis) => apis.core.listNode() },
  { kind: 'Gateway', apiVersion: 'gateway.networking.k8s.io/v1', path: '/apis/gateway.networking.k8s.io/v1/gateways', list: custom('gateway.networking.k8s.io', 'v1', 'gateways'), optional: true },
  { kind: 'Service', apiVersion: 'v1', path: '/api/v1/services', list: (apis) => apis.core.listServiceForAllNamespaces() },
  { kind: 'EndpointSlice', apiVersion: 'discovery.k8s.io/v1', path: '/apis/discovery.k8s.io/v1/endpointslices', list: (apis) => apis.discovery.listEndpointSliceForAllNamespaces() },
  { kind: 'Pod', apiVersion: 'v1', path: '/api/v1/pods', list: (apis) => apis.core.listPodForAllNamespaces() },
  { kind: 'AuthorizationPolicy', apiVersion: 'security.istio.io/v1', path: '/apis/security.istio.io/v1/authorizationpolicies', list: custom('security.istio.io', 'v1', 'authorizationpolicies'), optional: true },
  { kind: 'PeerAuthentication', apiVersion: 'security.istio.io/v1', path: '/apis/security.istio.io/v1/peerauthentications', list: custom('security.istio.io', 'v1', 'peerauthentications'), optional: true },
  // Routes for waypoints (GAMMA); the control plane writes their status back.
  { kind: 'HTTPRoute', apiVersion: 'gateway.networking.k8s.io/v1', path: '/apis/gateway.networking.k8s.io/v1/httproutes', list: custom('gateway.networking.k8s.io', 'v1', 'httproutes'), optional: true },
  { kind: 'GRPCRoute', apiVersion: 'gateway.networking.k8s.io/v1', path: '/apis/gateway.networking.k8s.io/v1/grpcroutes', list: custom('gateway.networking.k8s.io', 'v1', 'grpcroutes'), optional: true },
  { kind: 'RequestAuthentication', apiVersion: 'security.istio.io/v1', path: '/apis/security.istio.io/v1/requestauthentications', list: custom('security.istio.io', 'v1', 'requestauthentications'), optional: true },
  { kind: 'LocalRateLimitPolicy', apiVersion: 'policy.ambit.dev/v1alpha1', path: '/apis/policy.ambit.dev/v1alpha1/localratelimitpolicies', list: custom('policy.ambit.dev', 'v1alpha1', 'localratelimitpolicies'), optional: true },
  { kind: 'DestinationRule', apiVersion: 'networking.istio.io/v1', path: '/apis/networking.istio.io/v1/destinationrules', list: custom('networking.istio.io', 'v1', 'destinationrules'), optional: true },
  { kind: 'VirtualService', apiVersion: 'networking.istio.io/v1', path: '/apis/networking.istio.io/v1/virtualservices', list: custom('networking.istio.io', 'v1', 'virtualservices'), optional: true },
];

/** client-node's Watch, asking the API server for bookmarks (the informer itself does not). */
class BookmarkingWatch extends Watch {
  override watch(path: string, queryParams: Record<string, unknown>, callback: (phase: string, apiObj: unknown, watchObj?: unknown) => void, done: (err: unknown) => void): Promise<AbortController> {
    return super.watch(path, { ...queryParams, allowWatchBookmarks: true }, callback, done);
  }
}

export interface KubernetesSourceOptions {
  kubeConfig: KubeConfig;
  store: ObjectStore;
  onProblem?: (problem: SourceProblem) => void;
  /** Restrict to these kinds (tests); default all of WATCHED_RESOURCES. */
  kinds?: string[];
  initialBackoffMs?: number;
}

interface Watcher {
  descriptor: KindDescriptor;
  informer: ListWatch<KubernetesObject>;
  backoffMs: number;
  restartTimer: NodeJS.Timeout | undefined;
}

export class KubernetesSource implements ConfigSource {
  readonly #options: KubernetesSourceOptions;
  readonly #onProblem: (problem: SourceProblem) => void;
  readonly #watchers: Watcher[] = [];
  /** While starting, events are held and applied as one batch. */
  #pending: SourceEvent[] | undefined = [];
  #stopped = false;

  constructor(options: KubernetesSourceOptions) {
    this.#options = options;
    this.#onProblem = options.onProblem ?? (() => {});
  }

  async start(): Promise<void> {
    const apis: Apis = {
      core: this.#options.kubeConfig.makeApiClient(CoreV1Api),
      discovery: this.#options.kubeConfig.makeApiClient(DiscoveryV1Api),
      custom: this.#options.kubeConfig.makeApiClient(CustomObjectsApi),
    };
    const watch = new BookmarkingWatch(this.#options.kubeConfig);
    const descriptors = WATCHED_RESOURCES.filter((descriptor) => !this.#options.kinds || this.#options.kinds.includes(descriptor.kind));
    for (const descriptor of descriptors) {
      const informer = new ListWatch<KubernetesObject>(descriptor.path, watch, () => descriptor.list(apis), false);
      const watcher: Watcher = { descriptor, informer, backoffMs: this.#initialBackoff(), restartTimer: undefined };
      informer.on('add', (object) => this.#emit('upsert', descriptor, object));
      informer.on('update', (object) => this.#emit('upsert', descriptor, object));
      informer.on('delete', (object) => this.#emit('delete', descriptor, object));
      informer.on('connect', () => {
        if (watcher.backoffMs !== this.#initialBackoff()) this.#onProblem({ kind: descriptor.kind, message: 'watch reconnected' });
      });
      // A ListWatch stops after an error other than 410 Gone: restart it, resuming from its resourceVersion.
      informer.on('error', (error: unknown) => this.#restartLater(watcher, error));
      this.#watchers.push(watcher);
    }
    for (const watcher of this.#watchers) {
      try {
        await watcher.informer.start();
      } catch (error) {
        this.#restartLater(watcher, error);
      }
    }
    const initial = this.#pending ?? [];
    this.#pending = undefined;
    if (initial.length > 0) this.#options.store.apply(initial);
  }

  stop(): void {
    this.#stopped = true;
    for (const watcher of this.#watchers) {
      clearTimeout(watcher.restartTimer);
      void watcher.informer.stop();
    }
  }

  #initialBackoff(): number {
    return this.#options.initialBackoffMs ?? WATCH_RESTART_INITIAL_BACKOFF_MS;
  }

  #emit(type: 'upsert' | 'delete', descriptor: KindDescriptor, object: KubernetesObject): void {
    if (this.#stopped) return;
    // List items carry no kind/apiVersion; watch events do. The store keys objects by kind.
    const typed = { ...object, kind: descriptor.kind, apiVersion: object.apiVersion ?? descriptor.apiVersion } as K8sObject;
    const event: SourceEvent = { type, object: typed };
    if (this.#pending) this.#pending.push(event);
    else this.#options.store.apply([event]);
    // Any event means the stream works again.
    const watcher = this.#watchers.find((entry) => entry.descriptor === descriptor);
    if (watcher) watcher.backoffMs = this.#initialBackoff();
  }

  #restartLater(watcher: Watcher, error: unknown): void {
    if (this.#stopped) return;
    const status = (error as { statusCode?: number; code?: number }).statusCode ?? (error as { code?: number }).code;
    const message = (error as Error).message ?? String(error);
    const absent = status === 404 && watcher.descriptor.optional;
    this.#onProblem({
      kind: watcher.descriptor.kind,
      message: absent
        ? `${watcher.descriptor.path} is not served (is the CRD installed?); retrying in ${watcher.backoffMs} ms`
        : `list/watch failed: ${message}; retrying in ${watcher.backoffMs} ms`,
    });
    clearTimeout(watcher.restartTimer);
    const delay = watcher.backoffMs;
    watcher.backoffMs = Math.min(watcher.backoffMs * 2, WATCH_RESTART_MAX_BACKOFF_MS);
    watcher.restartTimer = setTimeout(() => {
      if (this.#stopped) return;
      watcher.informer.start().catch((restartError: unknown) => this.#restartLater(watcher, restartError));
    }, delay);
  }
}
