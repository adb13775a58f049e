/**
 * `ambitctl waypoint apply -n NS [--name N] [--for service|workload|all]` and `ambitctl waypoint status [-n NS]`.
 *
 * Where the Gateway goes, and where status comes from, in this order:
 *   - `--kubeconfig FILE` (or KUBECONFIG): the cluster's API server (create, or merge into the existing Gateway);
 *     status from its Gateways, Services, Namespaces, Pods and routes;
 *   - `--cluster-dir DIR` (or AMBIT_CLUSTER_DIR): a directory the control plane reads (`gateways/<ns>-<name>.yaml`,
 *     where the local runtime's waypoints keep theirs);
 *   - else the running `ambitctl local` mesh (`--run-dir`): apply writes into the user's own directory, which the
 *     local runtime watches and deploys the waypoint from; status reads the directory the control plane reads.
 * Status lists each waypoint (address, what it serves, what is bound to it) and each HTTPRoute and GRPCRoute with
 * its parents' Accepted/ResolvedRefs conditions and why, computed by the control plane's own function
 * (controlplane/model/route-status.ts) over the same objects, so local mode reports what Kubernetes would show.
 *
 * Owns: the subcommands, the Gateway they write, the report's shape and table.
 * Must not know about: how routes compile or attach (the control plane's model decides).
 */
import { mkdir, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { stringify } from 'yaml';
import { readKubeconfig } from '../cni/kubeconfig.ts';
import { compileHttpRoutes, type RouteProblem } from '../controlplane/model/http-routes.ts';
import type { GatewayObject } from '../controlplane/model/kube-types.ts';
import { routeStatuses, type RouteStatusReport } from '../controlplane/model/route-status.ts';
import { requestedWaypoint, WAYPOINT_FOR_LABEL, WAYPOINT_GATEWAY_CLASS, validClusterIp } from '../controlplane/model/waypoint.ts';
import { DEFAULT_CLUSTER_DOMAIN } from '../controlplane/model/workload.ts';
import { ObjectStore } from '../controlplane/store.ts';
import { apiRequest, statusMessage, type ApiCredentials } from '../shared/k8s/api-request.ts';
import { readClusterDir } from '../shared/k8s/cluster-dir.ts';
import type { K8sObject, NamespaceObject, ServiceObject } from '../shared/k8s/objects.ts';
import { readState, resolveRunDir } from '../runtime/workloads/local-state.ts';
import { AmbitctlError } from './admin-client.ts';
import type { Command, CommandContext } from './command.ts';
import { renderDocument, renderTable } from './output.ts';

const USAGE = [
  'ambitctl waypoint apply -n NAMESPACE [--name NAME] [--for service|workload|all] [--kubeconfig FILE | --cluster-dir DIR | --run-dir DIR]',
  'ambitctl waypoint status [-n NAMESPACE] [-o table|json|yaml] [--kubeconfig FILE | --cluster-dir DIR | --run-dir DIR]',
].join('\n       ');
export const DEFAULT_WAYPOINT_NAME = 'waypoint';
const WAYPOINT_FOR = ['service', 'workload', 'all', 'none'];

/** The Gateway `istioctl waypoint apply` writes. */
export function waypointGatewayObject(namespace: string, name: string, waypointFor: string): K8sObject {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'Gateway',
    metadata: { name, namespace, labels: { [WAYPOINT_FOR_LABEL]: waypointFor } },
    spec: { gatewayClassName: WAYPOINT_GATEWAY_CLASS, listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] },
  };
}

/** Where a local-mode Gateway file goes in a directory the control plane reads (runtime/waypoint.ts uses the same). */
export function gatewayFileIn(dir: string, namespace: string, name: string): string {
  return path.join(dir, 'gateways', `${namespace}-${name}.yaml`);
}

type Target = { kind: 'api'; credentials: ApiCredentials; kubeconfig: string } | { kind: 'dir'; dir: string; applyDir: string };

async function target(context: CommandContext): Promise<Target> {
  const kubeconfig = context.flags.kubeconfig;
  if (kubeconfig) return { kind: 'api', credentials: await readKubeconfig(kubeconfig), kubeconfig };
  if (context.clusterDir) return { kind: 'dir', dir: context.clusterDir, applyDir: context.clusterDir };
  const runDir = resolveRunDir(context.flags['run-dir']);
  const state = await readState(runDir);
  if (!state?.clusterDir) throw new AmbitctlError('USAGE', `no cluster to use: pass --kubeconfig FILE (Kubernetes), --cluster-dir DIR, or start a local mesh (ambitctl local up; none runs from ${runDir})`);
  // Apply into the user's directory (the local runtime watches it and deploys the waypoint); read what the control plane reads.
  return { kind: 'dir', dir: state.clusterDir, applyDir: state.dir };
}

