/**
 * The agent's configuration: every default in one place, with the reason for its value.
 *
 * Owns: reading the environment (as a DaemonSet sets it) into a validated Config; clear errors for bad values.
 * Must not know about: what the settings drive.
 */
import { DEFAULT_MAX_OPENING_TUNNELS } from './proxy/tunnel-admission.ts';
import os from 'node:os';
import { DEFAULT_TRUST_DOMAIN } from '../shared/identity/index.ts';
import { DEFAULT_AGENT_SOCKET } from '../shared/cni-protocol.ts';
import { DEFAULT_SERVER_IDLE_TIMEOUT_MS, DEFAULT_SERVER_KEEPALIVE_INTERVAL_MS, DEFAULT_SERVER_KEEPALIVE_TIMEOUT_MS, hboneImplementation, type HboneImplementation } from '../shared/hbone/index.ts';
import { DnsError } from './dns/errors.ts';
import { parseUpstreamList, type Upstream } from './dns/upstream.ts';

export interface AgentConfig {
  /** This node's name: the agent captures only pods scheduled here. */
  nodeName: string;
  trustDomain: string;
  /**
   * Where workloads, policies and certificates come from: the control plane (delta xDS + CA service, as in a
   * cluster) or, without one, a cluster directory and a CA root on disk.
   */
  controlPlane?: ControlPlaneConfig;
  /** Local mode: the cluster directory (Pods, Namespaces, policies) the agent reads. */
  clusterDir: string;
  /** Local mode: directory with the CA root (root-cert.pem, ca-key.pem) used to sign workload certificates. */
  localCaDir: string;
  /** Unix socket the CNI plugin calls. */
  cniSocket: string;
  /** Admin endpoint (config dump, log level), localhost only: it reveals the node's whole mesh view. */
  adminAddress: { host: string; port: number };
  /** Prometheus `/metrics`, on every address: Prometheus scrapes the agent pod's IP. */
  metricsAddress: { host: string; port: number };
  /** Readiness `/healthz/ready`: kubelet probes it on the pod IP. */
  readinessAddress: { host: string; port: number };
  /** Deliver inbound connections with the client's source IP (IP_TRANSPARENT), as ztunnel does. */
  preserveSourceIp: boolean;
  /** How long open connections may finish at shutdown before they are cut (ztunnel: 5 s default termination grace). */
  drainMs: number;
  /** Outbound tunnels being opened at once per thread before new connections wait (AMBIT_MAX_OPENING_TUNNELS; default none). */
  maxOpeningTunnels: number;
  logLevel: string;
  /** Per-connection metrics and access logs (AMBIT_TELEMETRY=off only to measure their cost). */
  telemetry: boolean;
  /**
   * Threads that carry traffic (ztunnel's ZTUNNEL_WORKER_THREADS): the main thread plus `workerThreads - 1` proxy
   * workers, each with its own SO_REUSEPORT listeners in every captured pod. AMBIT_WORKER_THREADS; default: one per
   * two cores this process may use, at most 4.
   */
  workerThreads: number;
  /**
   * Where the agent writes a pod's net sysctls (tcp_migrate_req) once inside its namespace: `/proc/sys/net` by
   * default. A container that is not privileged gets /proc/sys read-only, so the DaemonSet mounts the host's
   * /proc/sys/net elsewhere and names it here (AMBIT_PROC_SYS_NET); the kernel shows each process the net sysctls
   * of the namespace it is in, through any mount of them.
   */
  procSysNet: string;
  /** How the pods' HBONE servers (port 15008) find and end dead or idle client connections. */
  hboneServer: HboneServerTimeouts;
  /**
   * The HTTP/2 implementation under HBONE, both ways (AMBIT_HBONE_IMPL: `own`, shared/hbone/h2/, the default;
   * `node`, node:http2). The HBONE library reads the same variable in every thread (shared/hbone/config.ts); this
   * checks it at startup, so a typo stops the agent with the variable named instead of failing its first tunnel.
   */
  hboneImplementation: HboneImplementation;
  dns: DnsConfig;
}

/** The DNS proxy in captured pods (Istio's ISTIO_META_DNS_CAPTURE; on by default, as in current ambient). */
export interface DnsConfig {
  /** AMBIT_DNS_CAPTURE (default on): redirect captured pods' port 53 to the agent's 15053. */
  capture: boolean;
  /** AMBIT_DNS_UPSTREAM (`ip[:port]`, comma-separated); absent: the nameservers of the agent's own resolv.conf. */
  upstreams?: Upstream[];
  /** AMBIT_CLUSTER_DOMAIN: Service hostnames are `<name>.<namespace>.svc.<domain>`; `cluster.local` by default. */
  clusterDomain: string;
}

