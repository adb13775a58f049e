/**
 * The node agent: ztunnel's role plus the CNI node agent's, for the pods of one node.
 *
 * Owns: wiring the parts together and their lifecycle (start-up order, readiness, drain on SIGTERM).
 *   mesh state (cluster directory now, xDS later) -> proxy decisions
 *   CNI server -> capture manager (rules + in-pod listeners) -> traffic handler -> outbound / inbound proxy
 *   certificate manager (local CA now, CA service later) -> HBONE client pools and servers
 * Must not know about: the details of any of those parts.
 */
import http from 'node:http';
import path from 'node:path';
import { pino } from 'pino';
import { configFromEnv, type AgentConfig } from './config.ts';
import { CapturedPodsFile } from './captured-pods-file.ts';
import { apiServerAnnotator, clusterDirAnnotator, REDIRECTION_ANNOTATION } from './pod-annotator.ts';
import { inClusterCredentials } from '../shared/k8s/api-request.ts';
import { EnrollmentWatcher } from './enrollment-watcher.ts';
import { createCniCallRunner, type EarlyAdd } from './cni-call.ts';
import { startCniServer, type PodCapture } from './cni-server.ts';
import { traceRecord, traceStep, withCniTrace, type CniTrace } from './cni-trace.ts';
import { PodReleases } from './pod-releases.ts';
import { readNetnsIdentity } from './inpod/capture-manager.ts';
import { stopInpodCommands } from './inpod/iptables.ts';
import { CertificateManager } from '../shared/ca/certificate-manager.ts';
import type { PodInfo } from './inpod/pod-listeners.ts';
import type { PodRef } from './inpod/capture-manager.ts';
import { startSources, WORKLOAD_WAIT_MS } from './sources.ts';
import { MeshState } from '../shared/mesh/mesh-state.ts';
import { isEnrolled, workloadIdentity } from '../shared/mesh/workload.ts';
import { startAdminServer } from './admin.ts';
import { servicesView } from '../shared/mesh/views.ts';
import { checkAuthorization } from './policy/authz-check.ts';
import { ClusterDirPolicySource } from './policy/cluster-dir-policy-source.ts';
import { PolicyStore, type LocalPolicy } from './policy/policy-store.ts';
import { createDataPlane, type DataPlane } from './data-plane.ts';
import { createDnsProxy } from './dns/dns-proxy.ts';
import { ProxyWorkers } from './workers/proxy-workers.ts';
import { AgentMetrics } from './telemetry/metrics.ts';
import { startMetricsServer } from './telemetry/metrics-server.ts';
import { startHeapRelease } from '../shared/memory/heap-release.ts';
import { nativeMemory } from '../shared/memory/native-memory.ts';
import { batchedStdout } from './telemetry/log-destination.ts';
import { directWriteStats, pooledReadStats, readBufferScavenges, sharedReadStats } from '../shared/hbone/index.ts';
import { sessionSocketStats } from '../shared/hbone/session-socket.ts';

export interface RunningAgent {
  readonly config: AgentConfig;
  readonly state: MeshState;
  readonly capture: DataPlane['capture'];
  stop(): Promise<void>;
}

