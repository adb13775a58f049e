/**
 * The mesh the waypoint protocol tests share (test/net/waypoint-grpc.test.ts, waypoint-http-protocols.test.ts): two
 * nodes with real agents and the control plane reading the cluster directory; pods `web-a` (node 1, app web,
 * version v1) and `web-b` (node 0, version v2) running protocol-echo-server.ts (gRPC on 50051, h2c on 8082,
 * HTTP/1.1 and WebSocket on 8081); `client` on node 0; the waypoint `wp` on node 1. Services are written by the
 * tests; `useWaypoint` binds one to the waypoint.
 *
 * Owns: that topology and the small helpers around it (run a client scenario in the client pod, write an object,
 * wait for a condition, read the waypoint's config dump and metrics). Must not know about: what a test asserts.
 */
import type { ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { stringify } from 'yaml';
import { createLocalMesh, type LocalMesh } from '../../../runtime/local-mesh.ts';
import { createWaypoint, type LocalWaypoint } from '../../../runtime/waypoint.ts';
import type { Pod } from '../../../runtime/index.ts';
import { until, writeAtomically } from './cluster-edits.ts';

export const ENROLLED = { 'istio.io/dataplane-mode': 'ambient' };
export const GRPC_PORT = 50051;
export const H2_PORT = 8082;
export const HTTP1_PORT = 8081;
export const WAYPOINT_IDENTITY = 'spiffe://cluster.local/ns/shop/sa/wp';

const SERVER = path.join(import.meta.dirname, 'protocol-echo-server.ts');
const CLIENT = path.join(import.meta.dirname, 'protocol-client.ts');

export interface ProtocolMesh {
  mesh: LocalMesh;
  waypoint: LocalWaypoint;
  client: Pod;
  webA: Pod;
  webB: Pod;
  /** The echo servers' processes, by pod name. */
  servers: Map<string, ChildProcess>;
}

/** Starts protocol-echo-server.ts in `pod`; resolves with its process once every port listens. */
export function startServer(pod: Pod): Promise<ChildProcess> {
  const child = pod.spawn(process.execPath, [SERVER, JSON.stringify({ name: pod.name, grpcPort: GRPC_PORT, h2Port: H2_PORT, http1Port: HTTP1_PORT })], { stdio: ['ignore', 'pipe', 'pipe'] });
  return new Promise((resolve, reject) => {
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      if (chunk.includes('"listening"')) resolve(child);
    });
    child.once('exit', (code) => reject(new Error(`protocol server in ${pod.name} exited (${code}): ${stderr}`)));
  });
}

export async function createProtocolMesh(name: string): Promise<ProtocolMesh> {
  const mesh = await createLocalMesh({ nodes: 2, name });
  try {
    const webA = await mesh.cluster.createPod({ node: 1, namespace: 'shop', name: 'web-a', serviceAccount: 'web', labels: { app: 'web', version: 'v1' }, namespaceLabels: ENROLLED });
    const webB = await mesh.cluster.createPod({ node: 0, namespace: 'shop', name: 'web-b', serviceAccount: 'web', labels: { app: 'web', version: 'v2' } });
    const client = await mesh.cluster.createPod({ node: 0, namespace: 'shop', name: 'client', serviceAccount: 'client' });
    const [serverA, serverB] = await Promise.all([startServer(webA), startServer(webB)]);
    const waypoint = await createWaypoint(mesh, { node: 1, namespace: 'shop', name: 'wp' });
    return { mesh, waypoint, client, webA, webB, servers: new Map([[webA.name, serverA], [webB.name, serverB]]) };
  } catch (error) {
    await mesh.destroy();
    throw error;
  }
}

export interface ServicePortSpec {
  name?: string;
  port: number;
  targetPort: number;
  appProtocol?: string;
}

/** Writes a Service in namespace shop (bound to the waypoint unless `useWaypoint` is false). */
export async function writeService(setup: ProtocolMesh, name: string, vip: string, ports: ServicePortSpec[], selector: Record<string, string> = { app: 'web' }, useWaypoint = true): Promise<void> {
  await writeAtomically(
    path.join(setup.mesh.cluster.clusterDir, 'services', `${name}.yaml`),
    stringify({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: 'shop', labels: useWaypoint ? { 'istio.io/use-waypoint': 'wp' } : {} }, spec: { clusterIP: vip, selector, ports } }),
  );
}

