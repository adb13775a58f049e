/**
 * The control plane's entry: reads flags and environment, opens the mesh root (created on first start: a directory
 * in local mode, Secret `istio-ca-secret` in Kubernetes), then starts source -> store -> model -> xDS server, with
 * the CA service on the same gRPC port (15012), and logs with pino.
 *
 *   node controlplane/main.ts [--source dir:<path> | --source kubernetes] [--ca-dir <dir>] [--listen <host:port>]
 *                             [--token-file <file>] [--trust-domain <td>] [--kubeconfig <file>] [--cluster-id <id>]
 *                             [--trusted-node-agents <sa,...>] [--serving-dns-names <name,...>] [--token-audiences <a,...>]
 *                             [--hbone-when redirected|enrolled] [--identity-from local]
 *
 * Environment equivalents: AMBIT_SOURCE (or AMBIT_CLUSTER_DIR for the directory), AMBIT_CA_DIR, AMBIT_XDS_LISTEN,
 * AMBIT_XDS_TOKEN_FILE, AMBIT_TRUST_DOMAIN, KUBECONFIG, AMBIT_CLUSTER_ID, AMBIT_LOG_LEVEL, POD_NAMESPACE,
 * CA_TRUSTED_NODE_ACCOUNTS (Istio's name; e.g. `system:serviceaccount:istio-system:ztunnel` for a stock ztunnel),
 * AMBIT_SERVING_DNS_NAMES, TOKEN_AUDIENCES (default istio-ca, Istio's), AMBIT_HBONE_WHEN. Flags win.
 *
 * Callers authenticate with `authorization: Bearer <token>`: in local mode a line `<token> <node-name>` of the
 * bootstrap token file (default `<ca-dir>/node-tokens`, shared by xDS and the CA); in Kubernetes the agent's
 * service account token, checked with a TokenReview. `--identity-from local` with `--source kubernetes` keeps the
 * local mode's root directory and token file while reading objects from an API server: the local runtime's own
 * Kubernetes API (runtime/api-server/), which serves objects but no TokenReviews or Secrets. Status (L7 policies'
 * Accepted, routes' parents) is written through it; the root ConfigMaps and the waypoint deployment controller are
 * left out there (the local runtime publishes the root as a file and makes its waypoints' pods itself).
 *
 * Local mode: Pod objects for the local runtime's pods are written into the directory by the runtime
 * (runtime/cluster-store.ts), exactly as kubelet would report them to an API server.
 *
 * Owns: configuration and process lifecycle. Must not know about: how any part works inside.
 */