async function apply(context: CommandContext): Promise<void> {
  const namespace = context.namespace;
  if (!namespace) throw new AmbitctlError('USAGE', `-n NAMESPACE is required\nusage: ${USAGE}`);
  const name = context.flags.name ?? DEFAULT_WAYPOINT_NAME;
  const waypointFor = context.flags.for ?? 'service';
  if (!WAYPOINT_FOR.includes(waypointFor)) throw new AmbitctlError('USAGE', `--for must be one of ${WAYPOINT_FOR.join(', ')}, got "${waypointFor}"`);
  const gateway = waypointGatewayObject(namespace, name, waypointFor);
  const where = await target(context);
  if (where.kind === 'api') {
    const collection = `/apis/gateway.networking.k8s.io/v1/namespaces/${encodeURIComponent(namespace)}/gateways`;
    let answer = await apiRequest(where.credentials, { method: 'POST', path: collection, body: gateway });
    if (answer.status === 409) answer = await apiRequest(where.credentials, { method: 'PATCH', path: `${collection}/${encodeURIComponent(name)}`, body: gateway, contentType: 'application/merge-patch+json' });
    if (answer.status !== 200 && answer.status !== 201) throw new AmbitctlError('ADMIN_ERROR', `the API server answered ${answer.status} to the Gateway ${namespace}/${name}: ${statusMessage(answer.body)}`, answer.status);
    context.write(`waypoint ${namespace}/${name} applied (for ${waypointFor}) via ${where.kubeconfig}\n`);
  } else {
    const file = where.applyDir === where.dir ? gatewayFileIn(where.dir, namespace, name) : path.join(where.applyDir, `waypoint-${namespace}-${name}.yaml`);
    await mkdir(path.dirname(file), { recursive: true });
    const temporary = path.join(path.dirname(file), `.${path.basename(file)}.tmp`);
    await writeFile(temporary, stringify(gateway));
    await rename(temporary, file);
    context.write(`waypoint ${namespace}/${name} applied (for ${waypointFor}): ${file}\n`);
  }
  context.write(`use it: label a Service or namespace istio.io/use-waypoint=${name}\n`);
}

async function listFromApi(credentials: ApiCredentials): Promise<K8sObject[]> {
  const collections: [string, string][] = [
    ['Namespace', '/api/v1/namespaces'],
    ['Service', '/api/v1/services'],
    ['Pod', '/api/v1/pods'],
    ['Gateway', '/apis/gateway.networking.k8s.io/v1/gateways'],
    ['HTTPRoute', '/apis/gateway.networking.k8s.io/v1/httproutes'],
    ['GRPCRoute', '/apis/gateway.networking.k8s.io/v1/grpcroutes'],
  ];
  const objects: K8sObject[] = [];
  for (const [kind, collection] of collections) {
    const answer = await apiRequest(credentials, { method: 'GET', path: collection });
    if (answer.status === 404 && kind !== 'Namespace' && kind !== 'Service' && kind !== 'Pod') continue; // a CRD not installed
    if (answer.status !== 200) throw new AmbitctlError('ADMIN_ERROR', `the API server answered ${answer.status} to GET ${collection}: ${statusMessage(answer.body)}`, answer.status);
    for (const item of (answer.body as { items?: K8sObject[] }).items ?? []) objects.push({ ...item, kind });
  }
  return objects;
}

export interface WaypointView {
  namespace: string;
  name: string;
  for: string;
  address: string;
  programmed: string;
  /** `service/<ns>/<name>`, `namespace/<name>`, `pod/<ns>/<name>` that use it. */
  bound: string[];
}

export interface WaypointStatusReport {
  waypoints: WaypointView[];
  routes: RouteStatusReport[];
}

