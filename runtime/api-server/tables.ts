/**
 * Server-side printing: the `meta.k8s.io/v1` Table kubectl asks for on `get`, with the columns a cluster's API
 * server prints for Pods, Services, Namespaces, Nodes and Deployments (wide-only columns at priority 1, so
 * `-o wide` shows them) and NAME, AGE for the rest.
 *
 * Owns: column definitions and cells. Must not know about: storage or HTTP.
 */
import type { K8sObject } from '../../shared/k8s/objects.ts';
import type { ApiResource } from './resources.ts';

interface Column {
  name: string;
  type: 'string' | 'integer' | 'date';
  priority: number;
  cell: (object: K8sObject, now: number) => string | number;
}

type Loose = Record<string, unknown> & { metadata?: Record<string, unknown>; spec?: Record<string, unknown>; status?: Record<string, unknown> };

/** Kubernetes' short age: 45s, 12m, 3h, 5d. */
export function age(timestamp: unknown, now: number): string {
  const seconds = Math.max(0, Math.floor((now - Date.parse(String(timestamp))) / 1000));
  if (!Number.isFinite(seconds)) return '<unknown>';
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 172_800) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86_400)}d`;
}

const name: Column = { name: 'Name', type: 'string', priority: 0, cell: (object) => String(object.metadata?.name) };
const ageColumn: Column = { name: 'Age', type: 'string', priority: 0, cell: (object, now) => age((object as Loose).metadata?.creationTimestamp, now) };

function containerStatuses(object: Loose): { ready?: boolean; restartCount?: number }[] {
  return Array.isArray(object.status?.containerStatuses) ? (object.status.containerStatuses as { ready?: boolean; restartCount?: number }[]) : [];
}

const POD_COLUMNS: Column[] = [
  name,
  {
    name: 'Ready',
    type: 'string',
    priority: 0,
    cell: (object) => {
      const containers = Array.isArray((object as Loose).spec?.containers) ? ((object as Loose).spec!.containers as unknown[]).length : 0;
      return `${containerStatuses(object as Loose).filter((status) => status.ready === true).length}/${containers}`;
    },
  },
  { name: 'Status', type: 'string', priority: 0, cell: (object) => String((object as Loose).status?.reason ?? (object as Loose).status?.phase ?? 'Pending') },
  { name: 'Restarts', type: 'string', priority: 0, cell: (object) => String(containerStatuses(object as Loose).reduce((sum, status) => sum + (status.restartCount ?? 0), 0)) },
  ageColumn,
  { name: 'IP', type: 'string', priority: 1, cell: (object) => String((object as Loose).status?.podIP ?? '<none>') },
  { name: 'Node', type: 'string', priority: 1, cell: (object) => String((object as Loose).spec?.nodeName ?? '<none>') },
  { name: 'Nominated Node', type: 'string', priority: 1, cell: () => '<none>' },
  { name: 'Readiness Gates', type: 'string', priority: 1, cell: () => '<none>' },
];

function servicePorts(object: Loose): string {
  const ports = Array.isArray(object.spec?.ports) ? (object.spec.ports as { port?: number; protocol?: string; nodePort?: number }[]) : [];
  return ports.length === 0 ? '<none>' : ports.map((port) => `${port.port}${port.nodePort ? `:${port.nodePort}` : ''}/${port.protocol ?? 'TCP'}`).join(',');
}

function labelList(value: unknown): string {
  const entries = Object.entries((value ?? {}) as Record<string, string>);
  return entries.length === 0 ? '<none>' : entries.map(([key, label]) => `${key}=${label}`).join(',');
}

const SERVICE_COLUMNS: Column[] = [
  name,
  { name: 'Type', type: 'string', priority: 0, cell: (object) => String((object as Loose).spec?.type ?? 'ClusterIP') },
  { name: 'Cluster-IP', type: 'string', priority: 0, cell: (object) => String((object as Loose).spec?.clusterIP ?? '<none>') },
  { name: 'External-IP', type: 'string', priority: 0, cell: () => '<none>' },
  { name: 'Port(s)', type: 'string', priority: 0, cell: (object) => servicePorts(object as Loose) },
  ageColumn,
  { name: 'Selector', type: 'string', priority: 1, cell: (object) => labelList((object as Loose).spec?.selector) },
];

const NAMESPACE_COLUMNS: Column[] = [name, { name: 'Status', type: 'string', priority: 0, cell: (object) => String((object as Loose).status?.phase ?? 'Active') }, ageColumn];

const NODE_COLUMNS: Column[] = [
  name,
  { name: 'Status', type: 'string', priority: 0, cell: () => 'Ready' },
  { name: 'Roles', type: 'string', priority: 0, cell: () => '<none>' },
  ageColumn,
  { name: 'Version', type: 'string', priority: 0, cell: (object) => String(((object as Loose).status?.nodeInfo as { kubeletVersion?: string } | undefined)?.kubeletVersion ?? '') },
  { name: 'Internal-IP', type: 'string', priority: 1, cell: (object) => String(((object as Loose).status?.addresses as { address?: string }[] | undefined)?.[0]?.address ?? '<none>') },
];

const DEPLOYMENT_COLUMNS: Column[] = [
  name,
  { name: 'Ready', type: 'string', priority: 0, cell: (object) => `${Number((object as Loose).status?.readyReplicas ?? 0)}/${Number((object as Loose).spec?.replicas ?? 1)}` },
  { name: 'Up-to-date', type: 'integer', priority: 0, cell: (object) => Number((object as Loose).status?.updatedReplicas ?? 0) },
  { name: 'Available', type: 'integer', priority: 0, cell: (object) => Number((object as Loose).status?.availableReplicas ?? 0) },
  ageColumn,
];

const COLUMNS: Record<string, Column[]> = {
  pods: POD_COLUMNS,
  services: SERVICE_COLUMNS,
  namespaces: NAMESPACE_COLUMNS,
  nodes: NODE_COLUMNS,
  deployments: DEPLOYMENT_COLUMNS,
};

/** The Table for a list (or one object) of `resource`. */
export function renderTable(resource: ApiResource, objects: K8sObject[], resourceVersion: string, now = Date.now()): Record<string, unknown> {
  const columns = COLUMNS[resource.plural] ?? [name, ageColumn];
  return {
    kind: 'Table',
    apiVersion: 'meta.k8s.io/v1',
    metadata: { resourceVersion },
    columnDefinitions: columns.map((column) => ({ name: column.name, type: column.type, format: column.name === 'Name' ? 'name' : '', description: '', priority: column.priority })),
    rows: objects.map((object) => ({
      cells: columns.map((column) => column.cell(object, now)),
      object: { kind: 'PartialObjectMetadata', apiVersion: 'meta.k8s.io/v1', metadata: object.metadata },
    })),
  };
}

/** Whether an Accept header asks for a Table (kubectl get does; -o yaml and the clients do not). */
export function wantsTable(accept: string | undefined): boolean {
  return accept !== undefined && /as=Table/.test(accept.split(',')[0] ?? '');
}