import { access } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import type { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { pino, type Logger } from 'pino';
import { CONTROL_PLANE_TOKEN_AUDIENCE } from '../shared/ca/token-audience.ts';
import { DEFAULT_TRUST_DOMAIN } from '../shared/identity/index.ts';
import { registerCaService } from './ca/ca-service.ts';
import { publishRootConfigMap } from './ca/root-publisher.ts';
import { LOCAL_ROOT_CERT_FILE, ROOT_CONFIGMAP_NAME } from './ca/config.ts';
import { CaServiceError } from './ca/errors.ts';
import { BootstrapTokenFile } from './bootstrap-tokens.ts';
import { bootstrapTokenFileAuthenticator, type NodeAuthenticator } from './ca/node-authenticator.ts';
import { openKubernetesRoot, openLocalRoot } from './ca/root-store.ts';
import { startControlPlane, type ControlPlane } from './control-plane.ts';
import { PolicyModel, type PolicyProblem } from './model/policies.ts';
import { waypointAccountOf, type WaypointAccount } from './model/waypoint-accounts.ts';
import { DEFAULT_CLUSTER_DOMAIN, type HboneWhen } from './model/workload.ts';
import type { KubernetesSource } from './sources/kubernetes.ts';
import { formatProblem, type SourceProblem } from './sources/source.ts';
import type { ObjectStore } from './store.ts';
import { YamlDirSource } from './sources/yaml-dir.ts';
import { AuthenticationError, callersAllowedBy, TokenFileAuthenticator, type XdsAuthenticator } from './xds/auth.ts';
import type { TokenReviewAuthenticator } from './xds/token-review.ts';
import { DEFAULT_SERVING_DNS_NAMES, XDS_PORT } from './xds/server.ts';

/** The bootstrap token file's default name inside the CA directory (format: `<token> <node-name>` per line). */
export const DEFAULT_TOKEN_FILE = 'node-tokens';
/** The control plane's Service (deploy/names.ts CONTROLPLANE): waypoint pods reach xDS and the CA by its name. */
const DEFAULT_CONTROL_PLANE_SERVICE = 'ambit-controlplane';
/** Where the image keeps the repository (deploy/names.ts IMAGE_APP_DIR). */
const DEFAULT_WAYPOINT_APP_DIR = '/opt/ambit';
/** The control plane's namespace in Kubernetes mode (where the CA Secret lives), as istiod's. */
const DEFAULT_CONTROL_PLANE_NAMESPACE = 'istio-system';
/**
 * Service accounts whose tokens the CA accepts as node agents (Istio's CA_TRUSTED_NODE_ACCOUNTS). Every pod's bound
 * token names its node, so without this list any workload could ask for its neighbours' identities.
 */
const DEFAULT_TRUSTED_NODE_AGENT = 'system:serviceaccount:istio-system:ambit-agent';

export interface ControlPlaneConfig {
  source: { type: 'dir'; dir: string } | { type: 'kubernetes'; kubeconfig?: string };
  caDir: string;
  listenAddress: string;
  tokenFile: string;
  trustDomain: string;
  clusterId?: string;
  /** Kubernetes mode: the namespace holding the CA Secret. */
  namespace: string;
  /** Kubernetes mode: the service accounts (`system:serviceaccount:<ns>:<name>`) the CA trusts as node agents. */
  trustedNodeAgents: string[];
  /** DNS names on the 15012 serving certificate (clients that verify the host name they dial: ztunnel). */
  servingDnsNames: string[];
  /** When workloads are HBONE: `redirected` (istiod's rule: once the agent annotated the captured pod) or `enrolled`. */
  hboneWhen: HboneWhen;
  /** `--identity-from local`: with a Kubernetes source, the root and node tokens as in local mode (no TokenReview, no Secret). */
  localIdentity?: true;
  /** Kubernetes mode: the audiences a caller's token must be for (TokenReview spec.audiences), Istio's TOKEN_AUDIENCES. */
  tokenAudiences: string[];
  logLevel: string;
  /**
   * Kubernetes mode: the waypoint deployment controller's image and the control plane address its pods use
   * (AMBIT_WAYPOINT_IMAGE, AMBIT_WAYPOINT_XDS_ADDRESS; the manifests set both). Without an image, no controller runs.
   */
  waypoint: { image?: string; xdsAddress: string; appDir: string };
}

export function parseConfig(argv: string[], env: NodeJS.ProcessEnv): ControlPlaneConfig {
  const { values } = parseArgs({
    args: argv,
    options: {
      source: { type: 'string' },
      'ca-dir': { type: 'string' },
      listen: { type: 'string' },
      'token-file': { type: 'string' },
      'trust-domain': { type: 'string' },
      kubeconfig: { type: 'string' },
      'cluster-id': { type: 'string' },
      'log-level': { type: 'string' },
      'trusted-node-agents': { type: 'string' },
      'serving-dns-names': { type: 'string' },
      'token-audiences': { type: 'string' },
      'hbone-when': { type: 'string' },
      'identity-from': { type: 'string' },
    },
    strict: true,
  });
  const sourceText = values.source ?? env.AMBIT_SOURCE ?? (env.AMBIT_CLUSTER_DIR ? `dir:${env.AMBIT_CLUSTER_DIR}` : undefined);
  if (!sourceText) throw new Error('no source: pass --source dir:<path> (local mode) or --source kubernetes, or set AMBIT_CLUSTER_DIR');
  let source: ControlPlaneConfig['source'];
  if (sourceText === 'kubernetes') {
    const kubeconfig = values.kubeconfig ?? env.KUBECONFIG;
    source = kubeconfig ? { type: 'kubernetes', kubeconfig } : { type: 'kubernetes' };
  } else if (sourceText.startsWith('dir:') && sourceText.length > 4) {
    source = { type: 'dir', dir: path.resolve(sourceText.slice(4)) };
  } else {
    throw new Error(`--source must be dir:<path> or kubernetes, got "${sourceText}"`);
  }
  const caDir = path.resolve(values['ca-dir'] ?? env.AMBIT_CA_DIR ?? 'ca');
  const identityFrom = values['identity-from'];
  if (identityFrom !== undefined && identityFrom !== 'local' && identityFrom !== 'source') throw new Error(`--identity-from must be local or source, got "${identityFrom}"`);
  const clusterId = values['cluster-id'] ?? env.AMBIT_CLUSTER_ID;
  return {
    source,
    caDir,
    listenAddress: values.listen ?? env.AMBIT_XDS_LISTEN ?? `0.0.0.0:${XDS_PORT}`,
    tokenFile: path.resolve(values['token-file'] ?? env.AMBIT_XDS_TOKEN_FILE ?? path.join(caDir, DEFAULT_TOKEN_FILE)),
    trustDomain: values['trust-domain'] ?? env.AMBIT_TRUST_DOMAIN ?? DEFAULT_TRUST_DOMAIN,
    ...(clusterId ? { clusterId } : {}),
    namespace: env.POD_NAMESPACE ?? DEFAULT_CONTROL_PLANE_NAMESPACE,
    trustedNodeAgents: (values['trusted-node-agents'] ?? env.CA_TRUSTED_NODE_ACCOUNTS ?? DEFAULT_TRUSTED_NODE_AGENT)
      .split(',')
      .map((account) => account.trim())
      .filter((account) => account !== ''),
    hboneWhen: hboneWhen(values['hbone-when'] ?? env.AMBIT_HBONE_WHEN ?? 'redirected'),
    tokenAudiences: list(values['token-audiences'] ?? env.TOKEN_AUDIENCES ?? CONTROL_PLANE_TOKEN_AUDIENCE),
    servingDnsNames: list(values['serving-dns-names'] ?? env.AMBIT_SERVING_DNS_NAMES ?? DEFAULT_SERVING_DNS_NAMES.join(',')),
    logLevel: values['log-level'] ?? env.AMBIT_LOG_LEVEL ?? 'info',
    ...(identityFrom === 'local' ? { localIdentity: true as const } : {}),
    waypoint: {
      ...(env.AMBIT_WAYPOINT_IMAGE ? { image: env.AMBIT_WAYPOINT_IMAGE } : {}),
      xdsAddress: env.AMBIT_WAYPOINT_XDS_ADDRESS ?? `${DEFAULT_CONTROL_PLANE_SERVICE}.${env.POD_NAMESPACE ?? DEFAULT_CONTROL_PLANE_NAMESPACE}.svc:${XDS_PORT}`,
      appDir: env.AMBIT_WAYPOINT_APP_DIR ?? DEFAULT_WAYPOINT_APP_DIR,
    },
  };
}

function hboneWhen(text: string): HboneWhen {
  if (text === 'redirected' || text === 'enrolled') return text;
  throw new Error(`--hbone-when must be redirected (once the agent annotated the captured pod, as istiod) or enrolled, got "${text}"`);
}

function list(text: string): string[] {
  return text
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '');
}