export async function startAgent(config: AgentConfig): Promise<RunningAgent> {
  const log = pino({ level: config.logLevel, base: { node: config.nodeName } }, batchedStdout());
  const state = new MeshState();
  const sources = await startSources(config, state, log);
  // --- policy (agent/policy/): AuthorizationPolicy + PeerAuthentication, enforced by the inbound proxy. Loaded
  // before any pod is (re-)captured, so no connection is accepted without the policies in force. The proxy
  // workers get the same inputs (their replicas are fed below).
  const policies = new PolicyStore({ log });
  const certificates = new CertificateManager(sources.certificates, {
    onError: (identity, error) => log.error({ identity: identity.uri, err: error.message }, 'certificate fetch failed'),
  });
  const workers = new ProxyWorkers({ count: config.workerThreads - 1, config, state, certificates, log, capturedPods: () => capture.capturedPods() });
  sources.onAuthorization((added, removed) => {
    const result = policies.applyXds(added, removed);
    const rejected = new Set((result?.rejected ?? []).map((entry) => entry.name));
    workers.applyXdsPolicies(added.filter((update) => !rejected.has(update.name)), removed);
    return result;
  });
  const policyFeed = {
    setLocal: (local: readonly LocalPolicy[]) => {
      policies.setLocal(local);
      workers.setLocalPolicies(local);
    },
  };
  const policySource = config.controlPlane ? undefined : new ClusterDirPolicySource({ dir: config.clusterDir, store: policyFeed, log });
  await policySource?.start();
  // --- end policy
  const metrics = new AgentMetrics();
  metrics.aggregateWith(() => workers.metrics());
  const record = new CapturedPodsFile(path.join(path.dirname(config.cniSocket), `captured-pods-${config.nodeName}.json`));
  // The DNS proxy sees the mesh through a read-only Service lookup only, and runs on the main thread alone.
  const dns = config.dns.capture
    ? await createDnsProxy({
        config: config.dns, state, log, registry: metrics.registry,
        sourceOf: (pod) => {
          const workload = state.workloadByName(pod.namespace, pod.name);
          return workload ? { canonicalService: workload.canonicalName, canonicalRevision: workload.canonicalRevision } : undefined;
        },
      })
    : undefined;
  const dataPlane = createDataPlane({
    config,
    state,
    policies,
    certificates,
    metrics,
    log,
    ...(dns ? { dns: dns.handler } : {}),
    onReleased: (pod, reason, error) => {
      log.info({ pod: `${pod.namespace}/${pod.name}`, reason, err: error?.message }, 'pod released');
      // A deletion (releasePod) and a shutdown (workers.stop) see to the workers themselves.
      if (reason !== 'shutdown' && reason !== 'deleted') void workers.delPod(pod.uid);
      // A shutdown lets go of every pod, but they stay captured (their rules stay; the next agent takes them over):
      // the record must still list them, or a new agent that already started (listeners overlapping) would find it
      // emptied by the old one, and after its own next restart would re-open no listeners (connections refused).
      if (reason !== 'shutdown') void record.write(capture.capturedPods()).catch((e: Error) => log.error(e.message));
    },
  });
  const { capture, handler } = dataPlane;
  await workers.start();

  // Istio's mark on captured pods (ambient.istio.io/redirection): on the Pod in the API server in a cluster, in its
  // file in a local cluster directory. Written before the ADD is acknowledged, so a local runtime's status update
  // that follows keeps it; a failure is logged, never a failed capture.
  const clusterCredentials = inClusterCredentials();
  const annotator = clusterCredentials ? apiServerAnnotator(clusterCredentials) : config.clusterDir ? clusterDirAnnotator(config.clusterDir) : undefined;
  const markPod = async (pod: { namespace: string; name: string }, captured: boolean): Promise<void> => {
    await annotator?.mark(pod, captured).catch((error: Error) => log.warn({ pod: `${pod.namespace}/${pod.name}`, err: error.message }, `cannot ${captured ? 'set' : 'remove'} annotation ${REDIRECTION_ANNOTATION}`));
  };

  const releases = new PodReleases((uid, error) => log.error({ uid, err: error.message }, 'releasing a pod after its CNI DEL failed'));
  /**
   * Pods whose ADD this agent answered as not enrolled and that it has not tried to capture since: their namespace was
   * new at that ADD and nothing of ours went into it, so their DEL needs no look at its rules (a process in the pod).
   */
  const seenNotCaptured = new Set<string>();
  /**
   * Captures started when a forwarded ADD arrived, before the plugin decided (startAdd below), by pod uid: the
   * plugin's pod-add adopts one (capturePod), its pod-seen or its failure takes it back (undoEarlyCapture).
   */
  const earlyCaptures = new Map<string, Promise<void>>();
  /** Takes back a capture started early that no capturePod adopted: listeners closed, rules out now. */
  const undoEarlyCapture = async (pod: PodInfo): Promise<void> => {
    const started = earlyCaptures.get(pod.uid);
    if (started === undefined) return;
    earlyCaptures.delete(pod.uid);
    await started.catch(() => undefined);
    if (earlyCaptures.has(pod.uid) || !capture.isCaptured(pod.uid)) return;
    await releasePod({ uid: pod.uid, netns: pod.netns }).catch((error: Error) => log.error({ pod: `${pod.namespace}/${pod.name}`, err: error.message }, 'taking back a capture started before the plugin decided failed'));
  };

  /**
   * Everything a pod needs before its ADD is acknowledged: known to the mesh state, a certificate, rules, listeners,
   * the record and the mark; `alsoBeforeAck` (the known-pods record) is written once the pod is captured (it would
   * otherwise start a second capture of a pod it sees enrolled and not captured yet). The certificate is fetched, the
   * captured-pods record written and the pod marked while the rules go in (the ADD waits for the longest of them, not
   * their sum); if the rules, the listeners or the certificate cannot be had, the pod is released again, the record
   * rewritten without it and the mark taken off, and the ADD fails (fail closed). A crash between the record and the
   * end of the capture leaves the pod listed: the restarted agent captures it again, or drops it when its namespace
   * is gone (the runtime retries a failed ADD in a new sandbox, or deletes it).
   */
  const capturePod = async (pod: PodInfo, alsoBeforeAck?: () => Promise<void>): Promise<void> => {
    seenNotCaptured.delete(pod.uid); // from here on, rules may go in
    earlyCaptures.delete(pod.uid); // a capture started early is this one's now (capture.add below joins it)
    // A release of the same pod still running after its DEL's answer (a recreated sandbox) finishes first.
    await releases.settled(pod.uid);
    if (!state.workloadByName(pod.namespace, pod.name)) await sources.refresh();
    const workload = await state.waitForWorkload(pod.namespace, pod.name, WORKLOAD_WAIT_MS);
    if (!workload) throw new Error(`pod ${pod.namespace}/${pod.name} is unknown to ${sources.describe} after ${WORKLOAD_WAIT_MS} ms`);
    if (!isEnrolled(workload)) throw new Error(`pod ${pod.namespace}/${pod.name} is not enrolled in the mesh: ${workload.captureReason}`);
    traceStep('workload');
    const certificate = Promise.resolve(certificates.certificateFor(workloadIdentity(workload)));
    certificate.catch(() => undefined); // awaited below; a capture that fails first must not leave it unhandled
    record.startCapture(pod);
    const recorded = Promise.all([record.write(capture.capturedPods()), markPod(pod, true)]);
    recorded.catch(() => undefined); // awaited below, after the capture
    /**
     * A failed capture taken back, so the ADD fails cleanly (fail closed): once what is in flight has settled, the
     * record rewritten without the pod (with the rules and listeners that did go in released first, when
     * `captured`), and the mark off.
     */
    const takeBack = async (inFlight: Promise<unknown>[], captured: boolean): Promise<void> => {
      await Promise.allSettled(inFlight);
      record.settleCapture(pod.uid);
      if (captured) await releasePod({ uid: pod.uid, netns: pod.netns });
      else await record.write(capture.capturedPods()).catch((writeError: Error) => log.error(writeError.message));
      await markPod(pod, false);
    };
    try {
      await capture.add(pod);
    } catch (error) {
      await takeBack([recorded], false);
      throw error;
    }
    const workersAdded = workers.addPod(pod);
    const remembered = alsoBeforeAck?.();
    try {
      await Promise.all([
        workersAdded.then(() => traceStep('workers')),
        certificate.then(() => traceStep('certificate')),
        recorded.then(() => traceStep('records')),
        remembered,
      ]);
    } catch (error) {
      // Not every thread listens, no certificate, or no record: take the pod back from all of them (and its rules),
      // so the pod does not start uncaptured, or captured and unrecorded.
      await takeBack([workersAdded, recorded, Promise.resolve(remembered)], true);
      throw error;
    }
    record.settleCapture(pod.uid);
    traceStep('known-pods');
    log.info({ pod: `${pod.namespace}/${pod.name}`, ips: pod.ips, identity: workloadIdentity(workload).uri }, 'pod captured');
  };

  // Pods captured before a restart: re-open their listeners next to the old agent's (SO_REUSEPORT) first.
  const previous = await record.read();
  const stillEnrolled = previous.filter((pod) => {
    const workload = state.workloadByName(pod.namespace, pod.name);
    return workload !== undefined && isEnrolled(workload);
  });
  for (const pod of stillEnrolled) {
    const workload = state.workloadByName(pod.namespace, pod.name);
    if (workload) await Promise.resolve(certificates.certificateFor(workloadIdentity(workload))).catch(() => undefined);
  }
  const reconciled = await capture.reconcile(stillEnrolled);
  for (const uid of reconciled.captured) {
    const pod = capture.capturedPods().find((captured) => captured.uid === uid);
    if (pod) await workers.addPod(pod).catch((error: Error) => log.error({ pod: `${pod.namespace}/${pod.name}`, err: error.message }, 'proxy workers could not take the pod'));
  }
  log.info({ captured: reconciled.captured.length, failed: reconciled.failed.length }, 'reconciled pods captured before start');
  await record.write(capture.capturedPods());

  const releasePod = async (ref: PodRef): Promise<void> => {
    await capture.del(ref);
    await workers.delPod(ref.uid);
    traceStep('workers');
    await handler.forget(ref.uid, 0);
    traceStep('connections');
    await record.write(capture.capturedPods());
    traceStep('record');
  };
  // Running pods follow their enrollment (namespace or pod label changes), as in Istio's ambient mode.
  const enrollment = new EnrollmentWatcher({
    state,
    file: new CapturedPodsFile(path.join(path.dirname(config.cniSocket), `known-pods-${config.nodeName}.json`)),
    isCaptured: (uid) => capture.isCaptured(uid),
    capture: capturePod,
    // A running pod whose enrollment ended: no longer redirected, so no longer marked. (A CNI DEL needs no unmark:
    // the pod is going away, and rewriting its object then could bring a deleted one back in a local directory.)
    release: async (pod) => {
      await releasePod({ uid: pod.uid, netns: pod.netns });
      await markPod(pod, false);
    },
    log,
  });
  await enrollment.start();

  // Whether the agent serves ADDs (CNI STATUS and the readiness probe): from the end of start-up until stop() begins.
  let ready = false;
  const logTrace = (trace: CniTrace): void => log.debug(traceRecord(trace), 'cni call timing');
  const cniCapture: PodCapture = {
    add: (pod) => capturePod(pod, () => enrollment.remember(pod)),
    // Best effort, as the plugin treats it: known in memory at once, its record written after the answer.
    seen: async (pod) => {
      // The agent's state said enrolled and the plugin's lookup did not: the plugin decides this ADD; the pod is then
      // remembered as any pod not enrolled (which captures it after all if the agent's state still says so).
      await undoEarlyCapture(pod);
      seenNotCaptured.add(pod.uid);
      // Its namespace kept from a DEL that left our rules to its removal: out before it starts (nothing deferred: at once).
      const settled = capture.settleDeferredRuleRemoval(pod.netns);
      enrollment.remember(pod).catch((error: Error) => log.error({ pod: `${pod.namespace}/${pod.name}`, err: error.message }, 'cannot write the known-pods record'));
      return settled;
    },
    // Answered once the release is queued (the capture manager's per-pod queue orders it before any later ADD of the
    // pod); the release itself (listeners, rules, records) runs after the answer. The namespace is looked at now, so
    // the release touches it only if it is still the one the DEL named.
    del: async (ref) => {
      const neverCaptured = seenNotCaptured.has(ref.uid) && !capture.isCaptured(ref.uid);
      // undefined: no namespace there (any more), or nothing of ours in it; null: unreadable now, so the release decides as before.
      const identity = ref.netns === undefined || neverCaptured ? undefined : await readNetnsIdentity(ref.netns).catch(() => null);
      // The sandbox is being torn down: its rules are left to its namespace's removal (capture-manager.ts).
      const releaseRef: PodRef = identity === undefined ? { uid: ref.uid }
        : identity === null ? { uid: ref.uid, netns: ref.netns!, deferRuleRemoval: true } : { uid: ref.uid, netns: ref.netns!, netnsIdentity: identity, deferRuleRemoval: true };
      traceStep('netns');
      releases.start(ref.uid, () => withCniTrace('release after DEL', async () => {
        await releasePod(releaseRef);
        await enrollment.forget(ref.uid);
        seenNotCaptured.delete(ref.uid);
        traceStep('known-pods');
      }, logTrace));
    },
    // CNI GC: pods whose sandbox the runtime no longer has (their DEL was missed, e.g. while the agent was down).
    gc: async (validContainerIds) => {
      const stale = await enrollment.forgetAllBut(validContainerIds);
      for (const pod of stale) {
        // One pod that cannot be released must not keep the others captured.
        if (capture.isCaptured(pod.uid)) {
          await releasePod({ uid: pod.uid, netns: pod.netns }).catch((error: Error) => log.error({ pod: `${pod.namespace}/${pod.name}`, err: error.message }, 'CNI GC: releasing a stale pod failed'));
        }
      }
      const forgotten = stale.map((pod) => `${pod.namespace}/${pod.name}`);
      if (forgotten.length > 0) log.info({ pods: forgotten }, 'CNI GC: forgot pods whose sandbox is gone');
      return forgotten;
    },
  };
  /**
   * A forwarded ADD of a pod this agent's mesh state has as enrolled: its rules and listeners start going in while
   * the plugin looks the pod up (the plugin still decides; agent/cni-call.ts settles this before the answer).
   */
  const startAdd = (pod: PodInfo): EarlyAdd | undefined => {
    const workload = state.workloadByName(pod.namespace, pod.name);
    if (!ready || workload === undefined || !isEnrolled(workload) || capture.isCaptured(pod.uid) || earlyCaptures.has(pod.uid)) return undefined;
    seenNotCaptured.delete(pod.uid); // rules may go in from here on
    const started = releases.settled(pod.uid).then(() => capture.add(pod));
    started.catch(() => undefined); // a failure is the plugin's pod-add's to report (its capture tries again)
    earlyCaptures.set(pod.uid, started);
    // Not the certificate: its CSR is built on this thread, which the plugin's lookup needs now; capturePod asks for it
    // after the pod-add (at load 7 a prefetch here made the lookup 35 ms, not 9; re-tried with the rules as a netlink
    // batch at load 25-41, BENCHMARKS.md s9-podrules: noise either way).
    traceStep('capture-started');
    return { settle: (captured) => (captured ? Promise.resolve() : undoEarlyCapture(pod)) };
  };
  const cni = await startCniServer({
    socketPath: config.cniSocket,
    ready: () => ready,
    cniCall: createCniCallRunner(config.cniSocket, { capture: cniCapture, ready: () => ready, startAdd }),
    capture: cniCapture,
    // Where each CNI call's milliseconds went (agent/cni-trace.ts): AMBIT_LOG_LEVEL=debug shows them.
    onTrace: logTrace,
  });

  // Memory back to the kernel once a burst is over (and the start-up garbage dropped at the first quiet check).
  const heapRelease = startHeapRelease({
    releaseNative: nativeMemory,
    onRelease: (before, after) => log.debug({ heapBefore: before, heapAfter: after }, 'memory-reducing GC after a burst'),
  });
  const admin = await startAdminServer(config.adminAddress, {
    policies: () => policies.dump(),
    services: () => servicesView(state),
    ...(dns ? { dns: () => ({ upstreams: dns.upstreams, stats: { ...dns.server.stats } }) } : {}),
    nodeName: config.nodeName,
    state,
    capturedPods: () => capture.capturedPods(),
    listenerStats: (uid) => capture.listenerStats(uid),
    authzCheck: (query) => checkAuthorization({ nodeName: config.nodeName, state, policies }, query),
    certificates: () => certificates.store.all(),
    config,
    heapRelease: () => heapRelease.stats,
    spliceReads: () => {
      const shared = sharedReadStats();
      const writes = directWriteStats();
      return { ...pooledReadStats(), scavenges: readBufferScavenges(), heldReadBuffers: shared.heldBuffers, droppedReadBuffers: shared.droppedBuffers, writesPending: writes.writesPending, writesInFlight: writes.writesInFlight };
    },
    sessionSockets: sessionSocketStats,
    // The log level switch reaches the proxy workers too.
    log: {
      get level() {
        return log.level;
      },
      set level(level: string) {
        log.level = level;
        workers.setLogLevel(level);
      },
    },
  });
  const metricsServer = await startMetricsServer(config.metricsAddress, metrics);

  const readiness = http.createServer((request, response) => {
    const ok = request.url === '/healthz/ready' && ready;
    response.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(ok ? 'ready\n' : 'not ready\n');
  });
  // SO_REUSEPORT: during a restart the new agent listens before the old one has closed.
  await new Promise<void>((resolve) => readiness.listen({ port: config.readinessAddress.port, host: config.readinessAddress.host, reusePort: true }, resolve));
  ready = true;
  log.info({ workerThreads: workers.count + 1, cniSocket: config.cniSocket, readiness: config.readinessAddress, admin: config.adminAddress, metrics: config.metricsAddress }, 'agent ready');

  return {
    config,
    state,
    capture,
    async stop() {
      ready = false;
      heapRelease.stop();
      sources.stop();
      enrollment.stop();
      policySource?.stop();
      await cni.close();
      // DELs answered before this stop have their release finished, records included.
      await releases.drain();
      // Listeners close first (a new agent's listeners already take new connections); open ones drain.
      await Promise.all([dataPlane.stop(), workers.stop()]);
      certificates.close();
      await new Promise((resolve) => readiness.close(resolve));
      await Promise.all([admin.close(), metricsServer.close()]);
      await stopInpodCommands();
    },
  };
}

async function main(): Promise<void> {
  let config: AgentConfig;
  try {
    config = configFromEnv();
  } catch (error) {
    process.stderr.write(`ambit agent: ${(error as Error).message}\n`);
    process.exit(2);
  }
  const agent = await startAgent(config);
  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    void agent.stop().then(() => process.exit(0));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

if (import.meta.main) {
  main().catch((error: Error) => {
    process.stderr.write(`ambit agent failed to start: ${error.stack ?? error.message}\n`);
    process.exit(1);
  });
}
