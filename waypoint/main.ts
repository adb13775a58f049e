/**
 * The waypoint: Istio ambient's L7 proxy for the Services (and workloads) bound to a Gateway of class
 * `istio-waypoint`. Source agents send it HBONE streams under the client's identity with the original VIP:port as
 * `:authority`; it terminates them, picks an endpoint and opens HBONE to endpointIP:15008 under its own identity.
 *
 * Owns: wiring and lifecycle: certificate (control plane CA) -> xDS (Address resources into a MeshState) -> HBONE
 * listener on 15008 -> readiness on 15021; drain on SIGTERM.
 * Must not know about: the details of those parts.
 */
import http from 'node:http';
import { readFile } from 'node:fs/promises';
import { setFlagsFromString } from 'node:v8';
import { pino, type Logger } from 'pino';
import { BatchedLogDestination, bufferFileSink } from './log-destination.ts';
import { HboneClientPool, HboneServer, type HboneRequest, type HboneServerOptions } from '../shared/hbone/index.ts';
import { H2TunnelServer } from '../shared/hbone/h2/tunnel-server.ts';
import { spiffeId } from '../shared/identity/index.ts';
import { controlPlaneIdentity, controlPlaneServerName } from '../shared/xds/client.ts';
import { DESTINATION_POLICY_TYPE_URL, HTTP_AUTHORIZATION_TYPE_URL, HTTP_ROUTES_TYPE_URL, RATE_LIMIT_TYPE_URL, REQUEST_AUTHENTICATION_TYPE_URL } from '../shared/xds/protos.ts';
import { servicesView } from '../shared/mesh/views.ts';
import { CaClient } from '../shared/ca/ca-client.ts';
import { CertificateManager } from '../shared/ca/certificate-manager.ts';
import { MeshState } from '../shared/mesh/mesh-state.ts';
import { XdsSource } from '../shared/mesh/xds-source.ts';
import type { Workload } from '../shared/mesh/workload.ts';
import { configFromEnv, WAYPOINT_ADMIN_PORT, WAYPOINT_HEAP_RELEASE_CALM_CHECKS, WAYPOINT_HEAP_RELEASE_CALM_UTILIZATION, WAYPOINT_HEAP_RELEASE_GROWTH_BYTES, WAYPOINT_HEAP_RELEASE_QUIET_UTILIZATION, WAYPOINT_DRAIN_MS, WAYPOINT_HBONE_PORT, WAYPOINT_METRICS_PORT, WAYPOINT_READINESS_PORT, WAYPOINT_READY_MESSAGE, type WaypointConfig } from './config.ts';
import { WaypointError } from './errors.ts';
import { answer, canAnswer, type TerminatedStream } from './hbone-leg.ts';
import { H2Proxy } from './h2-proxy.ts';
import { H2OwnSessionPool } from './h2-own-upstream.ts';
import { H2SessionPool } from './h2-upstream.ts';
import { HttpEntry } from './http-entry.ts';
import { HttpProxy } from './http-proxy.ts';
import { L4Forwarder } from './l4-forwarder.ts';
import { WaypointMetrics } from './metrics.ts';
import { portProtocol } from './protocols.ts';
import { RouteTable } from './route-table.ts';
import { Upstreams } from './upstream.ts';
import { DestinationPolicyTable } from './destination/policy-table.ts';
import { DestinationTraffic } from './destination/destination-traffic.ts';
import { AuthzMetrics } from './authz/metrics.ts';
import { PolicyTable } from './authz/policy-table.ts';
import { RequestGate } from './authz/request-gate.ts';
import { meshFetchText } from './jwt/mesh-fetch.ts';
import { RequestAuthenticator } from './jwt/request-authenticator.ts';
import { anonymousRss, startHeapRelease } from '../shared/memory/heap-release.ts';
import { nativeMemory } from '../shared/memory/native-memory.ts';

/** Access-log bytes gathered before a write (about ten lines). */
const ACCESS_LOG_BATCH_BYTES = 8192;
/** Longest a log line waits in the batch. */
const ACCESS_LOG_FLUSH_MS = 250;

export interface RunningWaypoint {
  stop(): Promise<void>;
}

function listenHttp(server: http.Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
}