/**
 * The CA service's caller check in Kubernetes mode: a TokenReview that must name the caller's node, from a service
 * account trusted as a node agent, or a waypoint's own service account (then only its own identity is signed).
 */
export function tokenReviewNodeAuthenticator(
  tokenReview: Pick<TokenReviewAuthenticator, 'authenticate'>,
  trustedNodeAgents: readonly string[],
  waypointAccount: (identity: string) => WaypointAccount | undefined = () => undefined,
): NodeAuthenticator {
  return async (metadata) => {
    try {
      const caller = await tokenReview.authenticate(metadata);
      // A waypoint's own token: it may get its own identity only (checked by the CA service against the CSR).
      const waypoint = trustedNodeAgents.includes(caller.identity) ? undefined : waypointAccount(caller.identity);
      if (!trustedNodeAgents.includes(caller.identity) && !waypoint) {
        throw new CaServiceError('permissionDenied', `caller ${caller.identity} is not a node agent (trusted: ${trustedNodeAgents.join(', ')}) nor a waypoint's service account`);
      }
      if (!caller.node) throw new CaServiceError('unauthenticated', `the token of ${caller.identity} is not bound to a node (use the pod's projected service account token)`);
      return waypoint ? { node: caller.node, onlyIdentity: waypoint } : { node: caller.node };
    } catch (error) {
      if (error instanceof AuthenticationError) throw new CaServiceError('unauthenticated', error.message);
      if (error instanceof CaServiceError) throw error;
      // The review itself failed (API server down, overloaded, unreachable): the agent retries; no bug of the CA's.
      throw new CaServiceError('unavailable', `cannot authenticate the caller: the TokenReview failed (${(error as Error).message})`, { cause: error });
    }
  };
}

