/**
 * Wires one control plane: a source feeds the store, the model turns the store into Address resources, the
 * policy feed adds Authorization resources, and the xDS server serves them on the gRPC port (beside any other
 * services, such as the CA, registered on the same server).
 *
 * Owns: the start order (initial sync before serving, so no agent is told a partial state is complete) and
 * shutdown. Must not know about: flags, files, environment (main.ts reads those).
 */
import type * as grpc from '@grpc/grpc-js';
import type { CertificateAuthority } from '../shared/identity/index.ts';
import { AddressModel, type AddressModelOptions } from './model/address-model.ts';
import type { HboneWhen } from './model/workload.ts';
import type { ConfigSource } from './sources/source.ts';
import { ObjectStore } from './store.ts';
import type { XdsAuthenticator } from './xds/auth.ts';
import { AuthorizationFeed, type CompiledAuthorization } from './xds/authorization-feed.ts';
import type { XdsLogger } from './xds/connection.ts';
import { ResourceCache } from './xds/resource-cache.ts';
import { RouteFeed } from './xds/route-feed.ts';
import { WaypointPolicyFeed } from './xds/waypoint-policy-feed.ts';
import { WaypointPolicyModel } from './model/waypoint-policies.ts';
import { compileGrpcRoutes, mergeRouteEntries } from './model/grpc-routes.ts';
import { compileHttpRoutes, type RouteProblem } from './model/http-routes.ts';
import { compileDestinationRules, type DestinationRuleProblem } from './model/destination-rules.ts';
import { DestinationFeed } from './xds/destination-feed.ts';
import { compileVirtualServices, type VirtualServiceProblem } from './model/virtual-services.ts';
import { DEFAULT_CLUSTER_DOMAIN } from './model/workload.ts';
import { ServingCredentials, startGrpcServer, XdsServer, type ServiceRegistrar } from './xds/server.ts';

/** How long a graceful shutdown waits for streams to finish before cutting them (agents reconnect anyway). */
export const SHUTDOWN_GRACE_MS = 1000;

export interface ControlPlaneOptions {
  ca: CertificateAuthority;
  /** When workloads are HBONE (controlplane/model/workload.ts HboneWhen); istiod's `redirected` by default. */
  hboneWhen?: HboneWhen;
  /** DNS names on the 15012 serving certificate (default DEFAULT_SERVING_DNS_NAMES, istiod's). */
  servingDnsNames?: readonly string[];
  /** `host:port` to serve gRPC on (port 0 picks a free one). */
  listenAddress: string;
  /** Who may open xDS streams; a function when the decision needs the store (waypoints' accounts in Kubernetes). */
  authenticator: XdsAuthenticator | ((parts: { store: ObjectStore }) => XdsAuthenticator);
  /** Builds the source of cluster objects (YAML directory or Kubernetes) over the store. */
  createSource: (store: ObjectStore) => ConfigSource;
  clusterId?: string;
  logger?: XdsLogger;
  /**
   * The policy compiler's seam (shared/policy): turns the store's AuthorizationPolicy and PeerAuthentication
   * objects into Authorization resources, rerun whenever one of them changes, and names the selector-scoped ones
   * that apply to a pod (listed on its Workload). Without it the Authorization type is served, empty.
   */
  authorizations?: {
    compile: (store: ObjectStore) => CompiledAuthorization[];
    policiesForPod?: AddressModelOptions['authorizationPoliciesFor'];
  };
  /**
   * Other gRPC services on the same port, built once the store and model exist (before the port opens): the
   * CA service (controlplane/ca/) registers here, answering "which pods run on this node" from the model.
   */
  services?: (parts: { store: ObjectStore; model: AddressModel }) => ServiceRegistrar[];
}