/**
 * The HBONE server's timers, defaults in shared/hbone/config.ts (ztunnel's values, with the reasons there).
 * AMBIT_HBONE_KEEPALIVE_INTERVAL_MS, AMBIT_HBONE_KEEPALIVE_TIMEOUT_MS, AMBIT_HBONE_IDLE_TIMEOUT_MS; 0 turns keepalive
 * or the idle timeout off. Shorter values find dead clients sooner at the cost of a PING per connection per interval.
 */
export interface HboneServerTimeouts {
  keepaliveIntervalMs: number;
  keepaliveTimeoutMs: number;
  idleTimeoutMs: number;
}

/** The kernel's own view of the current network namespace's sysctls. */
export const DEFAULT_PROC_SYS_NET = '/proc/sys/net';

export interface ControlPlaneConfig {
  /** `host:port` of the xDS server (Istio: istiod:15012). */
  xdsAddress: string;
  /** `host:port` of the CA service; the xDS address by default (one gRPC port, as istiod). */
  caAddress: string;
  /** The mesh root (`root-cert.pem`, as published in ConfigMap istio-ca-root-cert). */
  rootCertFile: string;
  /** The node's bearer token (a projected service account token in Kubernetes, a bootstrap token locally). */
  tokenFile: string;
}

/** Istio's ports for the node proxy's own endpoints. */
export const ADMIN_PORT = 15000;
export const METRICS_PORT = 15020;
export const READINESS_PORT = 15021;
/** ztunnel's default drain deadline: long enough for short requests to finish, short enough for rolling updates. */
export const DEFAULT_DRAIN_MS = 5000;

export class ConfigError extends Error {
  readonly code = 'AMBIT_AGENT_CONFIG';
}

function required(env: NodeJS.ProcessEnv, name: string, why: string): string {
  const value = env[name];
  if (!value) throw new ConfigError(`${name} is not set: ${why}`);
  return value;
}

function port(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0 || value > 65535) throw new ConfigError(`${name}=${raw} is not a port number (0-65535)`);
  return value;
}

function milliseconds(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0 || value > 2 ** 31 - 1) throw new ConfigError(`${name}=${raw} must be a whole number of milliseconds (0 turns it off)`);
  return value;
}

function hboneServerTimeouts(env: NodeJS.ProcessEnv): HboneServerTimeouts {
  const timeouts = {
    keepaliveIntervalMs: milliseconds(env, 'AMBIT_HBONE_KEEPALIVE_INTERVAL_MS', DEFAULT_SERVER_KEEPALIVE_INTERVAL_MS),
    keepaliveTimeoutMs: milliseconds(env, 'AMBIT_HBONE_KEEPALIVE_TIMEOUT_MS', DEFAULT_SERVER_KEEPALIVE_TIMEOUT_MS),
    idleTimeoutMs: milliseconds(env, 'AMBIT_HBONE_IDLE_TIMEOUT_MS', DEFAULT_SERVER_IDLE_TIMEOUT_MS),
  };
  if (timeouts.keepaliveIntervalMs > 0 && timeouts.keepaliveTimeoutMs === 0) {
    throw new ConfigError('AMBIT_HBONE_KEEPALIVE_TIMEOUT_MS=0 with keepalive on: a PING must be given time to be answered (set AMBIT_HBONE_KEEPALIVE_INTERVAL_MS=0 to turn keepalive off)');
  }
  return timeouts;
}

function hboneImplementationOf(env: NodeJS.ProcessEnv): HboneImplementation {
  try {
    return hboneImplementation(env);
  } catch (error) {
    throw new ConfigError((error as Error).message);
  }
}

function flag(env: NodeJS.ProcessEnv, name: string, fallback: boolean): boolean {
  const raw = env[name];
  if (raw === undefined || raw === '') return fallback;
  if (raw === 'true' || raw === '1') return true;
  if (raw === 'false' || raw === '0') return false;
  throw new ConfigError(`${name}=${raw} must be true or false`);
}

/**
 * Default data-plane threads: one per two usable cores, at most four (set AMBIT_WORKER_THREADS for more). The
 * node's pods need the other cores: on a 2-core node a second thread cost 30 % more agent CPU per connection and
 * 50 MB of memory, and made nothing faster (make bench, 2026-11-26).
 */
export const MAX_DEFAULT_WORKER_THREADS = 4;
const CORES_PER_DEFAULT_THREAD = 2;
const MAX_WORKER_THREADS = 64;

function workerThreads(env: NodeJS.ProcessEnv): number {
  const raw = env.AMBIT_WORKER_THREADS;
  if (raw === undefined || raw === '') return Math.max(1, Math.min(Math.floor(os.availableParallelism() / CORES_PER_DEFAULT_THREAD), MAX_DEFAULT_WORKER_THREADS));
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 1 || value > MAX_WORKER_THREADS) throw new ConfigError(`AMBIT_WORKER_THREADS=${raw} must be a whole number from 1 to ${MAX_WORKER_THREADS}`);
  return value;
}