/**
 * Starts everything on one gRPC server: delta xDS and the CA service (controlplane/ca/, IstioCertificateService),
 * which answers "which pods run on the caller's node" from the model.
 */
export async function runControlPlane(config: ControlPlaneConfig): Promise<ControlPlane> {
  const logger = pino({ level: config.logLevel, base: { component: 'controlplane' } });

  let kubeConfig: KubeConfig | undefined;
  let xdsAuthenticator: XdsAuthenticator | ((parts: { store: ObjectStore }) => XdsAuthenticator);
  let caAuthenticator: (parts: { store: ObjectStore }) => NodeAuthenticator;
  let root;
  let kubernetesSource: typeof KubernetesSource | undefined;
  let coreApi: CoreV1Api | undefined;
  if (config.source.type === 'kubernetes') {
    // Loaded only in Kubernetes mode: the client library is most of a local control plane's memory otherwise.
    const { KubeConfig } = await import('@kubernetes/client-node');
    kubernetesSource = (await import('./sources/kubernetes.ts')).KubernetesSource;
    kubeConfig = new KubeConfig();
    if (config.source.kubeconfig) kubeConfig.loadFromFile(config.source.kubeconfig);
    else kubeConfig.loadFromDefault();
  }
  if (kubeConfig !== undefined && config.localIdentity !== true) {
    const { CoreV1Api } = await import('@kubernetes/client-node');
    const { TokenReviewAuthenticator } = await import('./xds/token-review.ts');
    // Only tokens meant for the control plane (audience istio-ca, as ztunnel's): a token for the API server itself,
    // which every pod has, is not accepted here.
    const tokenReview = new TokenReviewAuthenticator(kubeConfig, { audiences: config.tokenAudiences });
    // Node agents, and waypoints (a Gateway of class istio-waypoint named after their service account) for their own
    // configuration; the store is the control plane's, known once it starts.
    const trusted = config.trustedNodeAgents;
    xdsAuthenticator = ({ store }) =>
      callersAllowedBy(tokenReview, (caller) => trusted.includes(caller.identity) || waypointAccountOf(store, caller.identity) !== undefined, `${trusted.join(', ')} and waypoints' service accounts`);
    caAuthenticator = ({ store }) => tokenReviewNodeAuthenticator(tokenReview, trusted, (identity) => waypointAccountOf(store, identity));
    coreApi = kubeConfig.makeApiClient(CoreV1Api);
    root = await openKubernetesRoot({ core: coreApi, namespace: config.namespace, trustDomain: config.trustDomain });
  } else {
    try {
      await access(config.tokenFile);
    } catch {
      throw new Error(`the bootstrap token file ${config.tokenFile} does not exist: write one "<token> <node-name>" line per node (the agents present these tokens)`);
    }
    // One reader of the token file for both: a token added or rotated counts for xDS and the CA alike.
    const tokens = await BootstrapTokenFile.open(config.tokenFile, { onError: (error) => logger.warn(error.message) });
    xdsAuthenticator = new TokenFileAuthenticator(tokens);
    const tokenFileAuthenticator = bootstrapTokenFileAuthenticator(tokens);
    caAuthenticator = () => tokenFileAuthenticator;
    root = await openLocalRoot({ dir: config.caDir, trustDomain: config.trustDomain });
  }
  const ca = root.ca;
  logger.info({ created: root.created, trustDomain: config.trustDomain }, root.created ? 'made a new mesh root CA' : 'loaded the mesh root CA');

  const onProblem = (problem: SourceProblem) => logger.warn({ problem }, formatProblem(problem));
  // Compiler warnings already start with "<kind> <policy>": not named twice.
  const policyProblemText = (problem: PolicyProblem): string => (problem.message.startsWith(`${problem.kind} `) ? problem.message : `${problem.kind} ${problem.policy}: ${problem.message}`);
  const policies = new PolicyModel({ onProblem: (problem) => logger.warn({ policy: problem.policy, kind: problem.kind }, policyProblemText(problem)) });
  const controlPlane = await startControlPlane({
    ca,
    servingDnsNames: config.servingDnsNames,
    hboneWhen: config.hboneWhen,
    listenAddress: config.listenAddress,
    authenticator: xdsAuthenticator,
    ...(config.clusterId ? { clusterId: config.clusterId } : {}),
    logger: logger.child({ component: 'xds' }),
    authorizations: { compile: (store) => policies.compile(store), policiesForPod: (pod) => policies.policiesForPod(pod) },
    createSource: (store) =>
      config.source.type === 'kubernetes'
        ? new kubernetesSource!({ kubeConfig: kubeConfig!, store, onProblem })
        : new YamlDirSource({ dir: config.source.dir, store, onProblem }),
    // ─── The CA service shares the xDS port (15012), as istiod's does. ───
    services: ({ model, store }) => [
      (server) => {
        registerCaService(server, { ca, authenticate: caAuthenticator({ store }), podsOnNode: (node) => model.podsOnNode(node), log: logger.child({ component: 'ca' }) });
      },
    ],
  });
  if (kubeConfig !== undefined) {
    // Status written back through the API: the L7 policies' Accepted condition, routes' parents; with Kubernetes
    // identity also the waypoint deployment controller (the local runtime deploys its waypoints itself).
    const stopWaypoints = await startWaypointController(controlPlane, kubeConfig, config, logger);
    const { PolicyStatusWriter } = await import('./status/status-writer.ts');
    const { kubernetesStatusPatch } = await import('./status/kubernetes-status-patch.ts');
    const statusWriter = new PolicyStatusWriter({
      store: controlPlane.store,
      patchStatus: kubernetesStatusPatch(kubeConfig),
      onError: (target, error) => logger.warn({ kind: target.kind, policy: `${target.namespace}/${target.name}` }, `cannot write the status of ${target.kind} ${target.namespace}/${target.name}: ${error.message}`),
    });
    statusWriter.start();
    const closeWithWriters = controlPlane.close.bind(controlPlane);
    controlPlane.close = async () => {
      stopWaypoints();
      statusWriter.stop();
      await closeWithWriters();
    };
  }
  if (coreApi && kubeConfig) {
    publishRootConfigMaps(controlPlane, coreApi, ca.rootCertPem, logger);
    // ...and keep them as published: one deleted or edited is written again.
    const { guardRootConfigMaps } = await import('./ca/root-configmap-guard.ts');
    const guard = guardRootConfigMaps({
      kubeConfig,
      core: coreApi,
      rootCertPem: ca.rootCertPem,
      namespaceExists: (namespace) => {
        const object = controlPlane.store.get('Namespace', namespace);
        return object !== undefined && !(object.metadata as { deletionTimestamp?: string } | undefined)?.deletionTimestamp;
      },
      onRestored: (namespace, why) => logger.warn({ namespace }, `${ROOT_CONFIGMAP_NAME} was ${why}: written again`),
      onProblem: (message) => logger.warn(message),
    });
    const closeControlPlane = controlPlane.close.bind(controlPlane);
    controlPlane.close = async () => {
      guard.stop();
      await closeControlPlane();
    };
  }
  logger.info(
    {
      listen: config.listenAddress,
      port: controlPlane.port,
      serverIdentity: controlPlane.serverIdentity,
      source: config.source,
      ...(config.source.type === 'dir' ? { rootCert: path.join(config.caDir, LOCAL_ROOT_CERT_FILE), tokenFile: config.tokenFile } : {}),
    },
    'control plane serving delta xDS and the CA',
  );
  return controlPlane;
}