export async function startWaypoint(config: WaypointConfig, log: Logger): Promise<RunningWaypoint> {
  const state = new MeshState();
  const routes = new RouteTable();
  const metrics = new WaypointMetrics();
  const destinationPolicies = new DestinationPolicyTable();
  const destinations = new DestinationTraffic(destinationPolicies, metrics.registry);
  // L7 policy: the JWKS fetcher needs the upstreams, made once the certificate is in place (fetches wait for it).
  const jwksVia: { upstreams?: Upstreams } = {};
  const authenticator = new RequestAuthenticator({
    fetchText: (uri) => (jwksVia.upstreams ? meshFetchText(state, jwksVia.upstreams)(uri) : Promise.reject(new Error('the waypoint is starting'))),
    refreshMs: config.jwksRefreshMs,
    onJwksError: (uri, error) => log.warn({ uri, err: error.message }, 'JWKS fetch failed; serving the last keys'),
  });
  const policies = new PolicyTable(config.gatewayName, authenticator);
  const [rootCertPem, token] = await Promise.all([readFile(config.rootCertFile, 'utf8'), readFile(config.tokenFile, 'utf8')]);
  const xds = new XdsSource({
    address: config.xdsAddress,
    rootCertPem,
    token: token.trim(),
    nodeName: config.nodeName,
    trustDomain: config.trustDomain,
    state,
    handlers: { [HTTP_ROUTES_TYPE_URL]: routes.apply, [DESTINATION_POLICY_TYPE_URL]: destinationPolicies.apply, [HTTP_AUTHORIZATION_TYPE_URL]: policies.applyAuthorizations, [REQUEST_AUTHENTICATION_TYPE_URL]: policies.applyRequestAuthentications, [RATE_LIMIT_TYPE_URL]: policies.applyRateLimits },
    onStatus: (status) => (status.state === 'disconnected' ? log.warn({ ...status }, 'xDS stream down; serving the last config') : log.info({ state: status.state }, 'xDS')),
    onNack: (typeUrl, message) => log.warn({ typeUrl, reason: message }, 'xDS resource rejected (NACK); keeping the last good one'),
  });
  await xds.start();
  const serverName = controlPlaneServerName(config.xdsAddress);
  const ca = await CaClient.open({
    address: config.xdsAddress,
    rootsFile: config.rootCertFile,
    tokenFile: config.tokenFile,
    node: config.nodeName,
    serverIdentity: controlPlaneIdentity(config.trustDomain),
    ...(serverName ? { serverName } : {}),
  });
  const certificates = new CertificateManager(ca, { onError: (identity, error) => log.error({ identity: identity.uri, err: error.message }, 'certificate fetch failed') });
  const identity = spiffeId(config.trustDomain, config.namespace, config.serviceAccount);
  await certificates.certificateFor(identity);
  // Both legs on the layer AMBIT_WAYPOINT_HBONE names (config.ts), whatever the agents' AMBIT_HBONE_IMPL says.
  const pool = new HboneClientPool({ certificateFor: (id) => certificates.certificateFor(id), trustDomain: config.trustDomain, implementation: config.hbone });
  // Its own workload, for locality-aware endpoint choice; a stand-in with its node until the control plane sends it.
  const standIn: Workload = {
    uid: '', name: config.podName, namespace: config.namespace, serviceAccount: config.serviceAccount, trustDomain: config.trustDomain, node: config.nodeName,
    addresses: [], tunnelProtocol: 'NONE', captureReason: 'waypoint', canonicalName: config.podName, canonicalRevision: 'latest', workloadName: config.podName,
  };
  // Looked up again only when the mesh state changed (state.version): a lookup builds and hashes a key string, and
  // the endpoint pick asks twice per request.
  let self = standIn;
  let selfAt = -1;
  const selfWorkload = (): Workload => {
    if (selfAt !== state.version) {
      self = state.workloadByName(config.namespace, config.podName) ?? standIn;
      selfAt = state.version;
    }
    return self;
  };
  const upstreams = new Upstreams({ state, pool, identity, self: selfWorkload });
  const l4 = new L4Forwarder(upstreams, (outcome) =>
    log.info(
      { src: outcome.request.peerIdentity.uri, authority: `${outcome.request.target.host}:${outcome.request.target.port}`, service: outcome.service?.hostname, endpoint: outcome.endpoint, error: outcome.error?.message, flags: (outcome.error as WaypointError | undefined)?.responseFlags },
      'connection closed',
    ),
  );
  jwksVia.upstreams = upstreams;
  // The decision of each request goes into its access-log line (waypoint/access-log.ts: `authz`).
  const gate = new RequestGate({ table: policies, metrics: new AuthzMetrics(metrics.registry), trustedProxies: config.numTrustedProxies });
  const httpProxy = new HttpProxy({ upstreams, routes, state, metrics, log, gate, destinations });
  // HTTP/2 to endpoints on the own HTTP/2 layer (h2-own-upstream.ts), or node:http2 sessions (h2-upstream.ts) with
  // AMBIT_WAYPOINT_H2_UPSTREAM=node (config.ts says why own is the default).
  const h2Sessions = config.h2Upstream === 'own' ? new H2OwnSessionPool(upstreams) : new H2SessionPool(upstreams);
  const h2Proxy = new H2Proxy({ upstreams, sessions: h2Sessions, routes, state, metrics, gate, destinations, log });
  const httpEntry = new HttpEntry({ http1: httpProxy, http2: h2Proxy, state, h2Downstream: config.h2Downstream });
  const terminate = (request: HboneRequest, stream: TerminatedStream): void => {
    let service;
    try {
      service = upstreams.service(request.target);
    } catch (error) {
      const waypointError = error as WaypointError;
      log.info({ src: request.peerIdentity.uri, authority: `${request.target.host}:${request.target.port}`, error: waypointError.message, flags: waypointError.responseFlags }, 'connection refused');
      if (canAnswer(stream)) answer(stream, waypointError.status ?? 503);
      return;
    }
    // L7 ports (appProtocol HTTP11, HTTP2, GRPC) take HTTP/1.1 or prior-knowledge HTTP/2; the rest go at L4.
    if (portProtocol(service, request.target.port) === 'http') void httpEntry.serve(request, stream, service);
    else void l4.forward(request, stream, service);
  };
  const serverOptions: HboneServerOptions = {
    certificateFor: () => certificates.current(identity),
    rootsPem: certificates.rootsPem(),
    trustDomain: config.trustDomain,
    onError: (error) => log.debug({ code: error.code, err: error.message }, 'HBONE error'),
  };
  // The own layer's server hands out its H2Stream (terminateStream); HboneServer's terminate, node:http2's stream.
  const hbone = config.hbone === 'own' ? new H2TunnelServer({ ...serverOptions, terminateStream: terminate }) : new HboneServer({ ...serverOptions, terminate });
  await hbone.listen({ host: config.listenHost, port: WAYPOINT_HBONE_PORT });
  let ready = true;
  const readiness = http.createServer((request, response) => {
    response.writeHead(ready ? 200 : 503).end();
  });
  await listenHttp(readiness, config.listenHost, WAYPOINT_READINESS_PORT);
  // Prometheus, as Istio's merged endpoint on 15020.
  const metricsServer = http.createServer((request, response) => {
    if (request.url !== '/metrics' && request.url !== '/stats/prometheus') {
      response.writeHead(404).end();
      return;
    }
    metrics.registry.metrics().then(
      (text) => response.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text),
      () => response.writeHead(500).end(),
    );
  });
  await listenHttp(metricsServer, config.listenHost, WAYPOINT_METRICS_PORT);
  // Memory back to the kernel once a burst of requests is over (shared/memory/heap-release.ts, as each agent thread),
  // from a lower growth than the agent's: a waypoint's heap is about 20 MB after a release, and a quick bench run left
  // it at 36 MB (15.7 MB grown, under the agent's 16 MiB) for good. With the agent's native release (malloc_trim and
  // the node binary's pages: the first quiet check after start-up drops what start-up touched, about half of the
  // waypoint's RSS at start was the binary's file pages).
  const heapRelease = startHeapRelease({
    growthBytes: WAYPOINT_HEAP_RELEASE_GROWTH_BYTES,
    quietUtilization: WAYPOINT_HEAP_RELEASE_QUIET_UTILIZATION,
    calmUtilization: WAYPOINT_HEAP_RELEASE_CALM_UTILIZATION,
    calmChecks: WAYPOINT_HEAP_RELEASE_CALM_CHECKS,
    releaseNative: nativeMemory,
    onRelease: (before, after) => log.debug({ heapBefore: before, heapAfter: after }, 'memory-reducing GC after a burst'),
  });
  // Admin, as the agent's and Envoy's (15000, loopback only): what this waypoint knows.
  const admin = http.createServer((request, response) => {
    if (request.url !== '/config_dump') {
      response.writeHead(404).end();
      return;
    }
    const body = JSON.stringify({
      gateway: config.gatewayName, identity: identity.uri, pid: process.pid, hboneLayer: config.hbone, h2Upstream: config.h2Upstream, h2Downstream: config.h2Downstream, services: servicesView(state), routes: routes.view(), policies: policies.view(),
      upstreamConnections: httpProxy.connectionsView(), http1Paths: httpProxy.pathsView(), http2: { ...h2Sessions.view(), ...h2Proxy.view() },
      destinationRules: { policies: destinationPolicies.view(), traffic: destinations.view() },
      memory: { ...process.memoryUsage(), heapReleases: heapRelease.stats.releases, calmReleases: heapRelease.stats.calmReleases, heapAfterLastRelease: heapRelease.stats.heapAfterLastRelease, lastGcMs: heapRelease.stats.lastGcMs, lastCheckUtilization: heapRelease.stats.lastUtilization, nativeReleases: heapRelease.stats.nativeReleases, executableKibDropped: heapRelease.stats.executableKibDropped, anonymousRss: anonymousRss(), anonymousAfterLastNativeRelease: heapRelease.stats.anonymousAfterLastNativeRelease },
    });
    response.writeHead(200, { 'content-type': 'application/json' }).end(body);
  });
  await listenHttp(admin, '127.0.0.1', WAYPOINT_ADMIN_PORT);
  log.info({ gateway: config.gatewayName, identity: identity.uri, hbone: WAYPOINT_HBONE_PORT, hboneLayer: config.hbone }, WAYPOINT_READY_MESSAGE);
  return {
    stop: async () => {
      ready = false;
      heapRelease.stop();
      h2Proxy.close();
      await hbone.shutdown(WAYPOINT_DRAIN_MS);
      await pool.close();
      readiness.close();
      metricsServer.close();
      httpProxy.close();
      h2Sessions.close();
      admin.close();
      xds.stop();
      authenticator.close();
      certificates.close();
      ca.close();
    },
  };
}