export async function writeObject(setup: ProtocolMesh, directory: string, name: string, object: object): Promise<void> {
  await writeAtomically(path.join(setup.mesh.cluster.clusterDir, directory, `${name}.yaml`), stringify(object));
}

/** Runs a protocol-client.ts scenario in the client pod; its JSON result. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- scenario results are free-form JSON read by assertions
export async function clientRun(setup: ProtocolMesh, spec: Record<string, unknown>): Promise<any> {
  const result = await setup.client.exec(process.execPath, [CLIENT, JSON.stringify(spec)], { timeoutMs: 120_000 });
  if (result.code !== 0) throw new Error(`protocol client ${String(spec.scenario)} failed (${result.code}): ${result.stderr}`);
  return JSON.parse(result.stdout) as unknown;
}

/** A protocol-client.ts scenario left running in the client pod (a test kills it); its JSON lines as they come. */
export function clientSpawn(setup: ProtocolMesh, spec: Record<string, unknown>): { child: ChildProcess; lines: Record<string, unknown>[] } {
  const child = setup.client.spawn(process.execPath, [CLIENT, JSON.stringify(spec)], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: Record<string, unknown>[] = [];
  let pending = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
    pending += chunk;
    for (let newline = pending.indexOf('\n'); newline >= 0; newline = pending.indexOf('\n')) {
      lines.push(JSON.parse(pending.slice(0, newline)) as Record<string, unknown>);
      pending = pending.slice(newline + 1);
    }
  });
  return { child, lines };
}

/** The waypoint's /config_dump (from inside its pod). */
// eslint-disable-next-line @typescript-eslint/no-explicit-any -- the dump is free-form JSON read by assertions
export async function waypointDump(setup: ProtocolMesh): Promise<any> {
  const script = "fetch('http://127.0.0.1:15000/config_dump').then((r) => r.text()).then((t) => process.stdout.write(t))";
  const result = await setup.waypoint.pod.exec(process.execPath, ['-e', script]);
  return result.code === 0 ? (JSON.parse(result.stdout) as unknown) : undefined;
}

/** The sum of istio_requests_total series on the waypoint whose labels include every `label="value"` given. */
export async function waypointRequests(setup: ProtocolMesh, labels: Record<string, string>): Promise<number> {
  const script = "fetch('http://127.0.0.1:15020/metrics').then((r) => r.text()).then((t) => process.stdout.write(t))";
  const result = await setup.waypoint.pod.exec(process.execPath, ['-e', script]);
  const wanted = Object.entries(labels).map(([name, value]) => `${name}="${value}"`);
  return result.stdout
    .split('\n')
    .filter((line) => line.startsWith('istio_requests_total{') && wanted.every((label) => line.includes(label)))
    .reduce((sum, line) => sum + Number(line.split(' ').pop()), 0);
}

/** Whether the waypoint knows `service` with `endpoints` endpoints (and the client's agent binds it to the waypoint). */
export async function serviceReady(setup: ProtocolMesh, service: string, endpoints: number): Promise<boolean> {
  const dump = await waypointDump(setup);
  const atWaypoint = (dump?.services as { name: string; endpoints: unknown[] }[] | undefined)?.find((candidate) => candidate.name === service);
  if (atWaypoint?.endpoints.length !== endpoints) return false;
  const script = "fetch('http://127.0.0.1:15000/config_dump').then((r) => r.json()).then((d) => process.stdout.write(JSON.stringify(d.services)))";
  const result = await setup.mesh.cluster.node(0).exec(process.execPath, ['-e', script]);
  const services = result.code === 0 ? (JSON.parse(result.stdout) as { name: string; waypoint?: { address: string } }[]) : [];
  return services.find((candidate) => candidate.name === service)?.waypoint?.address === setup.waypoint.pod.ip;
}

export async function logText(file: string): Promise<string> {
  return readFile(file, 'utf8').catch(() => '');
}

export { until, writeAtomically };