/** The report from a set of objects (exported for tests). */
export function waypointStatus(objects: K8sObject[], namespace?: string): WaypointStatusReport {
  const store = new ObjectStore();
  store.apply(objects.filter((object) => object.kind && object.metadata?.name).map((object) => ({ type: 'upsert' as const, object })));
  const problems: RouteProblem[] = [];
  compileHttpRoutes(store, DEFAULT_CLUSTER_DOMAIN, (problem) => problems.push(problem));
  const gateways = store.list<GatewayObject>('Gateway').filter((gateway) => gateway.spec?.gatewayClassName === WAYPOINT_GATEWAY_CLASS);
  const bound = new Map<string, string[]>(gateways.map((gateway) => [`${gateway.metadata.namespace ?? 'default'}/${gateway.metadata.name}`, []]));
  const namespaceOf = (name: string) => store.get<NamespaceObject>('Namespace', name);
  for (const ns of store.list<NamespaceObject>('Namespace')) {
    const key = requestedWaypoint(ns.metadata.labels, ns.metadata.name, undefined);
    if (key) bound.get(key)?.push(`namespace/${ns.metadata.name}`);
  }
  for (const kind of ['Service', 'Pod']) {
    for (const object of store.list(kind)) {
      const objectNamespace = object.metadata?.namespace ?? 'default';
      // Only objects that say so themselves: their namespace's label is listed once, as the namespace.
      if (!object.metadata?.labels?.['istio.io/use-waypoint']) continue;
      const key = requestedWaypoint(object.metadata.labels, objectNamespace, namespaceOf(objectNamespace));
      if (key) bound.get(key)?.push(`${kind.toLowerCase()}/${objectNamespace}/${object.metadata.name}`);
    }
  }
  const waypoints = gateways
    .filter((gateway) => namespace === undefined || (gateway.metadata.namespace ?? 'default') === namespace)
    .map((gateway): WaypointView => {
      const gatewayNamespace = gateway.metadata.namespace ?? 'default';
      const conditions = (gateway.status?.conditions ?? []) as { type: string; status: string; reason: string }[];
      const programmed = conditions.find((condition) => condition.type === 'Programmed');
      const address = gateway.status?.addresses?.[0]?.value ?? validClusterIp(store.get<ServiceObject>('Service', `${gatewayNamespace}/${gateway.metadata.name}`)?.spec?.clusterIP) ?? '';
      return {
        namespace: gatewayNamespace,
        name: gateway.metadata.name,
        for: gateway.metadata.labels?.[WAYPOINT_FOR_LABEL] ?? 'service',
        address,
        programmed: programmed ? `${programmed.status} (${programmed.reason})` : address ? 'True' : 'False (no address yet)',
        bound: bound.get(`${gatewayNamespace}/${gateway.metadata.name}`) ?? [],
      };
    });
  const routes = routeStatuses(store, problems).filter((report) => namespace === undefined || report.namespace === namespace);
  return { waypoints, routes };
}

async function status(context: CommandContext): Promise<void> {
  const where = await target(context);
  let objects: K8sObject[];
  if (where.kind === 'api') {
    objects = await listFromApi(where.credentials);
  } else {
    try {
      objects = (await readClusterDir(where.dir)).objects;
    } catch (error) {
      throw new AmbitctlError('USAGE', (error as Error).message);
    }
  }
  const report = waypointStatus(objects, context.namespace);
  if (context.output !== 'table') {
    context.write(renderDocument(report, context.output));
    return;
  }
  const routeRows = report.routes.flatMap((route) =>
    route.parents.length === 0
      ? [{ route, parent: '(none)', accepted: 'False (NoParents)', resolved: '', message: 'the route has no parentRefs: it attaches to nothing' }]
      : route.parents.map((parent) => {
          const accepted = parent.conditions.find((condition) => condition.type === 'Accepted')!;
          const resolved = parent.conditions.find((condition) => condition.type === 'ResolvedRefs')!;
          return {
            route,
            parent: `${parent.parentRef.kind ?? 'Gateway'}/${parent.parentRef.name ?? ''}${parent.parentRef.port ? `:${parent.parentRef.port}` : ''}`,
            accepted: `${accepted.status} (${accepted.reason})`,
            resolved: `${resolved.status} (${resolved.reason})`,
            message: [accepted, resolved].filter((condition) => condition.status === 'False').map((condition) => condition.message).join('; '),
          };
        }),
  );
  context.write(
    [
      `WAYPOINTS (${report.waypoints.length})`,
      renderTable(report.waypoints, [
        { header: 'NAMESPACE', value: (w) => w.namespace },
        { header: 'NAME', value: (w) => w.name },
        { header: 'FOR', value: (w) => w.for },
        { header: 'ADDRESS', value: (w) => w.address || '-' },
        { header: 'PROGRAMMED', value: (w) => w.programmed },
        { header: 'BOUND', value: (w) => w.bound.join(',') || '-' },
      ]),
      `ROUTES (${report.routes.length})`,
      renderTable(routeRows, [
        { header: 'KIND', value: (r) => r.route.kind },
        { header: 'NAMESPACE', value: (r) => r.route.namespace },
        { header: 'NAME', value: (r) => r.route.name },
        { header: 'PARENT', value: (r) => r.parent },
        { header: 'ACCEPTED', value: (r) => r.accepted },
        { header: 'RESOLVED REFS', value: (r) => r.resolved },
        { header: 'WHY', value: (r) => r.message },
      ]),
    ].join('\n'),
  );
}

export const waypointCommand: Command = {
  name: 'waypoint',
  usage: USAGE,
  summary: 'apply a waypoint (a Gateway of class istio-waypoint); status: waypoints, what is bound to each, route status',
  async run(context) {
    const [subcommand] = context.args;
    if (subcommand === 'apply') return apply(context);
    if (subcommand === 'status') return status(context);
    throw new AmbitctlError('USAGE', `waypoint needs apply or status\nusage: ${USAGE}`);
  },
};