export function configFromEnv(env: NodeJS.ProcessEnv = process.env): AgentConfig {
  const drainMs = Number(env.AMBIT_DRAIN_MS ?? DEFAULT_DRAIN_MS);
  if (!Number.isFinite(drainMs) || drainMs < 0) throw new ConfigError(`AMBIT_DRAIN_MS=${env.AMBIT_DRAIN_MS} must be a non-negative number of milliseconds`);
  const xdsAddress = env.AMBIT_XDS_ADDRESS;
  const controlPlane: ControlPlaneConfig | undefined = xdsAddress
    ? {
        xdsAddress,
        caAddress: env.AMBIT_CA_ADDRESS || xdsAddress,
        rootCertFile: required(env, 'AMBIT_ROOT_CERT_FILE', 'the agent verifies the control plane against the mesh root (root-cert.pem)'),
        tokenFile: required(env, 'AMBIT_TOKEN_FILE', 'the control plane authenticates the agent with a bearer token'),
      }
    : undefined;
  return {
    nodeName: required(env, 'AMBIT_NODE_NAME', 'the agent must know which node it runs on (the DaemonSet sets it from spec.nodeName)'),
    trustDomain: env.AMBIT_TRUST_DOMAIN || DEFAULT_TRUST_DOMAIN,
    ...(controlPlane ? { controlPlane } : {}),
    clusterDir: controlPlane ? (env.AMBIT_CLUSTER_DIR ?? '') : required(env, 'AMBIT_CLUSTER_DIR', 'without AMBIT_XDS_ADDRESS (a control plane), local mode reads Pods and Namespaces from a cluster directory'),
    localCaDir: controlPlane ? '' : required(env, 'AMBIT_LOCAL_CA_DIR', 'without AMBIT_XDS_ADDRESS (a control plane), local mode signs workload certificates with a CA root kept in a directory'),
    cniSocket: env.AMBIT_CNI_SOCKET || DEFAULT_AGENT_SOCKET,
    adminAddress: { host: '127.0.0.1', port: port(env, 'AMBIT_ADMIN_PORT', ADMIN_PORT) },
    metricsAddress: { host: env.AMBIT_METRICS_HOST || '0.0.0.0', port: port(env, 'AMBIT_METRICS_PORT', METRICS_PORT) },
    readinessAddress: { host: env.AMBIT_READINESS_HOST || '0.0.0.0', port: port(env, 'AMBIT_READINESS_PORT', READINESS_PORT) },
    preserveSourceIp: flag(env, 'AMBIT_PRESERVE_SOURCE_IP', true),
    drainMs,
    maxOpeningTunnels: maxOpeningTunnels(env),
    logLevel: env.AMBIT_LOG_LEVEL || 'info',
    telemetry: env.AMBIT_TELEMETRY !== 'off',
    workerThreads: workerThreads(env),
    procSysNet: procSysNet(env),
    hboneServer: hboneServerTimeouts(env),
    hboneImplementation: hboneImplementationOf(env),
    dns: dnsConfig(env),
  };
}

function maxOpeningTunnels(env: NodeJS.ProcessEnv): number {
  const raw = env.AMBIT_MAX_OPENING_TUNNELS;
  if (raw === undefined || raw === '') return DEFAULT_MAX_OPENING_TUNNELS;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 1) throw new ConfigError(`AMBIT_MAX_OPENING_TUNNELS=${raw} must be a whole number of at least 1`);
  return value;
}

function dnsConfig(env: NodeJS.ProcessEnv): DnsConfig {
  let upstreams: Upstream[] | undefined;
  if (env.AMBIT_DNS_UPSTREAM) {
    try {
      upstreams = parseUpstreamList(env.AMBIT_DNS_UPSTREAM);
    } catch (error) {
      if (error instanceof DnsError) throw new ConfigError(`AMBIT_DNS_UPSTREAM: ${error.message}`);
      throw error;
    }
  }
  return {
    capture: flag(env, 'AMBIT_DNS_CAPTURE', true),
    ...(upstreams ? { upstreams } : {}),
    clusterDomain: env.AMBIT_CLUSTER_DOMAIN || 'cluster.local',
  };
}

function procSysNet(env: NodeJS.ProcessEnv): string {
  const value = env.AMBIT_PROC_SYS_NET || DEFAULT_PROC_SYS_NET;
  // The agent opens it inside each pod's namespace (agent/inpod/pod-routing.ts): an absolute path of plain characters only.
  if (!/^\/[A-Za-z0-9._/-]+$/.test(value)) throw new ConfigError(`AMBIT_PROC_SYS_NET=${value} must be an absolute path (letters, digits, . _ - /): where the host's /proc/sys/net is mounted`);
  return value;
}
