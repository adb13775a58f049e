/**
 * The node agent as a DaemonSet: on every node, the agent (capture, HBONE, policy, telemetry) and beside it the
 * CNI installer, which keeps ambit's plugin in the node's CNI configuration.
 *
 * Owns: the agent pod: host network (it serves the node's CNI socket and reaches pods' network namespaces by
 * path), its Linux capabilities (below, each with the system calls that need it; no container is privileged),
 * host directories, the mesh root and
 * the projected token it shows the control plane, probes, drain time, and the installer's flags.
 * The installer does not remove the plugin when its container stops: an upgrade must not open a window in which
 * enrolled pods start uncaptured. While no agent answers, enrolled pods wait (the plugin fails closed).
 * Must not know about: RBAC (rbac.ts) or the control plane (controlplane.ts).
 */
import { DaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import { METRICS_PORT, READINESS_PORT } from '../agent/config.ts';
import { AGENT_NODE_FLAGS } from '../agent/memory/node-flags.ts';
import { ROOT_CONFIGMAP_KEY, ROOT_CONFIGMAP_NAME } from '../controlplane/ca/config.ts';
import { XDS_PORT } from '../controlplane/xds/server.ts';
import { DEFAULT_AGENT_SOCKET } from '../shared/cni-protocol.ts';
import { CONTROL_PLANE_TOKEN_AUDIENCE } from '../shared/ca/token-audience.ts';
import { AGENT, AGENT_RUN_DIR, CONTROLPLANE, HOST_MOUNT, HOST_PROC_SYS_NET, IMAGE_APP_DIR, image, labels, NETNS_DIR, ROOT_CERT_DIR, TOKEN_DIR, TOKEN_FILE_NAME } from './names.ts';
import type { InstallValues } from './values.ts';

/**
 * The agent's capabilities, as ztunnel's (which needs the same three for the same reasons), each with what needs it:
 *   SYS_ADMIN  setns(CLONE_NEWNET) into a pod's network namespace: the native addon, per socket it makes there
 *              (agent/native/sockets.c), and `nsenter --net` for iptables and ip in the pod (agent/inpod/iptables.ts)
 *   NET_ADMIN  iptables-restore (nf_tables netlink, or IPT_SO_SET_REPLACE) and `ip rule` / `ip route` in the pod;
 *              setsockopt SO_MARK (0x539 on the agent's own sockets) and IP_TRANSPARENT (inbound connections made
 *              from the client's address); writing the pod's net.ipv4.tcp_migrate_req
 *   NET_RAW    the legacy iptables tools open a raw socket (iptables-legacy-save, also when detecting the node's
 *              backend); IP_TRANSPARENT accepts NET_RAW or NET_ADMIN
 * Nothing else: the files it opens (/var/run/netns, /var/run/ambit, its secrets) belong to root, as the agent runs.
 * Proven on the real path by test/net/agent-capabilities.test.ts, which runs agents with exactly these.
 */
export const AGENT_CAPABILITIES = ['NET_ADMIN', 'SYS_ADMIN', 'NET_RAW'] as const;
/**
 * The installer only writes files into the host's CNI directories (copy, write a temp file, chmod it, rename):
 * DAC_OVERRIDE lets it do so whatever those directories' owner and mode on a given node. Where root owns them (as
 * on kubeadm and containerd nodes) it needs no capability at all; test/net/agent-capabilities.test.ts runs its
 * command line with none there, and shows that DAC_OVERRIDE is what directories of another owner need. It never
 * chowns (CHOWN and FOWNER are not needed).
 */
export const INSTALLER_CAPABILITIES = ['DAC_OVERRIDE'] as const;

/** Longer than the agent's drain (AMBIT_DRAIN_MS, agent/config.ts), so open tunnels finish before SIGKILL. */
const TERMINATION_GRACE_SECONDS = 30;

/** The installer's command line (cni/install.ts), in the container's view of the host directories. */
export function installerCommand(values: InstallValues): string[] {
  return [
    'node', `${IMAGE_APP_DIR}/cni/install.ts`,
    '--bin-dir', `${HOST_MOUNT}${values.cni.binDir}`,
    '--conf-dir', `${HOST_MOUNT}${values.cni.confDir}`,
    '--host-conf-dir', values.cni.confDir,
    '--host-runtime-dir', `${HOST_MOUNT}${values.cni.runtimeDir}`,
    '--host-runtime-path', values.cni.runtimeDir,
    '--kubeconfig-from-service-account',
    '--agent-socket', DEFAULT_AGENT_SOCKET,
    '--watch',
  ];
}

export function agentObjects(values: InstallValues) {
  const { namespace } = values;
  const selector = { app: AGENT };
  const hostDir = (name: string, hostPath: string) => ({ name, hostPath: { path: hostPath, type: 'DirectoryOrCreate' as const } });
  return [
    new DaemonSet({
      metadata: { name: AGENT, namespace, labels: labels(AGENT) },
      spec: {
        selector: { matchLabels: selector },
        updateStrategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1 } },
        template: {
          metadata: {
            labels: { ...labels(AGENT), 'sidecar.istio.io/inject': 'false' },
            annotations: { 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(METRICS_PORT), 'prometheus.io/path': '/metrics' },
          },
          spec: {
            serviceAccountName: AGENT,
            hostNetwork: true,
            dnsPolicy: 'ClusterFirstWithHostNet',
            priorityClassName: 'system-node-critical',
            terminationGracePeriodSeconds: TERMINATION_GRACE_SECONDS,
            // Every node, whatever its taints: an enrolled pod on a node without an agent cannot start.
            tolerations: [{ operator: 'Exists' }],
            nodeSelector: { 'kubernetes.io/os': 'linux' },
            containers: [
              {
                name: 'agent',
                image: image(values.hub, values.tag),
                // V8 flags sized for a proxy (agent/memory/node-flags.ts: the young generation capped at 8 MiB semi-spaces).
                command: ['node', ...AGENT_NODE_FLAGS, `${IMAGE_APP_DIR}/agent/main.ts`],
                env: [
                  { name: 'AMBIT_NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
                  { name: 'AMBIT_XDS_ADDRESS', value: `${CONTROLPLANE}.${namespace}.svc:${XDS_PORT}` },
                  { name: 'AMBIT_ROOT_CERT_FILE', value: `${ROOT_CERT_DIR}/${ROOT_CONFIGMAP_KEY}` },
                  { name: 'AMBIT_TOKEN_FILE', value: `${TOKEN_DIR}/${TOKEN_FILE_NAME}` },
                  { name: 'AMBIT_CNI_SOCKET', value: DEFAULT_AGENT_SOCKET },
                  { name: 'AMBIT_TRUST_DOMAIN', value: values.trustDomain },
                  { name: 'AMBIT_LOG_LEVEL', value: values.logLevel },
                  { name: 'AMBIT_WORKER_THREADS', value: values.agent.workerThreads },
                  { name: 'AMBIT_PROC_SYS_NET', value: HOST_PROC_SYS_NET },
                  // Node's compile cache on the node's ambit-run directory: a restarted agent neither strips its TypeScript
                  // again nor loads the WebAssembly type stripper, whose memory is never given back (15-20 MiB of RSS).
                  { name: 'NODE_COMPILE_CACHE', value: `${AGENT_RUN_DIR}/node-compile-cache` },
                ],
                ports: [
                  { name: 'http-metrics', containerPort: METRICS_PORT, protocol: 'TCP' },
                  { name: 'http-ready', containerPort: READINESS_PORT, protocol: 'TCP' },
                ],
                readinessProbe: { httpGet: { path: '/healthz/ready', port: READINESS_PORT }, periodSeconds: 2, failureThreshold: 3 },
                resources: {
                  requests: { cpu: values.agent.cpuRequest, memory: values.agent.memoryRequest },
                  limits: { memory: values.agent.memoryLimit },
                },
                securityContext: {
                  privileged: false,
                  // Kubernetes counts CAP_SYS_ADMIN as privilege escalation and refuses false beside it (as ztunnel's chart says).
                  allowPrivilegeEscalation: true,
                  runAsUser: 0,
                  runAsNonRoot: false,
                  capabilities: { drop: ['ALL'], add: [...AGENT_CAPABILITIES] },
                },
                volumeMounts: [
                  { name: 'ambit-run', mountPath: AGENT_RUN_DIR },
                  { name: 'netns', mountPath: NETNS_DIR, mountPropagation: 'HostToContainer' },
                  { name: 'mesh-root', mountPath: ROOT_CERT_DIR, readOnly: true },
                  { name: 'agent-token', mountPath: TOKEN_DIR, readOnly: true },
                  // A container that is not privileged gets /proc/sys read-only; through this mount of the host's
                  // /proc/sys/net the agent writes the net sysctls of the pod namespace it has entered.
                  { name: 'proc-sys-net', mountPath: HOST_PROC_SYS_NET },
                  // The plugin's config names its pod source by the host's path (<conf dir>/ambit-cni-kubeconfig); the
                  // agent runs the forwarded call only if it sees that file at the same path (else the call takes the
                  // slow path: agent/cni-call.ts), so the host's CNI config directory is mounted where the host has it.
                  { name: 'cni-conf', mountPath: values.cni.confDir, readOnly: true },
                ],
              },
              {
                name: 'install-cni',
                image: image(values.hub, values.tag),
                command: installerCommand(values),
                resources: { requests: { cpu: '10m', memory: '64Mi' }, limits: { memory: '256Mi' } },
                securityContext: { privileged: false, runAsUser: 0, allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'], add: [...INSTALLER_CAPABILITIES] } },
                volumeMounts: [
                  { name: 'cni-bin', mountPath: `${HOST_MOUNT}${values.cni.binDir}` },
                  { name: 'cni-conf', mountPath: `${HOST_MOUNT}${values.cni.confDir}` },
                  { name: 'cni-runtime', mountPath: `${HOST_MOUNT}${values.cni.runtimeDir}` },
                ],
              },
            ],
            volumes: [
              hostDir('ambit-run', AGENT_RUN_DIR),
              hostDir('netns', NETNS_DIR),
              hostDir('cni-bin', values.cni.binDir),
              hostDir('cni-conf', values.cni.confDir),
              hostDir('cni-runtime', values.cni.runtimeDir),
              { name: 'proc-sys-net', hostPath: { path: '/proc/sys/net', type: 'Directory' } },
              { name: 'mesh-root', configMap: { name: ROOT_CONFIGMAP_NAME } },
              {
                name: 'agent-token',
                projected: {
                  // For the control plane's audience (istio-ca, as ztunnel's): it checks the token with a TokenReview
                  // for that audience, which also says which node the token's pod runs on (the CA signs only for
                  // pods on that node). The agent's API calls use its ordinary service account token.
                  sources: [{ serviceAccountToken: { path: TOKEN_FILE_NAME, audience: CONTROL_PLANE_TOKEN_AUDIENCE, expirationSeconds: 43200 } }],
                },
              },
            ],
          },
        },
      },
    }),
  ];
}
