/**
 * The local runtime's public surface: a multi-node cluster of network namespaces on one Linux box, wired by the
 * real CNI plugins, for tests, the demo and benchmarks.
 *
 * Owns: nothing but the re-exports. Must not know about: anything the modules it re-exports do not.
 */
export { createCluster, reserveRun, releaseRun, Cluster, AMBIT_CNI_DIR, REFERENCE_PLUGINS_DIR, type ClusterOptions, type CreatePodOptions, type ReservedRun, type TeardownReport } from './cluster.ts';
export { ClusterNode, AGENT_READY_TIMEOUT_MS, type AgentCommand } from './node.ts';
export { Pod } from './pod.ts';
export { RuntimeError, CniPluginError, type CniErrorOutput, type RuntimeErrorCode } from './errors.ts';
export type { RunResult, RunOptions } from './exec.ts';
export { startEchoServer, runClient, ECHO_SERVER_APP, CLIENT_APP, type ClientResult, type EchoServerOptions, type ClientOptions } from './apps/launch.ts';
export { ClusterServices, CLUSTER_DOMAIN, type ServiceObject, type ServiceTable, type ServiceView, type ServiceProblem } from './services.ts';
export { SERVICE_CIDR_V4, SERVICE_CIDR_V6 } from './service-ips.ts';
