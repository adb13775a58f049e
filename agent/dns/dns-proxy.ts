/**
 * Assembles the agent's DNS proxy from its configuration: the upstream resolvers (configured, or the agent's own
 * resolv.conf), the Service records over the mesh state, the server, and the handler the capture layer gives each
 * pod's 15053 sockets to.
 *
 * Owns: that wiring, reading the agent's resolv.conf once at start, and throttling upstream-failure logs.
 * Must not know about: rules, listeners, pods beyond what the capture layer hands over.
 */
import { readFile } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { Registry } from 'prom-client';
import type { DnsConfig } from '../config.ts';
import type { CapturedDnsHandler, CapturedPod } from '../inpod/pod-listeners.ts';
import { Forwarder } from './forwarder.ts';
import { MeshServiceRecords, type ServiceState } from './mesh-records.ts';
import { DnsMetrics, type DnsSource } from './metrics.ts';
import { DnsServer } from './server.ts';
import { podDnsHandler } from './transport.ts';
import { nameserversOf, type Upstream } from './upstream.ts';

/** The resolv.conf the agent's own lookups use: in the DaemonSet (ClusterFirstWithHostNet), kube-dns. */
export const AGENT_RESOLV_CONF = '/etc/resolv.conf';
/** At most one warning per this interval about upstream failures (a dead resolver must not flood the log). */
const UPSTREAM_WARNING_INTERVAL_MS = 10_000;

export interface DnsProxy {
  server: DnsServer;
  handler: CapturedDnsHandler;
  upstreams: readonly Upstream[];
}

export interface DnsProxyOptions {
  config: DnsConfig;
  state: ServiceState;
  log: Logger;
  /** The agent's metrics registry: ztunnel's DNS series are added to it. */
  registry?: Registry;
  /** The asking pod's canonical service and revision (the metrics' source labels). */
  sourceOf?: (pod: CapturedPod) => DnsSource | undefined;
  resolvConf?: string;
}

export async function createDnsProxy(options: DnsProxyOptions): Promise<DnsProxy> {
  const { config, log } = options;
  let upstreams = config.upstreams;
  if (upstreams === undefined) {
    const file = options.resolvConf ?? AGENT_RESOLV_CONF;
    const text = await readFile(file, 'utf8').catch((error: Error) => {
      log.warn({ err: error.message }, `cannot read ${file}: names outside the mesh will get SERVFAIL (set AMBIT_DNS_UPSTREAM)`);
      return '';
    });
    upstreams = nameserversOf(text);
  }
  let lastWarning = 0;
  let suppressed = 0;
  const server = new DnsServer({
    domain: config.clusterDomain,
    records: new MeshServiceRecords(options.state),
    forwarder: new Forwarder({ upstreams }),
    ...(options.registry ? { metrics: new DnsMetrics(options.registry) } : {}),
    onUpstreamError: (error) => {
      const now = Date.now();
      if (now - lastWarning < UPSTREAM_WARNING_INTERVAL_MS) {
        suppressed++;
        return;
      }
      log.warn({ code: error.code, err: error.message, suppressed }, 'DNS upstream failed; clients got SERVFAIL');
      lastWarning = now;
      suppressed = 0;
    },
  });
  log.info({ upstreams: upstreams.map((u) => `${u.address}:${u.port}`), domain: config.clusterDomain }, 'DNS proxy on 15053 in captured pods');
  return { server, handler: podDnsHandler(server, options.sourceOf), upstreams };
}