if (import.meta.main) {
  let config: WaypointConfig;
  try {
    config = configFromEnv();
  } catch (error) {
    process.stderr.write(`ambit-waypoint: ${(error as Error).message}\n`);
    process.exit(2);
  }
  // V8 flags NODE_OPTIONS refuses (e.g. --heap-growing-percent), for A/B runs of the garbage collector's settings.
  if (config.v8Flags) setFlagsFromString(config.v8Flags);
  // The access log writes a line per request: gathered up to ACCESS_LOG_BATCH_BYTES (or ACCESS_LOG_FLUSH_MS, as
  // Envoy flushes its access log on an interval) and written asynchronously. A write per line was 9 % of the
  // waypoint's CPU at 1,000 requests/s, synchronous or not. What is still buffered is flushed before the process exits.
  // The lines are gathered by log-destination.ts, not by sonic-boom's minLength (which re-measures the growing batch
  // on every line), as bytes (the access log writes its lines into the batch); sonic-boom writes each batch as it comes.
  const destination = new BatchedLogDestination(bufferFileSink(1), ACCESS_LOG_BATCH_BYTES, ACCESS_LOG_FLUSH_MS);
  const exit = (code: number): never => {
    try {
      destination.flushSync();
    } catch {
      // stdout gone: nothing to flush to
    }
    process.exit(code);
  };
  const log = pino({ level: config.logLevel, base: { waypoint: config.gatewayName } }, destination);
  startWaypoint(config, log).then(
    (running) => {
      process.once('SIGTERM', () => {
        log.info('SIGTERM: draining');
        void running.stop().then(() => exit(0));
      });
    },
    (error: Error) => {
      log.fatal({ err: error.message }, 'waypoint failed to start');
      exit(1);
    },
  );
}
