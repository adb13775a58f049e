/**
 * The agent's admin endpoint, on localhost only (it reveals the node's whole mesh view):
 *   GET  /config_dump          workloads, services, policies, captured pods, certificates (never keys), config
 *   GET  /logging              the current log level;  GET|POST /logging?level=debug  changes it at runtime
 *   GET  /memory               RSS and heap, the heap release's counters, how the splices read their sockets, the
 *                              captured pods' spare connect sockets, the node:http2 sessions' socket bound
 *   GET  /healthz              200 while the agent runs
 *   GET  /authz/check?source=ns/pod&destination=ns/pod|svc/ns/name|VIP&port=N   would this agent allow it, and why
 * `ambitctl workloads | certs | config-dump | authz check` read it.
 *
 * Owns: the admin HTTP server, the config dump's JSON shape, and the log level switch.
 * Must not know about: how any part it shows works; each is handed in as a narrow read-only getter.
 */
import http from 'node:http';
import { X509Certificate } from 'node:crypto';
import type { WorkloadCertificate } from '../shared/identity/index.ts';
import type { AnyAuthzCheckResult } from '../shared/policy/check-result.ts';
import { UnknownPodError, type AuthzQuery } from './policy/authz-check.ts';
import type { MeshState } from '../shared/mesh/mesh-state.ts';
import { workloadIdentity } from '../shared/mesh/workload.ts';
import { closeHttpServer, listenReusePort, type RunningHttpServer } from './http-listen.ts';
import { memoryReport } from './memory/memory-report.ts';
import type { HeapReleaseStats } from '../shared/memory/heap-release.ts';
import type { SessionSocketStats } from '../shared/hbone/session-socket.ts';

/** pino's levels, most to least verbose, plus `silent`. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

export interface CapturedPodView {
  uid: string;
  name: string;
  namespace: string;
  netns: string;
  ips: readonly string[];
}

export interface AdminSources {
  nodeName: string;
  state: Pick<MeshState, 'workloads'>;
  /** The pods captured on this node, and their listener counters. */
  capturedPods?: () => CapturedPodView[];
  listenerStats?: (uid: string) => object | undefined;
  /** Every certificate held, valid or not (the identity library's store). */
  certificates?: () => WorkloadCertificate[];
  /** Fed by the policy engine and xDS when they exist. */
  policies?: () => unknown[];
  services?: () => unknown[];
  /** The DNS proxy's upstreams and counters, when it runs. */
  dns?: () => object;
  /** The agent's settings, shown as they are (must hold no secrets). */
  config?: object;
  /** `GET /authz/check?source=ns/pod&destination=ns/pod|svc/ns/name|VIP&port=N[&namespace=ns]` (agent/policy/authz-check.ts). */
  authzCheck?: (query: AuthzQuery) => AnyAuthzCheckResult;
  /** The heap release's counters (shared/memory/heap-release.ts), shown by /memory: GCs, native releases, pages dropped. */
  heapRelease?: () => HeapReleaseStats | undefined;
  /**
   * How the splices on the main thread read their TCP sockets (shared/hbone/pooled-reads.ts): sockets switched to
   * pooled buffers, sockets this Node left on plain reads, scavenges run for per-read buffers, pooled TLS read
   * buffers held and handle writes pending; shown by /memory.
   */
  spliceReads?: () => SpliceReadsView;
  /**
   * What the node:http2 HBONE sessions' socket did with its bound (shared/hbone/session-socket.ts: writes held at
   * the queue bound, the largest queue seen, closing sessions cut); shown by /memory. All zero on the own layer.
   */
  sessionSockets?: () => SessionSocketStats;
  /** The logger whose level /logging reads and changes (pino: setting `level` takes effect at once). */
  log: { level: string };
}

export interface SpliceReadsView {
  pooledSockets: number;
  unsupportedSockets: number;
  scavenges: number;
  /**
   * The own layer's TLS read buffers with holders now (pieces handed to a socket write not yet complete; at rest none)
   * and those dropped for good because a write that carried a piece failed (shared/hbone/pooled-reads.ts).
   */
  heldReadBuffers: number;
  droppedReadBuffers: number;
  /** Handle writes (shared/hbone/direct-writes.ts) whose completion is awaited now (at rest none), and all that went in flight. */
  writesPending: number;
  writesInFlight: number;
}

export interface CertificateView {
  identity: string;
  state: 'Available' | 'Expired' | 'NotYetValid';
  serial: string;
  notBefore: string;
  notAfter: string;
  /** Seconds until notAfter (negative once expired). */
  expiresInSeconds: number;
  /** Intermediates between the leaf and the root. */
  chainLength: number;
  issuer: string;
}

export interface ConfigDump {
  node: string;
  generatedAt: string;
  workloads: object[];
  services: unknown[];
  policies: unknown[];
  capturedPods: object[];
  certificates: CertificateView[];
  config: object;
  dns?: object;
}