export interface ControlPlane {
  port: number;
  /** The SPIFFE identity of the serving certificate (what agents verify). */
  serverIdentity: string;
  store: ObjectStore;
  cache: ResourceCache;
  model: AddressModel;
  authorizations: AuthorizationFeed;
  /** Why each HTTPRoute and GRPCRoute (or part of one) is not served as written, from the last compile. */
  routeProblems(): readonly (RouteProblem & { kind?: 'HTTPRoute' | 'GRPCRoute' })[];
  /** Why each DestinationRule is not served, from the last compile (issue 13 item 3). */
  destinationRuleProblems(): readonly DestinationRuleProblem[];
  /** Why each VirtualService is not served, from the last compile (issue 13 item 4). */
  virtualServiceProblems(): readonly VirtualServiceProblem[];
  xds: XdsServer;
  source: ConfigSource;
  grpcServer: grpc.Server;
  /** The serving certificate (renewed at half-life; `rotate()` renews now). */
  credentials: ServingCredentials;
  close(): Promise<void>;
}

export async function startControlPlane(options: ControlPlaneOptions): Promise<ControlPlane> {
  const store = new ObjectStore();
  const cache = new ResourceCache();
  const authorizations = new AuthorizationFeed(cache);
  const compile = options.authorizations?.compile;
  if (compile) {
    const recompile = () => {
      try {
        authorizations.replace(compile(store));
      } catch (error) {
        // The last good set keeps serving; the policy author sees why in the log.
        options.logger?.error({ err: error }, `authorization policies not updated: ${(error as Error).message}`);
      }
    };
    // Subscribed before the model, so workloads recomputed for a policy change see the new policy set.
    store.onChanges((changes) => {
      if (changes.some((change) => change.kind === 'AuthorizationPolicy' || change.kind === 'PeerAuthentication')) recompile();
    });
  }
  const model = new AddressModel({
    store,
    cache,
    trustDomain: options.ca.trustDomain,
    ...(options.hboneWhen ? { hboneWhen: options.hboneWhen } : {}),
    ...(options.clusterId ? { clusterId: options.clusterId } : {}),
    ...(options.authorizations?.policiesForPod ? { authorizationPoliciesFor: options.authorizations.policiesForPod } : {}),
  });
  // HTTPRoutes and GRPCRoutes for waypoints: recompiled when a route or a Service (a parent or backend) changes.
  const routes = new RouteFeed(cache);
  let routeProblems: RouteProblem[] = [];
  let grpcRouteProblems: RouteProblem[] = [];
  let virtualServiceProblems: VirtualServiceProblem[] = [];
  store.onChanges((changes) => {
    if (!changes.some((change) => change.kind === 'HTTPRoute' || change.kind === 'GRPCRoute' || change.kind === 'Service' || change.kind === 'VirtualService')) return;
    const problems: RouteProblem[] = [];
    const grpcProblems: RouteProblem[] = [];
    const httpRoutes = compileHttpRoutes(store, DEFAULT_CLUSTER_DOMAIN, (problem) => problems.push(problem));
    // VirtualServices (issue 13 item 4) into the same resource, for Services no HTTPRoute routes.
    const vsProblems: VirtualServiceProblem[] = [];
    const virtualServices = compileVirtualServices(store, DEFAULT_CLUSTER_DOMAIN, new Set(httpRoutes.map((route) => route.name)), (problem) => vsProblems.push(problem));
    routes.replace(mergeRouteEntries([...httpRoutes, ...virtualServices], compileGrpcRoutes(store, DEFAULT_CLUSTER_DOMAIN, (problem) => grpcProblems.push(problem))));
    const previousVs = new Set(virtualServiceProblems.map((problem) => JSON.stringify(problem)));
    for (const problem of vsProblems) if (!previousVs.has(JSON.stringify(problem))) options.logger?.warn({ virtualService: problem.virtualService, path: problem.path }, `VirtualService ${problem.virtualService} not served: ${problem.path}: ${problem.message}`);
    virtualServiceProblems = vsProblems;
    const previous = new Set(routeProblems.map((problem) => JSON.stringify(problem)));
    for (const problem of problems) if (!previous.has(JSON.stringify(problem))) options.logger?.warn({ route: problem.route, condition: problem.condition, reason: problem.reason }, `HTTPRoute ${problem.route}: ${problem.condition} False (${problem.reason}): ${problem.message}`);
    routeProblems = problems;
    const previousGrpc = new Set(grpcRouteProblems.map((problem) => JSON.stringify(problem)));
    for (const problem of grpcProblems) if (!previousGrpc.has(JSON.stringify(problem))) options.logger?.warn({ route: problem.route, condition: problem.condition, reason: problem.reason, kind: 'GRPCRoute' }, `GRPCRoute ${problem.route}: ${problem.condition} False (${problem.reason}): ${problem.message}`);
    grpcRouteProblems = grpcProblems;
  });
  // DestinationRules for waypoints (controlplane/model/destination-rules.ts): recompiled when a rule, a Service
  // (its host) or a Pod (a subset's member) changes; a rule with a problem is not served and the problem is logged once.
  const destinations = new DestinationFeed(cache);
  let destinationRuleProblems: DestinationRuleProblem[] = [];
  store.onChanges((changes) => {
    // Pods too: a subset lists the pods it selects.
    if (!changes.some((change) => change.kind === 'DestinationRule' || change.kind === 'Service' || change.kind === 'Pod')) return;
    const problems: DestinationRuleProblem[] = [];
    destinations.replace(compileDestinationRules(store, DEFAULT_CLUSTER_DOMAIN, (problem) => problems.push(problem)));
    const previous = new Set(destinationRuleProblems.map((problem) => JSON.stringify(problem)));
    for (const problem of problems) if (!previous.has(JSON.stringify(problem))) options.logger?.warn({ rule: problem.rule, path: problem.path }, `DestinationRule ${problem.rule} not served: ${problem.path ? `${problem.path}: ` : ''}${problem.message}`);
    destinationRuleProblems = problems;
  });
  // L7 AuthorizationPolicy and RequestAuthentication attached to waypoints (targetRefs).
  const waypointPolicies = new WaypointPolicyFeed(cache);
  const waypointPolicyModel = new WaypointPolicyModel({
    onProblem: (problem) => options.logger?.warn({ policy: problem.policy, kind: problem.kind }, `${problem.kind} ${problem.policy}: ${problem.message}`),
  });
  store.onChanges((changes) => {
    if (changes.some((change) => change.kind === 'AuthorizationPolicy' || change.kind === 'RequestAuthentication' || change.kind === 'LocalRateLimitPolicy')) waypointPolicies.replace(waypointPolicyModel.compile(store));
  });
  const authenticator = typeof options.authenticator === 'function' ? options.authenticator({ store }) : options.authenticator;
  const xds = new XdsServer({ cache, authenticator, ...(options.logger ? { logger: options.logger } : {}) });
  const source = options.createSource(store);
  await source.start();
  const credentials = await ServingCredentials.create(options.ca, {
    ...(options.servingDnsNames ? { dnsNames: options.servingDnsNames } : {}),
    onError: (error) => options.logger?.error({ err: error }, `cannot renew the control plane's serving certificate: ${error.message}`),
  });
  let started: { server: grpc.Server; port: number };
  try {
    const registrars = [xds.register, ...(options.services?.({ store, model }) ?? [])];
    started = await startGrpcServer({ address: options.listenAddress, credentials, registrars });
  } catch (error) {
    source.stop();
    credentials.close();
    throw error;
  }
  return {
    port: started.port,
    serverIdentity: credentials.identity,
    credentials,
    store,
    cache,
    model,
    authorizations,
    routeProblems: () => [...routeProblems, ...grpcRouteProblems.map((problem) => ({ ...problem, kind: 'GRPCRoute' as const }))],
    destinationRuleProblems: () => destinationRuleProblems,
    virtualServiceProblems: () => virtualServiceProblems,
    xds,
    source,
    grpcServer: started.server,
    async close() {
      source.stop();
      credentials.close();
      model.close();
      xds.close();
      await new Promise<void>((resolve) => {
        const force = setTimeout(() => {
          started.server.forceShutdown();
          resolve();
        }, SHUTDOWN_GRACE_MS);
        started.server.tryShutdown(() => {
          clearTimeout(force);
          resolve();
        });
      });
    },
  };
}