/**
 * Kubernetes mode: the waypoint deployment controller (Gateways of class istio-waypoint -> their Deployment, Service,
 * ServiceAccount and Gateway status; not with --identity-from local) and the route status writer (HTTPRoute and
 * GRPCRoute status). Returns a stop.
 */
async function startWaypointController(controlPlane: ControlPlane, kubeConfig: KubeConfig, config: ControlPlaneConfig, logger: Logger): Promise<() => void> {
  const { ApiServerWriter } = await import('./kube-writer.ts');
  const { WaypointController } = await import('./waypoint-controller.ts');
  const { RouteStatusWriter } = await import('./route-status-writer.ts');
  const writer = new ApiServerWriter(kubeConfig);
  const log = logger.child({ component: 'waypoints' });
  const routeStatus = new RouteStatusWriter({ store: controlPlane.store, writer, problems: () => controlPlane.routeProblems(), clusterDomain: DEFAULT_CLUSTER_DOMAIN, log });
  // --identity-from local (the local runtime): it makes its waypoints' pods itself, so no deployment controller.
  if (config.localIdentity === true) return () => routeStatus.stop();
  if (!config.waypoint.image) {
    log.warn('AMBIT_WAYPOINT_IMAGE is not set: Gateways of class istio-waypoint get no Deployment (set it to the ambit image)');
    return () => routeStatus.stop();
  }
  const waypoints = new WaypointController({
    store: controlPlane.store,
    writer,
    settings: { image: config.waypoint.image, xdsAddress: config.waypoint.xdsAddress, trustDomain: config.trustDomain, appDir: config.waypoint.appDir, logLevel: config.logLevel },
    clusterDomain: DEFAULT_CLUSTER_DOMAIN,
    log,
  });
  return () => {
    waypoints.stop();
    routeStatus.stop();
  };
}

