/**
 * Turns the store's Namespaces, Nodes, Pods, Services, EndpointSlices and Gateways into `istio.workload.Address`
 * resources in the xDS resource cache, incrementally: a change recomputes only the resources it can affect.
 *
 * Owns: the indexes that say what depends on what (pods by namespace, services by selector, endpoint slices by
 * service, objects by the waypoint they asked for), the dirty sets, and encoding each resource once.
 * Must not know about: sources, connections, gRPC; how a pod maps to a workload (workload.ts) or a service to a
 * service (service.ts).
 */
import type protobuf from 'protobufjs';
import type { NamespaceObject, PodObject } from '../../shared/k8s/objects.ts';
import { ADDRESS_TYPE_URL, messageType } from '../../shared/xds/protos.ts';
import type { ResourceCache } from '../xds/resource-cache.ts';
import type { ObjectStore, StoreChange } from '../store.ts';
import { namespaceOf, SERVICE_NAME_LABEL, type EndpointSliceObject, type GatewayObject, type ServiceObject } from './kube-types.ts';
import { workloadsFromEndpointSlice } from './endpoint-slice-workload.ts';
import { numericTargetPort, serviceFromKube, serviceResourceName } from './service.ts';
import { requestedWaypoint, waypointAddress, type WaypointLookup } from './waypoint.ts';
import { DEFAULT_CLUSTER_DOMAIN, DEFAULT_CLUSTER_ID, isTerminal, type HboneWhen, localityFromNodeLabels, workloadFromPod, type PortMessage } from './workload.ts';
import { podTargetPort } from '../../shared/k8s/pod-facts.ts';

/** Istio's root namespace: policies there apply mesh-wide. */
export const ROOT_NAMESPACE = 'istio-system';
/** Bound on podsOnNode's cache (one entry per node asked about): past it, the cache starts over. */
const MAX_CACHED_NODES = 10_000;

export interface AddressModelOptions {
  store: ObjectStore;
  cache: ResourceCache;
  trustDomain: string;
  clusterId?: string;
  clusterDomain?: string;
  /** When workloads are HBONE (workload.ts HboneWhen); istiod's `redirected` by default. */
  hboneWhen?: HboneWhen;
  /** Names of selector-scoped Authorization resources for a pod (from the policy compiler); none by default. */
  authorizationPoliciesFor?: (pod: PodObject) => string[];
}

function addToIndex<K, V>(index: Map<K, Set<V>>, key: K, value: V): void {
  let values = index.get(key);
  if (!values) {
    values = new Set();
    index.set(key, values);
  }
  values.add(value);
}

function removeFromIndex<K, V>(index: Map<K, Set<V>>, key: K, value: V): void {
  const values = index.get(key);
  if (!values) return;
  values.delete(value);
  if (values.size === 0) index.delete(key);
}

/**
 * The Service if it is one the mesh carries: an ExternalName Service is a DNS alias the cluster DNS answers, so, as
 * istiod, it is no Address resource and no pod backs it (its selector, if any, is ignored as Kubernetes does).
 */
function meshService(service: ServiceObject | undefined): ServiceObject | undefined {
  return service?.spec?.type === 'ExternalName' ? undefined : service;
}

function selectorOf(service: ServiceObject | undefined): Record<string, string> | undefined {
  const selector = service?.spec?.selector;
  return selector && Object.keys(selector).length > 0 ? selector : undefined;
}

function matches(selector: Record<string, string>, labels: Record<string, string> | undefined): boolean {
  if (!labels) return false;
  for (const key in selector) if (labels[key] !== selector[key]) return false;
  return true;
}

/** The one selector entry a service is indexed under (any entry works: a match needs all of them). */
function selectorIndexEntry(selector: Record<string, string>): string {
  const key = Object.keys(selector).sort()[0]!;
  return `${key}=${selector[key]}`;
}

export class AddressModel {
  readonly #store: ObjectStore;
  readonly #cache: ResourceCache;
  readonly #trustDomain: string;
  readonly #clusterId: string;
  readonly #clusterDomain: string;
  readonly #hboneWhen: HboneWhen;
  readonly #authorizationPoliciesFor: (pod: PodObject) => string[];
  readonly #addressType: protobuf.Type;
  readonly #waypointLookup: WaypointLookup;

