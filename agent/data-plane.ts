/**
 * One instance of the agent's data plane: the captured pods' listeners and everything a connection passes through
 * (outbound and inbound proxies, HBONE pools and servers, policy enforcement, telemetry). The agent's main thread
 * runs one; each proxy worker thread (agent/workers/) runs another over the same pods, its listeners next to the
 * main thread's with SO_REUSEPORT, so the kernel spreads new connections over the cores.
 *
 * Owns: building those parts in the right order and stopping them (listeners first, then a bounded drain).
 * Must not know about: where state, policies and certificates come from (the main thread's sources, or the
 * messages a worker receives), the CNI protocol, or the rules in the pods (only the main thread installs them).
 */
import type { Logger } from 'pino';
import type { AgentConfig } from './config.ts';
import type { CertificateManager } from '../shared/ca/certificate-manager.ts';
import { CaptureManager, type ReleaseReason, type RuleInstaller } from './inpod/capture-manager.ts';
import type { CapturedDnsHandler, CapturedPod } from './inpod/pod-listeners.ts';
import type { IptablesBackend } from './inpod/rules.ts';
import { PolicyEnforcer } from './policy/enforcer.ts';
import type { PolicyStore } from './policy/policy-store.ts';
import { InboundProxy } from './proxy/inbound.ts';
import { OutboundProxy } from './proxy/outbound.ts';
import { TrafficHandler } from './proxy/traffic-handler.ts';
import type { MeshState } from '../shared/mesh/mesh-state.ts';
import { AccessLog } from './telemetry/access-log.ts';
import type { AgentMetrics } from './telemetry/metrics.ts';
import { RejectionLog } from './telemetry/rejection-log.ts';
import { telemetryReporter } from './telemetry/reporter.ts';

export interface DataPlaneOptions {
  /** procSysNet only where rules are installed (the main thread). */
  config: Pick<AgentConfig, 'trustDomain' | 'preserveSourceIp' | 'telemetry' | 'drainMs'> & Partial<Pick<AgentConfig, 'procSysNet' | 'hboneServer' | 'maxOpeningTunnels'>>;
  state: MeshState;
  policies: PolicyStore;
  certificates: CertificateManager;
  metrics: AgentMetrics;
  log: Logger;
  /** Listeners only, no rules: a worker's pods already have theirs from the main thread. */
  listenersOnly?: boolean;
  /** The DNS proxy (main thread only): pods' port 53 is redirected to it and their 15053 sockets handed to it. */
  dns?: CapturedDnsHandler;
  /** Told after a pod's listeners closed and its proxies were let go (logs, the captured-pods record). */
  onReleased?: (pod: CapturedPod, reason: ReleaseReason, error?: Error) => void;
}

export interface DataPlane {
  readonly capture: CaptureManager;
  readonly handler: TrafficHandler;
  /** Stops accepting, then lets open connections finish for up to `config.drainMs`. */
  stop(): Promise<void>;
}

/** A worker's rule installer: the main thread owns the pods' rules, a worker must never touch them. */
const NO_RULES: RuleInstaller = { install: async () => {}, remove: async () => {} };
/** Irrelevant without rules; given so a worker never runs iptables to detect it. */
const UNUSED_BACKEND: IptablesBackend = 'nft';

export function createDataPlane(options: DataPlaneOptions): DataPlane {
  const { config, state, policies, certificates, metrics, log } = options;
  const enforcer = new PolicyEnforcer({ store: policies, state, log });
  enforcer.start();
  // AMBIT_TELEMETRY=off exists to measure telemetry's cost (make bench); a production agent keeps it on.
  const report = config.telemetry
    ? telemetryReporter({ metrics, accessLog: new AccessLog(log), rejectionLog: new RejectionLog(log), onError: (error) => log.error({ err: error.message }, 'telemetry failed') })
    : { opened: () => {}, closed: () => {}, sourceAddressWanted: () => false };
  const handler = new TrafficHandler({
    state,
    outbound: new OutboundProxy({ state, report, ...(config.maxOpeningTunnels !== undefined ? { maxOpeningTunnels: config.maxOpeningTunnels } : {}) }),
    inbound: new InboundProxy({ state, report, certificates, trustDomain: config.trustDomain, policy: enforcer, ...(config.hboneServer ? { hboneServer: config.hboneServer } : {}) }),
    certificates,
    trustDomain: config.trustDomain,
    preserveSourceIp: config.preserveSourceIp,
  });
  const capture = new CaptureManager({
    handler,
    ...(config.procSysNet !== undefined ? { procSysNet: config.procSysNet } : {}),
    ...(options.listenersOnly ? { rules: NO_RULES, backend: UNUSED_BACKEND, netnsCheckIntervalMs: 0 } : {}),
    ...(options.dns ? { dns: options.dns } : {}),
    onReleased: (pod, reason, error) => {
      void handler.forget(pod.uid, config.drainMs);
      options.onReleased?.(pod, reason, error);
    },
  });
  return {
    capture,
    handler,
    async stop() {
      enforcer.stop();
      // Listeners close first (a new agent's listeners already take new connections); open ones drain.
      await capture.close();
      await handler.close(config.drainMs);
    },
  };
}