/**
 * Kubernetes mode: the root as ConfigMap `istio-ca-root-cert` in every namespace, now and in each namespace created
 * later (seen through the control plane's own namespace watch), as istiod's namespace controller does. (Local
 * mode publishes the root as the file root-cert.pem in the CA directory.)
 */
function publishRootConfigMaps(controlPlane: ControlPlane, core: CoreV1Api, rootCertPem: string, logger: Logger): void {
  const publish = (namespace: string): void => {
    publishRootConfigMap(core, namespace, rootCertPem).catch((error: Error) =>
      logger.error({ namespace, err: error.message }, `cannot publish ${ROOT_CONFIGMAP_NAME}; workloads in this namespace cannot verify the mesh`),
    );
  };
  for (const key of controlPlane.store.keys('Namespace')) publish(key);
  controlPlane.store.onChanges((changes) => {
    for (const change of changes) if (change.kind === 'Namespace' && change.type === 'upsert' && !change.previous) publish(change.key);
  });
}

async function main(): Promise<void> {
  let config: ControlPlaneConfig;
  try {
    config = parseConfig(process.argv.slice(2), process.env);
  } catch (error) {
    process.stderr.write(`ambit control plane: ${(error as Error).message}\n`);
    process.exit(2);
  }
  const controlPlane = await runControlPlane(config);
  const shutdown = () => {
    void controlPlane.close().then(() => process.exit(0));
  };
  process.once('SIGTERM', shutdown);
  process.once('SIGINT', shutdown);
}

if (import.meta.main) {
  main().catch((error: unknown) => {
    process.stderr.write(`ambit control plane failed: ${(error as Error).stack ?? String(error)}\n`);
    process.exit(1);
  });
}
