/**
 * Test helpers for the control plane and the xDS client: a control plane on loopback with a fresh CA and a
 * bootstrap token over a YAML directory (or any source), a client that records what it receives, and cluster
 * drivers that make the same changes through either source.
 * Used by tests only; never imported by production code.
 */
import { mkdtemp, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { stringify as stringifyYaml } from 'yaml';
import { CertificateAuthority } from '../../shared/identity/index.ts';
import type { K8sObject } from '../../shared/k8s/objects.ts';
import { XdsClient, type XdsClientStatus, type XdsHandler, type XdsRejection, type XdsResourceUpdate } from '../../shared/xds/client.ts';
import { ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL } from '../../shared/xds/protos.ts';
import type { XdsAddress } from '../../shared/xds/types.ts';
import { startControlPlane, type ControlPlane } from '../../controlplane/control-plane.ts';
import type { ObjectStore } from '../../controlplane/store.ts';
import type { ConfigSource, SourceProblem } from '../../controlplane/sources/source.ts';
import { YamlDirSource } from '../../controlplane/sources/yaml-dir.ts';
import { KubernetesSource } from '../../controlplane/sources/kubernetes.ts';
import { FakeKubeApiServer } from './kube-api-server.ts';
import { TokenFileAuthenticator } from '../../controlplane/xds/auth.ts';
import { PolicyModel } from '../../controlplane/model/policies.ts';
import type { XdsLogger } from '../../controlplane/xds/connection.ts';

export const TEST_TOKEN = 'test-bootstrap-token-0123456789';

export async function tempDir(t: { teardown(fn: () => unknown): void }, prefix = 'ambit-cp-'): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), prefix));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

export async function writeManifest(dir: string, file: string, text: string): Promise<void> {
  // Write then rename, as the local runtime does, so the watcher never reads half a file.
  const target = path.join(dir, file);
  const temporary = path.join(dir, `.${file}.tmp`);
  await writeFile(temporary, text);
  await rename(temporary, target);
}

/** A logger that keeps every record, for asserting what the server logged. */
export function recordingLogger(): XdsLogger & { records: { level: string; object: object; message: string }[] } {
  const records: { level: string; object: object; message: string }[] = [];
  const log = (level: string) => (object: object, message = '') => void records.push({ level, object, message });
  return { records, debug: log('debug'), info: log('info'), warn: log('warn'), error: log('error') };
}

export interface TestControlPlane {
  cp: ControlPlane;
  ca: CertificateAuthority;
  tokenFile: string;
  address: string;
  logger: ReturnType<typeof recordingLogger>;
  problems: SourceProblem[];
}

let sharedCa: Promise<CertificateAuthority> | undefined;
/** One CA per test file: making roots is cheap but not free, and tests do not depend on a fresh one. */
export function testCa(): Promise<CertificateAuthority> {
  sharedCa ??= CertificateAuthority.createRoot({ trustDomain: 'cluster.local' });
  return sharedCa;
}

export async function startTestControlPlane(
  t: { teardown(fn: () => unknown): void },
  options: { dir?: string; createSource?: (store: ObjectStore, problems: SourceProblem[]) => ConfigSource; port?: number; tokenFile?: string },
): Promise<TestControlPlane> {
  const ca = await testCa();
  const tokenFile = options.tokenFile ?? path.join(await tempDir(t, 'ambit-token-'), 'token');
  await writeFile(tokenFile, `${TEST_TOKEN}\n`);
  const logger = recordingLogger();
  const problems: SourceProblem[] = [];
  const policies = new PolicyModel({ onProblem: (problem) => problems.push({ kind: problem.kind, name: problem.policy, message: problem.message }) });
  const cp = await startControlPlane({
    ca,
    listenAddress: `127.0.0.1:${options.port ?? 0}`,
    authenticator: new TokenFileAuthenticator(tokenFile),
    createSource: options.createSource
      ? (store) => options.createSource!(store, problems)
      : (store) => new YamlDirSource({ dir: options.dir!, store, onProblem: (problem) => problems.push(problem), pollIntervalMs: 200 }),
    logger,
    authorizations: { compile: (store) => policies.compile(store), policiesForPod: (pod) => policies.policiesForPod(pod) },
  });
  t.teardown(() => cp.close());
  return { cp, ca, tokenFile, address: `127.0.0.1:${cp.port}`, logger, problems };
}

/** What a test client holds: Address resources by name, plus every handler call. */
export interface RecordingClient {
  client: XdsClient;
  addresses: Map<string, XdsAddress>;
  /** Authorization resources by name, as decoded plain objects. */
  authorizations: Map<string, Record<string, unknown>>;
  calls: { typeUrl: string; added: string[]; removed: string[] }[];
  nacks: string[];
  /** Resolves when `predicate` holds after some handler call (checked immediately too). */
  until(predicate: () => boolean, what: string, timeoutMs?: number): Promise<void>;
}