  readonly #podsByNamespace = new Map<string, Set<string>>();
  readonly #podsByNode = new Map<string, Set<string>>();
  /** podsOnNode's answers while the store is unchanged: a burst of CSRs from one node asks the same question. */
  readonly #podsOnNodeCache = new Map<string, { version: number; pods: { namespace: string; serviceAccount: string }[] }>();
  readonly #servicesByNamespace = new Map<string, Set<string>>();
  /** namespace -> `label=value` -> services indexed under that selector entry. */
  readonly #servicesBySelectorEntry = new Map<string, Map<string, Set<string>>>();
  /** Selector-less services' pods, from their EndpointSlices' targetRefs: service -> pods, pod -> services. */
  readonly #endpointPodsByService = new Map<string, Set<string>>();
  readonly #endpointServicesByPod = new Map<string, Set<string>>();
  readonly #slicesByService = new Map<string, Set<string>>();
  /** Gateway key -> dependents (`pod:<key>` / `service:<key>`) that asked for it, found or not. */
  readonly #dependentsByWaypoint = new Map<string, Set<string>>();
  readonly #waypointByDependent = new Map<string, string>();
  /** Resource names we wrote, so a deleted or excluded object's resource is removed. */
  readonly #resourceNameByPod = new Map<string, string>();
  readonly #resourceNameByService = new Map<string, string>();
  /** EndpointSlice key -> resource names of the workloads made from its non-pod endpoints. */
  readonly #resourceNamesBySlice = new Map<string, Set<string>>();

  readonly #dirtyPods = new Set<string>();
  readonly #dirtyServices = new Set<string>();
  readonly #dirtySlices = new Set<string>();
  readonly #unsubscribe: () => void;

  constructor(options: AddressModelOptions) {
    this.#store = options.store;
    this.#cache = options.cache;
    this.#trustDomain = options.trustDomain;
    this.#clusterId = options.clusterId ?? DEFAULT_CLUSTER_ID;
    this.#clusterDomain = options.clusterDomain ?? DEFAULT_CLUSTER_DOMAIN;
    this.#hboneWhen = options.hboneWhen ?? 'redirected';
    this.#authorizationPoliciesFor = options.authorizationPoliciesFor ?? (() => []);
    this.#addressType = messageType('istio.workload.Address');
    this.#waypointLookup = {
      gateway: (namespace, name) => this.#store.get<GatewayObject>('Gateway', `${namespace}/${name}`),
      service: (namespace, name) => this.#store.get<ServiceObject>('Service', `${namespace}/${name}`),
      clusterDomain: this.#clusterDomain,
    };
    this.#cache.declareType(ADDRESS_TYPE_URL);
    this.#unsubscribe = this.#store.onChanges((changes) => this.apply(changes));
    // Objects already in the store (a source that started first).
    const initial: StoreChange[] = [];
    for (const kind of ['Namespace', 'Node', 'Service', 'EndpointSlice', 'Gateway', 'Pod']) {
      for (const key of this.#store.keys(kind)) initial.push({ type: 'upsert', kind, key, object: this.#store.get(kind, key)! });
    }
    if (initial.length > 0) this.apply(initial);
  }

  close(): void {
    this.#unsubscribe();
  }

  /** Marks what `changes` affect and recomputes it (synchronously). */
  apply(changes: StoreChange[]): void {
    for (const change of changes) this.#mark(change);
    this.#flush();
  }

