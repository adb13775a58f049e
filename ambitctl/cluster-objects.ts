/**
 * The objects of a configuration, for commands that look at all of it (`ambitctl analyze`): from a cluster
 * directory (with each object's file and line, and the documents that did not parse), or from an API server
 * through a kubeconfig (listed once, every namespace; a kind whose CRD is not installed is skipped and named).
 *
 * Owns: which kinds are read and how. Must not know about: what a command does with them.
 */
import { CoreV1Api, CustomObjectsApi, KubeConfig, type KubernetesObject } from '@kubernetes/client-node';
import { objectSource, readClusterDir } from '../shared/k8s/cluster-dir.ts';
import type { K8sObject } from '../shared/k8s/objects.ts';
import { AmbitctlError } from './admin-client.ts';

export interface ClusterObjects {
  objects: K8sObject[];
  /** Documents that could not be read, as `file:line: message`. */
  unreadable: string[];
  /** Kinds the API server does not serve (CRD not installed). */
  notServed: string[];
  /** `file:line` an object was read from, when known. */
  sourceOf(object: K8sObject): string | undefined;
}

interface CustomKind {
  kind: string;
  group: string;
  version: string;
  plural: string;
}

/** Every custom kind analyze looks at, at the version ambit reads. */
export const CUSTOM_KINDS: readonly CustomKind[] = [
  { kind: 'Gateway', group: 'gateway.networking.k8s.io', version: 'v1', plural: 'gateways' },
  { kind: 'HTTPRoute', group: 'gateway.networking.k8s.io', version: 'v1', plural: 'httproutes' },
  { kind: 'GRPCRoute', group: 'gateway.networking.k8s.io', version: 'v1', plural: 'grpcroutes' },
  { kind: 'AuthorizationPolicy', group: 'security.istio.io', version: 'v1', plural: 'authorizationpolicies' },
  { kind: 'PeerAuthentication', group: 'security.istio.io', version: 'v1', plural: 'peerauthentications' },
  { kind: 'RequestAuthentication', group: 'security.istio.io', version: 'v1', plural: 'requestauthentications' },
  { kind: 'LocalRateLimitPolicy', group: 'policy.ambit.dev', version: 'v1alpha1', plural: 'localratelimitpolicies' },
  { kind: 'DestinationRule', group: 'networking.istio.io', version: 'v1', plural: 'destinationrules' },
  { kind: 'VirtualService', group: 'networking.istio.io', version: 'v1', plural: 'virtualservices' },
];

export async function objectsFromDirectory(dir: string): Promise<ClusterObjects> {
  let snapshot;
  try {
    snapshot = await readClusterDir(dir);
  } catch (error) {
    throw new AmbitctlError('USAGE', `cannot read the cluster directory ${dir}: ${(error as Error).message}`);
  }
  return {
    objects: snapshot.objects,
    unreadable: snapshot.errors.map((problem) => `${problem.file}${problem.line ? `:${problem.line}` : ''}: ${problem.message}`),
    notServed: [],
    sourceOf: (object) => {
      const source = objectSource(object);
      return source && `${source.file}:${source.line}`;
    },
  };
}

function typed(items: KubernetesObject[], kind: string, apiVersion: string): K8sObject[] {
  // List items carry no kind/apiVersion.
  return items.map((item) => ({ ...item, kind, apiVersion: item.apiVersion ?? apiVersion }) as K8sObject);
}

export async function objectsFromKubeconfig(file: string | undefined): Promise<ClusterObjects> {
  const kubeConfig = new KubeConfig();
  try {
    if (file) kubeConfig.loadFromFile(file);
    else kubeConfig.loadFromDefault();
  } catch (error) {
    throw new AmbitctlError('USAGE', `cannot load the kubeconfig ${file ?? '(default)'}: ${(error as Error).message}`);
  }
  const core = kubeConfig.makeApiClient(CoreV1Api);
  const custom = kubeConfig.makeApiClient(CustomObjectsApi);
  const failed = (what: string, error: unknown): never => {
    throw new AmbitctlError('API_SERVER', `cannot list ${what} from ${kubeConfig.getCurrentCluster()?.server ?? 'the API server'}: ${(error as Error).message}`);
  };
  const objects: K8sObject[] = [];
  const core3 = await Promise.all([core.listNamespace(), core.listServiceForAllNamespaces(), core.listPodForAllNamespaces()]).catch((error: unknown) => failed('namespaces, services and pods', error));
  objects.push(...typed(core3[0].items, 'Namespace', 'v1'), ...typed(core3[1].items, 'Service', 'v1'), ...typed(core3[2].items, 'Pod', 'v1'));
  const notServed: string[] = [];
  for (const kind of CUSTOM_KINDS) {
    try {
      const list = (await custom.listClusterCustomObject({ group: kind.group, version: kind.version, plural: kind.plural })) as { items?: KubernetesObject[] };
      objects.push(...typed(list.items ?? [], kind.kind, `${kind.group}/${kind.version}`));
    } catch (error) {
      if ((error as { code?: number }).code === 404) notServed.push(`${kind.kind} (${kind.group}/${kind.version})`);
      else failed(kind.plural, error);
    }
  }
  return { objects, unreadable: [], notServed, sourceOf: () => undefined };
}