export function startRecordingClient(
  t: { teardown(fn: () => unknown): void },
  plane: { address: string; ca: CertificateAuthority; cp: { serverIdentity: string } },
  options: {
    token?: string;
    rejectAddress?: (update: XdsResourceUpdate<XdsAddress>) => string | undefined;
    initialBackoffMs?: number;
    onStatus?: (status: XdsClientStatus) => void;
  } = {},
): RecordingClient {
  const addresses = new Map<string, XdsAddress>();
  const authorizations = new Map<string, Record<string, unknown>>();
  const calls: RecordingClient['calls'] = [];
  const nacks: string[] = [];
  const waiters = new Set<() => void>();
  const notify = () => {
    for (const waiter of waiters) waiter();
  };
  const addressHandler: XdsHandler<XdsAddress> = (added, removed) => {
    calls.push({ typeUrl: ADDRESS_TYPE_URL, added: added.map((entry) => entry.name), removed });
    // As the agent's source does: a rejected resource is named in the NACK and not stored; the others apply.
    const rejected: XdsRejection[] = [];
    for (const update of added) {
      const reason = options.rejectAddress?.(update);
      if (reason) rejected.push({ name: update.name, reason });
      else addresses.set(update.name, update.resource);
    }
    for (const name of removed) addresses.delete(name);
    notify();
    return rejected.length > 0 ? { rejected } : undefined;
  };
  const authorizationHandler: XdsHandler<Record<string, unknown>> = (added, removed) => {
    calls.push({ typeUrl: AUTHORIZATION_TYPE_URL, added: added.map((entry) => entry.name), removed });
    for (const update of added) authorizations.set(update.name, update.resource);
    for (const name of removed) authorizations.delete(name);
    notify();
  };
  const client = new XdsClient({
    address: plane.address,
    rootCertPem: plane.ca.rootCertPem,
    token: options.token ?? TEST_TOKEN,
    serverIdentity: plane.cp.serverIdentity,
    node: { id: 'test-agent~node-1' },
    handlers: { [ADDRESS_TYPE_URL]: addressHandler, [AUTHORIZATION_TYPE_URL]: authorizationHandler },
    initialBackoffMs: options.initialBackoffMs ?? 50,
    maxBackoffMs: 500,
    ...(options.onStatus ? { onStatus: options.onStatus } : {}),
    onNack: (_typeUrl, message) => {
      nacks.push(message);
      notify();
    },
  }).start();
  t.teardown(() => client.close());
  return {
    client,
    addresses,
    authorizations,
    calls,
    nacks,
    until(predicate, what, timeoutMs = 10_000) {
      if (predicate()) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`timed out waiting for ${what}`));
        }, timeoutMs);
        const check = () => {
          if (!predicate()) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve();
        };
        waiters.add(check);
      });
    },
  };
}

export function workloadNamed(client: RecordingClient, namespace: string, name: string) {
  return client.addresses.get(`Kubernetes//Pod/${namespace}/${name}`)?.workload ?? undefined;
}

export function namespaceYaml(name: string, labels: Record<string, string> = {}): string {
  const labelLines = Object.entries(labels).map(([key, value]) => `    ${key}: "${value}"`);
  return [`apiVersion: v1`, `kind: Namespace`, `metadata:`, `  name: ${name}`, ...(labelLines.length ? ['  labels:', ...labelLines] : [])].join('\n') + '\n';
}

export function podYaml(options: { name: string; namespace: string; ip: string; node?: string; labels?: Record<string, string>; serviceAccount?: string }): string {
  const labelLines = Object.entries(options.labels ?? {}).map(([key, value]) => `    ${key}: "${value}"`);
  return (
    [
      'apiVersion: v1',
      'kind: Pod',
      'metadata:',
      `  name: ${options.name}`,
      `  namespace: ${options.namespace}`,
      ...(labelLines.length ? ['  labels:', ...labelLines] : []),
      'spec:',
      `  nodeName: ${options.node ?? 'node-1'}`,
      `  serviceAccountName: ${options.serviceAccount ?? 'default'}`,
      '  containers:',
      '  - name: app',
      '    ports:',
      '    - name: http',
      '      containerPort: 8080',
      'status:',
      '  phase: Running',
      `  podIP: ${options.ip}`,
    ].join('\n') + '\n'
  );
}