const parsedCertificates = new WeakMap<WorkloadCertificate, X509Certificate>();

export function certificateView(certificate: WorkloadCertificate, now: number = Date.now()): CertificateView {
  let x509 = parsedCertificates.get(certificate);
  if (!x509) {
    x509 = new X509Certificate(certificate.certPem);
    parsedCertificates.set(certificate, x509);
  }
  const notBefore = certificate.notBefore.getTime();
  const notAfter = certificate.notAfter.getTime();
  return {
    identity: certificate.identity.uri,
    state: now >= notAfter ? 'Expired' : now < notBefore ? 'NotYetValid' : 'Available',
    serial: x509.serialNumber,
    notBefore: certificate.notBefore.toISOString(),
    notAfter: certificate.notAfter.toISOString(),
    expiresInSeconds: Math.floor((notAfter - now) / 1000),
    chainLength: certificate.chainPem.length,
    issuer: x509.issuer.replace(/\n/g, ', '),
  };
}

export function configDump(sources: AdminSources): ConfigDump {
  const workloads = sources.state
    .workloads()
    .map((workload) => ({ ...workload, identity: workloadIdentity(workload).uri }))
    .sort((a, b) => `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`));
  const capturedPods = (sources.capturedPods?.() ?? []).map((pod) => ({
    uid: pod.uid,
    name: pod.name,
    namespace: pod.namespace,
    netns: pod.netns,
    ips: [...pod.ips],
    listeners: sources.listenerStats?.(pod.uid),
  }));
  return {
    node: sources.nodeName,
    generatedAt: new Date().toISOString(),
    workloads,
    services: sources.services?.() ?? [],
    policies: sources.policies?.() ?? [],
    capturedPods,
    certificates: (sources.certificates?.() ?? []).map((certificate) => certificateView(certificate)).sort((a, b) => a.identity.localeCompare(b.identity)),
    config: sources.config ?? {},
    ...(sources.dns ? { dns: sources.dns() } : {}),
  };
}

function sendJson(response: http.ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body, null, 2)}\n`;
  response.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) }).end(text);
}

export function createAdminServer(sources: AdminSources): http.Server {
  return http.createServer((request, response) => {
    const url = new URL(request.url ?? '/', 'http://admin');
    const method = request.method ?? 'GET';
    if (method !== 'GET' && method !== 'POST') {
      sendJson(response, 405, { error: `${method} is not supported: use GET (or POST for /logging)` });
      return;
    }
    switch (url.pathname) {
      case '/healthz':
        response.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n');
        return;
      case '/authz/check': {
        if (!sources.authzCheck) {
          sendJson(response, 404, { error: 'this agent does not check policies' });
          return;
        }
        const source = url.searchParams.get('source');
        const destination = url.searchParams.get('destination');
        const port = Number(url.searchParams.get('port'));
        if (!source || !destination || !Number.isInteger(port) || port < 1 || port > 65535) {
          sendJson(response, 400, { error: 'use /authz/check?source=<ns/pod>&destination=<ns/pod>&port=<1-65535>' });
          return;
        }
        try {
          sendJson(response, 200, sources.authzCheck({ source, destination, port, namespace: url.searchParams.get('namespace') || 'default' }));
        } catch (error) {
          sendJson(response, error instanceof UnknownPodError ? 404 : 500, { error: (error as Error).message });
        }
        return;
      }
      case '/config_dump':
        sendJson(response, 200, configDump(sources));
        return;
      case '/memory':
        sendJson(response, 200, { ...memoryReport(), heapRelease: sources.heapRelease?.(), spliceReads: sources.spliceReads?.(), hboneSessionSockets: sources.sessionSockets?.() });
        return;
      case '/logging': {
        const level = url.searchParams.get('level');
        if (level === null) {
          sendJson(response, 200, { level: sources.log.level });
          return;
        }
        if (!(LOG_LEVELS as readonly string[]).includes(level)) {
          sendJson(response, 400, { error: `unknown log level "${level}": use one of ${LOG_LEVELS.join(', ')}`, level: sources.log.level });
          return;
        }
        const previous = sources.log.level;
        sources.log.level = level;
        sendJson(response, 200, { level, previous });
        return;
      }
      case '/':
        sendJson(response, 200, { endpoints: ['/config_dump', '/logging[?level=debug]', '/memory', '/healthz'] });
        return;
      default:
        sendJson(response, 404, { error: `no admin endpoint ${url.pathname}: try /config_dump, /logging, /memory or /healthz` });
    }
  });
}

export async function startAdminServer(address: { host: string; port: number }, sources: AdminSources): Promise<RunningHttpServer> {
  const server = createAdminServer(sources);
  const bound = await listenReusePort(server, address);
  return { address: bound, close: () => closeHttpServer(server) };
}