  /** The namespace and service account of each pod scheduled on `node` (the CA's authorization question). */
  podsOnNode(node: string): readonly { namespace: string; serviceAccount: string }[] {
    const version = this.#store.changesApplied;
    const cached = this.#podsOnNodeCache.get(node);
    if (cached && cached.version === version) return cached.pods;
    const pods: { namespace: string; serviceAccount: string }[] = [];
    for (const key of this.#podsByNode.get(node) ?? []) {
      const pod = this.#store.get<PodObject>('Pod', key);
      if (pod && !isTerminal(pod)) pods.push({ namespace: namespaceOf(pod), serviceAccount: pod.spec?.serviceAccountName || 'default' });
    }
    if (this.#podsOnNodeCache.size > MAX_CACHED_NODES) this.#podsOnNodeCache.clear();
    this.#podsOnNodeCache.set(node, { version, pods });
    return pods;
  }

  /** Recomputes every workload (after a policy recompile, for example). */
  invalidateAllWorkloads(): void {
    for (const key of this.#store.keys('Pod')) this.#dirtyPods.add(key);
    this.#flush();
  }

  #mark(change: StoreChange): void {
    switch (change.kind) {
      case 'Pod': {
        const namespace = namespaceOf(change.object);
        if (change.type === 'delete') removeFromIndex(this.#podsByNamespace, namespace, change.key);
        else addToIndex(this.#podsByNamespace, namespace, change.key);
        const previousNode = (change.previous as PodObject | undefined)?.spec?.nodeName;
        if (previousNode) removeFromIndex(this.#podsByNode, previousNode, change.key);
        const node = (change.object as PodObject).spec?.nodeName;
        if (node && change.type !== 'delete') addToIndex(this.#podsByNode, node, change.key);
        this.#dirtyPods.add(change.key);
        break;
      }
      case 'Namespace': {
        for (const pod of this.#podsByNamespace.get(change.key) ?? []) this.#dirtyPods.add(pod);
        for (const service of this.#servicesByNamespace.get(change.key) ?? []) this.#dirtyServices.add(service);
        break;
      }
      case 'Service':
        this.#markService(change);
        break;
      case 'EndpointSlice':
        this.#markEndpointSlice(change);
        break;
      case 'Gateway':
        this.#markWaypointDependents(change.key);
        break;
      case 'Node':
        // Locality comes from the node's topology labels.
        for (const pod of this.#podsByNode.get(change.key) ?? []) this.#dirtyPods.add(pod);
        break;
      case 'AuthorizationPolicy':
      case 'PeerAuthentication': {
        const namespace = namespaceOf(change.object);
        const pods = namespace === ROOT_NAMESPACE ? this.#store.keys('Pod') : (this.#podsByNamespace.get(namespace) ?? []);
        for (const pod of pods) this.#dirtyPods.add(pod);
        break;
      }
      default:
        break;
    }
  }

  #markService(change: StoreChange): void {
    const namespace = namespaceOf(change.object);
    const previousSelector = selectorOf(change.previous as ServiceObject | undefined);
    const selector = change.type === 'delete' ? undefined : selectorOf(change.object as ServiceObject);
    const entries = this.#servicesBySelectorEntry.get(namespace) ?? new Map<string, Set<string>>();
    this.#servicesBySelectorEntry.set(namespace, entries);
    if (previousSelector) removeFromIndex(entries, selectorIndexEntry(previousSelector), change.key);
    if (selector) addToIndex(entries, selectorIndexEntry(selector), change.key);
    if (change.type === 'delete') removeFromIndex(this.#servicesByNamespace, namespace, change.key);
    else addToIndex(this.#servicesByNamespace, namespace, change.key);
    this.#dirtyServices.add(change.key);
    // Pods it selected or selects now list it (and its ports) in their services.
    for (const podKey of this.#podsByNamespace.get(namespace) ?? []) {
      const labels = this.#store.get<PodObject>('Pod', podKey)?.metadata.labels;
      if ((previousSelector && matches(previousSelector, labels)) || (selector && matches(selector, labels))) this.#dirtyPods.add(podKey);
    }
    for (const podKey of this.#endpointPodsByService.get(change.key) ?? []) this.#dirtyPods.add(podKey);
    // Its slices' non-pod endpoints are its workloads only while it exists without a selector.
    for (const sliceKey of this.#slicesByService.get(change.key) ?? []) this.#dirtySlices.add(sliceKey);
    // A waypoint's address may be the VIP of the Service named after its Gateway.
    this.#markWaypointDependents(change.key);
  }

  #markEndpointSlice(change: StoreChange): void {
    this.#dirtySlices.add(change.key);
    const namespace = namespaceOf(change.object);
    const previousName = change.previous?.metadata?.labels?.[SERVICE_NAME_LABEL];
    const serviceName = change.type === 'delete' ? undefined : change.object.metadata?.labels?.[SERVICE_NAME_LABEL];
    if (previousName && previousName !== serviceName) {
      // Relabelled or deleted (a delete's previous is the object): the service it named loses it.
      removeFromIndex(this.#slicesByService, `${namespace}/${previousName}`, change.key);
      this.#rebuildEndpointPods(`${namespace}/${previousName}`);
    }
    if (!serviceName) return;
    const serviceKey = `${namespace}/${serviceName}`;
    addToIndex(this.#slicesByService, serviceKey, change.key);
    this.#rebuildEndpointPods(serviceKey);
  }

  /** Rebuilds `serviceKey`'s endpoint pods (its slices' Pod targetRefs) and marks the pods that gained or lost it. */
  #rebuildEndpointPods(serviceKey: string): void {
    const before = this.#endpointPodsByService.get(serviceKey) ?? new Set<string>();
    const after = new Set<string>();
    for (const sliceKey of this.#slicesByService.get(serviceKey) ?? []) {
      const slice = this.#store.get<EndpointSliceObject>('EndpointSlice', sliceKey);
      for (const endpoint of slice?.endpoints ?? []) {
        const ref = endpoint.targetRef;
        if (ref?.kind === 'Pod' && ref.name) after.add(`${ref.namespace || namespaceOf(slice!)}/${ref.name}`);
      }
    }
    for (const podKey of before) if (!after.has(podKey)) removeFromIndex(this.#endpointServicesByPod, podKey, serviceKey);
    for (const podKey of after) addToIndex(this.#endpointServicesByPod, podKey, serviceKey);
    if (after.size > 0) this.#endpointPodsByService.set(serviceKey, after);
    else this.#endpointPodsByService.delete(serviceKey);
    for (const podKey of new Set([...before, ...after])) this.#dirtyPods.add(podKey);
  }

  #markWaypointDependents(gatewayKey: string): void {
    for (const dependent of this.#dependentsByWaypoint.get(gatewayKey) ?? []) {
      if (dependent.startsWith('pod:')) this.#dirtyPods.add(dependent.slice(4));
      else this.#dirtyServices.add(dependent.slice(8));
    }
  }

  #trackWaypoint(dependent: string, gatewayKey: string | undefined): void {
    const previous = this.#waypointByDependent.get(dependent);
    if (previous === gatewayKey) return;
    if (previous) removeFromIndex(this.#dependentsByWaypoint, previous, dependent);
    if (gatewayKey) {
      addToIndex(this.#dependentsByWaypoint, gatewayKey, dependent);
      this.#waypointByDependent.set(dependent, gatewayKey);
    } else {
      this.#waypointByDependent.delete(dependent);
    }
  }

  #flush(): void {
    for (const key of this.#dirtyServices) this.#recomputeService(key);
    this.#dirtyServices.clear();
    for (const key of this.#dirtySlices) this.#recomputeSlice(key);
    this.#dirtySlices.clear();
    for (const key of this.#dirtyPods) this.#recomputePod(key);
    this.#dirtyPods.clear();
  }

  #encode(address: object): Uint8Array {
    return this.#addressType.encode(address).finish();
  }

  #recomputeService(key: string): void {
    const service = meshService(this.#store.get<ServiceObject>('Service', key));
    const previousName = this.#resourceNameByService.get(key);
    if (!service) {
      if (previousName) this.#cache.delete(ADDRESS_TYPE_URL, previousName);
      this.#resourceNameByService.delete(key);
      this.#trackWaypoint(`service:${key}`, undefined);
      return;
    }
    const namespace = namespaceOf(service);
    const namespaceObject = this.#store.get<NamespaceObject>('Namespace', namespace);
    const gatewayKey = requestedWaypoint(service.metadata.labels, namespace, namespaceObject);
    this.#trackWaypoint(`service:${key}`, gatewayKey);
    const waypoint = gatewayKey ? waypointAddress(gatewayKey, 'service', this.#waypointLookup) : undefined;
    const name = serviceResourceName(service, this.#clusterDomain);
    if (previousName && previousName !== name) this.#cache.delete(ADDRESS_TYPE_URL, previousName);
    this.#resourceNameByService.set(key, name);
    this.#cache.set(ADDRESS_TYPE_URL, name, this.#encode({ service: serviceFromKube(service, this.#clusterDomain, waypoint, namespaceObject?.metadata.labels) }));
  }

  /** The workloads of slice `key`'s non-pod endpoints, for a Service without a selector (endpoint-slice-workload.ts). */
  #recomputeSlice(key: string): void {
    const slice = this.#store.get<EndpointSliceObject>('EndpointSlice', key);
    const serviceName = slice?.metadata?.labels?.[SERVICE_NAME_LABEL];
    const service = slice && serviceName ? this.#store.get<ServiceObject>('Service', `${namespaceOf(slice)}/${serviceName}`) : undefined;
    const workloads =
      slice && service && !selectorOf(service)
        ? workloadsFromEndpointSlice(slice, {
            service,
            serviceResourceName: serviceResourceName(service, this.#clusterDomain),
            trustDomain: this.#trustDomain,
            clusterId: this.#clusterId,
          })
        : [];
    const names = new Set<string>();
    for (const workload of workloads) {
      names.add(workload.uid);
      this.#cache.set(ADDRESS_TYPE_URL, workload.uid, this.#encode({ workload }));
    }
    for (const name of this.#resourceNamesBySlice.get(key) ?? []) if (!names.has(name)) this.#cache.delete(ADDRESS_TYPE_URL, name);
    if (names.size > 0) this.#resourceNamesBySlice.set(key, names);
    else this.#resourceNamesBySlice.delete(key);
  }

  #recomputePod(key: string): void {
    const pod = this.#store.get<PodObject>('Pod', key);
    const previousName = this.#resourceNameByPod.get(key);
    const namespaceName = pod ? namespaceOf(pod) : '';
    const namespace = pod ? this.#store.get<NamespaceObject>('Namespace', namespaceName) : undefined;
    const gatewayKey = pod ? requestedWaypoint(pod.metadata.labels, namespaceName, namespace) : undefined;
    this.#trackWaypoint(`pod:${key}`, gatewayKey);
    const workload = pod
      ? workloadFromPod(pod, {
          hboneWhen: this.#hboneWhen,
          namespace,
          trustDomain: this.#trustDomain,
          clusterId: this.#clusterId,
          waypoint: gatewayKey ? waypointAddress(gatewayKey, 'workload', this.#waypointLookup) : undefined,
          services: this.#servicesOfPod(key, pod),
          authorizationPolicies: this.#authorizationPoliciesFor(pod),
          locality: pod.spec?.nodeName ? localityFromNodeLabels(this.#store.get('Node', pod.spec.nodeName)?.metadata?.labels) : undefined,
        })
      : undefined;
    if (!workload) {
      if (previousName) this.#cache.delete(ADDRESS_TYPE_URL, previousName);
      this.#resourceNameByPod.delete(key);
      return;
    }
    if (previousName && previousName !== workload.uid) this.#cache.delete(ADDRESS_TYPE_URL, previousName);
    this.#resourceNameByPod.set(key, workload.uid);
    this.#cache.set(ADDRESS_TYPE_URL, workload.uid, this.#encode({ workload }));
  }

  /** `<namespace>/<hostname>` -> ports of every service `pod` backs, in a stable order (content hashes). */
  #servicesOfPod(podKey: string, pod: PodObject): Record<string, { ports: PortMessage[] }> {
    const namespace = namespaceOf(pod);
    const labels = pod.metadata.labels ?? {};
    const found = new Map<string, { ports: PortMessage[] }>();
    const entries = this.#servicesBySelectorEntry.get(namespace);
    if (entries) {
      for (const label in labels) {
        for (const serviceKey of entries.get(`${label}=${labels[label]}`) ?? []) {
          const service = meshService(this.#store.get<ServiceObject>('Service', serviceKey));
          const selector = selectorOf(service);
          if (!service || !selector || !matches(selector, labels)) continue;
          const ports: PortMessage[] = [];
          for (const port of service.spec?.ports ?? []) {
            // A named target port the pod does not declare is left out, as istiod does (not sent as port 0).
            const targetPort = podTargetPort(port.targetPort, port.port, pod);
            if (targetPort !== undefined) ports.push({ servicePort: port.port, targetPort });
          }
          found.set(serviceResourceName(service, this.#clusterDomain), { ports });
        }
      }
    }
    for (const serviceKey of this.#endpointServicesByPod.get(podKey) ?? []) {
      const service = meshService(this.#store.get<ServiceObject>('Service', serviceKey));
      if (!service || selectorOf(service)) continue;
      const slicePorts = new Map<string, number>();
      for (const sliceKey of this.#slicesByService.get(serviceKey) ?? []) {
        for (const port of this.#store.get<EndpointSliceObject>('EndpointSlice', sliceKey)?.ports ?? []) if (port.port) slicePorts.set(port.name ?? '', port.port);
      }
      found.set(serviceResourceName(service, this.#clusterDomain), {
        ports: (service.spec?.ports ?? []).map((port) => ({ servicePort: port.port, targetPort: slicePorts.get(port.name ?? '') ?? numericTargetPort(port) })),
      });
    }
    const sorted: Record<string, { ports: PortMessage[] }> = {};
    for (const name of [...found.keys()].sort()) sorted[name] = found.get(name)!;
    return sorted;
  }
}