export function serviceYaml(options: { name: string; namespace: string; vip: string; selector: Record<string, string>; labels?: Record<string, string> }): string {
  const selectorLines = Object.entries(options.selector).map(([key, value]) => `    ${key}: "${value}"`);
  const labelLines = Object.entries(options.labels ?? {}).map(([key, value]) => `    ${key}: "${value}"`);
  return (
    [
      'apiVersion: v1',
      'kind: Service',
      'metadata:',
      `  name: ${options.name}`,
      `  namespace: ${options.namespace}`,
      ...(labelLines.length ? ['  labels:', ...labelLines] : []),
      'spec:',
      `  clusterIP: ${options.vip}`,
      '  selector:',
      ...selectorLines,
      '  ports:',
      '  - name: http',
      '    port: 80',
      '    targetPort: http',
    ].join('\n') + '\n'
  );
}

/**
 * The same cluster changes through either source, so every scenario runs on both: objects written as files
 * to a watched YAML directory, or applied to the stand-in Kubernetes API server and read by informers.
 */
export interface ClusterDriver {
  name: 'yaml-dir' | 'kubernetes';
  apply(object: K8sObject): Promise<void>;
  remove(kind: string, namespace: string | undefined, name: string): Promise<void>;
  createSource: (store: ObjectStore, problems: SourceProblem[]) => ConfigSource;
  api?: FakeKubeApiServer;
}

function fileFor(kind: string, namespace: string | undefined, name: string): string {
  return `${kind.toLowerCase()}-${namespace ?? '_'}-${name}.yaml`;
}

export async function yamlDirDriver(t: { teardown(fn: () => unknown): void }): Promise<ClusterDriver> {
  const dir = await tempDir(t);
  return {
    name: 'yaml-dir',
    async apply(object) {
      await writeManifest(dir, fileFor(object.kind!, object.metadata?.namespace, object.metadata!.name!), stringifyYaml(object));
    },
    async remove(kind, namespace, name) {
      await rm(path.join(dir, fileFor(kind, namespace, name)), { force: true });
    },
    createSource: (store, problems) => new YamlDirSource({ dir, store, onProblem: (problem) => problems.push(problem), pollIntervalMs: 200 }),
  };
}

export async function kubernetesDriver(t: { teardown(fn: () => unknown): void }): Promise<ClusterDriver> {
  const api = await FakeKubeApiServer.start();
  t.teardown(() => api.close());
  return {
    name: 'kubernetes',
    api,
    async apply(object) {
      api.apply(object);
    },
    async remove(kind, namespace, name) {
      api.remove(kind, namespace, name);
    },
    createSource: (store, problems) => new KubernetesSource({ kubeConfig: api.kubeConfig(), store, onProblem: (problem) => problems.push(problem), initialBackoffMs: 50 }),
  };
}

export const CLUSTER_DRIVERS = [yamlDirDriver, kubernetesDriver];

export function namespaceObject(name: string, labels: Record<string, string> = {}): K8sObject {
  return { apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } };
}

export function podObject(options: { name: string; namespace: string; ip: string; node?: string; labels?: Record<string, string>; serviceAccount?: string }): K8sObject {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: options.name, namespace: options.namespace, labels: options.labels ?? {} },
    spec: { nodeName: options.node ?? 'node-1', serviceAccountName: options.serviceAccount ?? 'default', containers: [{ name: 'app', ports: [{ name: 'http', containerPort: 8080 }] }] },
    status: { phase: 'Running', podIP: options.ip },
  };
}

export function serviceObject(options: { name: string; namespace: string; vip: string; selector: Record<string, string>; labels?: Record<string, string> }): K8sObject {
  return {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { name: options.name, namespace: options.namespace, labels: options.labels ?? {} },
    spec: { clusterIP: options.vip, selector: options.selector, ports: [{ name: 'http', port: 80, targetPort: 'http' }] },
  };
}

export function waypointGateway(options: { name: string; namespace: string; waypointFor?: string; ip?: string }): K8sObject {
  return {
    apiVersion: 'gateway.networking.k8s.io/v1',
    kind: 'Gateway',
    metadata: { name: options.name, namespace: options.namespace, labels: options.waypointFor ? { 'istio.io/waypoint-for': options.waypointFor } : {} },
    spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] },
    ...(options.ip ? { status: { addresses: [{ type: 'IPAddress', value: options.ip }] } } : {}),
  };
}

/** Polls `predicate` (for state with no notification, such as a server's log) until it holds. */
export async function eventually(predicate: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

export function authorizationPolicyObject(options: { name: string; namespace: string; action?: string; selector?: Record<string, string>; principals?: string[] }): K8sObject {
  return {
    apiVersion: 'security.istio.io/v1',
    kind: 'AuthorizationPolicy',
    metadata: { name: options.name, namespace: options.namespace },
    spec: {
      ...(options.selector ? { selector: { matchLabels: options.selector } } : {}),
      action: options.action ?? 'ALLOW',
      rules: [{ from: [{ source: { principals: options.principals ?? ['cluster.local/ns/shop/sa/web'] } }] }],
    },
  };
}
