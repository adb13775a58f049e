/**
 * What Istio's deployment controller makes for a Gateway of class `istio-waypoint`, in ambit's terms: a
 * ServiceAccount, a Service and a Deployment named after the Gateway, each owned by it (ownerReferences, so deleting
 * the Gateway deletes them), and the Gateway's status (`addresses`: the Service's cluster IP; conditions Accepted and
 * Programmed with Gateway API reasons).
 *
 * The pod runs waypoint/main.ts with its settings (waypoint/config.ts names them) as the Deployment's env: labelled
 * `istio.io/dataplane-mode: none` (its own traffic is not captured) and `gateway.networking.k8s.io/gateway-name`
 * (the Service selects it), ports 15008 (HBONE), 15020 (metrics), 15021 (readiness), uid 1337, non-root, read-only
 * root filesystem, no capabilities, and its service account token projected for the control plane's audience
 * (`istio-ca`), which xDS and the CA check with a TokenReview.
 *
 * Owns: the objects' shape and the status. Must not know about: the API server (controlplane/waypoint-controller.ts
 * writes them), deploy/ (which renders the same objects offline for a sample Gateway).
 */
import type { K8sObject } from '../../shared/k8s/objects.ts';
import { CONTROL_PLANE_TOKEN_AUDIENCE } from '../../shared/ca/token-audience.ts';
import { WAYPOINT_COMPILE_CACHE_DIR, WAYPOINT_GLIBC_TUNABLES, WAYPOINT_HBONE_PORT, WAYPOINT_METRICS_PORT, WAYPOINT_NODE_OPTIONS, WAYPOINT_READINESS_PORT } from '../../waypoint/config.ts';
import { namespaceOf, type GatewayObject } from './kube-types.ts';
import { WAYPOINT_FOR_LABEL, WAYPOINT_GATEWAY_CLASS } from './waypoint.ts';

/** The label Istio puts on a waypoint's objects and pods; the Service selects pods by it. */
export const GATEWAY_NAME_LABEL = 'gateway.networking.k8s.io/gateway-name';
/** Istio's marker for objects its deployment controller manages. */
export const MANAGED_LABEL = 'gateway.istio.io/managed';
export const MANAGED_VALUE = 'istio.io-mesh-controller';
/** Istio's proxy uid: non-root, and the one its in-pod rules (and ours) recognise. */
export const WAYPOINT_UID = 1337;
/** Where the pod finds the mesh root (ConfigMap istio-ca-root-cert, published in every namespace). */
export const WAYPOINT_ROOT_CERT_DIR = '/var/run/secrets/istio';
/** Where the pod finds its projected service account token (audience istio-ca), as Istio's proxies do. */
export const WAYPOINT_TOKEN_DIR = '/var/run/secrets/tokens';
export const WAYPOINT_TOKEN_FILE = 'istio-token';
/** Projected token lifetime: the kubelet renews it at 80 %; 12 h, Istio's value. */
export const WAYPOINT_TOKEN_EXPIRATION_SECONDS = 43_200;
/** The container's name, as Istio's (tools look for it). */
export const WAYPOINT_CONTAINER = 'istio-proxy';

/** What the instance needs beyond the Gateway: where the control plane is, the image, the mesh's trust domain. */
export interface WaypointInstanceSettings {
  image: string;
  /** `host:port` of the control plane's xDS and CA port, as pods reach it (its Service's name). */
  xdsAddress: string;
  trustDomain: string;
  /** Where the image keeps the repository (deploy/names.ts IMAGE_APP_DIR). */
  appDir: string;
  logLevel?: string;
}

export interface WaypointInstance {
  serviceAccount: K8sObject;
  service: K8sObject;
  deployment: K8sObject;
}

export function isWaypointGateway(gateway: GatewayObject): boolean {
  return gateway.spec?.gatewayClassName === WAYPOINT_GATEWAY_CLASS;
}

function ownerReference(gateway: GatewayObject) {
  return {
    apiVersion: gateway.apiVersion ?? 'gateway.networking.k8s.io/v1',
    kind: 'Gateway',
    name: gateway.metadata.name,
    uid: gateway.metadata.uid ?? '',
  };
}

/** The ServiceAccount, Service and Deployment for `gateway` (all named after it, in its namespace). */
export function waypointInstance(gateway: GatewayObject, settings: WaypointInstanceSettings): WaypointInstance {
  const name = gateway.metadata.name;
  const namespace = namespaceOf(gateway);
  const labels = { [GATEWAY_NAME_LABEL]: name, [MANAGED_LABEL]: MANAGED_VALUE };
  const metadata = { name, namespace, labels, ownerReferences: [ownerReference(gateway)] };
  const waypointFor = gateway.metadata.labels?.[WAYPOINT_FOR_LABEL];
  const serviceAccount = { apiVersion: 'v1', kind: 'ServiceAccount', metadata };
  const service = {
    apiVersion: 'v1',
    kind: 'Service',
    metadata: { ...metadata, labels: { ...labels, ...(waypointFor ? { [WAYPOINT_FOR_LABEL]: waypointFor } : {}) } },
    spec: {
      type: 'ClusterIP',
      selector: { [GATEWAY_NAME_LABEL]: name },
      ports: [
        { name: 'status-port', port: WAYPOINT_READINESS_PORT, targetPort: WAYPOINT_READINESS_PORT, protocol: 'TCP' },
        { name: 'mesh', port: WAYPOINT_HBONE_PORT, targetPort: WAYPOINT_HBONE_PORT, protocol: 'TCP' },
      ],
    },
  };
  const env = [
    { name: 'AMBIT_WAYPOINT_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
    { name: 'AMBIT_WAYPOINT_NAME', value: name },
    { name: 'AMBIT_WAYPOINT_SERVICE_ACCOUNT', valueFrom: { fieldRef: { fieldPath: 'spec.serviceAccountName' } } },
    { name: 'AMBIT_POD_NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
    { name: 'AMBIT_NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
    { name: 'AMBIT_TRUST_DOMAIN', value: settings.trustDomain },
    { name: 'AMBIT_XDS_ADDRESS', value: settings.xdsAddress },
    { name: 'AMBIT_ROOT_CERT_FILE', value: `${WAYPOINT_ROOT_CERT_DIR}/root-cert.pem` },
    { name: 'AMBIT_TOKEN_FILE', value: `${WAYPOINT_TOKEN_DIR}/${WAYPOINT_TOKEN_FILE}` },
    { name: 'AMBIT_LOG_LEVEL', value: settings.logLevel ?? 'info' },
    { name: 'NODE_COMPILE_CACHE', value: WAYPOINT_COMPILE_CACHE_DIR },
    { name: 'NODE_OPTIONS', value: WAYPOINT_NODE_OPTIONS },
    { name: 'GLIBC_TUNABLES', value: WAYPOINT_GLIBC_TUNABLES },
  ];
  const podLabels = { [GATEWAY_NAME_LABEL]: name, 'istio.io/dataplane-mode': 'none', 'sidecar.istio.io/inject': 'false' };
  const deployment = {
    apiVersion: 'apps/v1',
    kind: 'Deployment',
    metadata,
    spec: {
      selector: { matchLabels: { [GATEWAY_NAME_LABEL]: name } },
      template: {
        metadata: { labels: podLabels, annotations: { 'prometheus.io/scrape': 'true', 'prometheus.io/port': String(WAYPOINT_METRICS_PORT), 'prometheus.io/path': '/stats/prometheus' } },
        spec: {
          serviceAccountName: name,
          terminationGracePeriodSeconds: 30,
          securityContext: { runAsNonRoot: true, runAsUser: WAYPOINT_UID, runAsGroup: WAYPOINT_UID, fsGroup: WAYPOINT_UID },
          containers: [
            {
              name: WAYPOINT_CONTAINER,
              image: settings.image,
              command: ['node', `${settings.appDir}/waypoint/main.ts`],
              env,
              ports: [
                { name: 'mesh', containerPort: WAYPOINT_HBONE_PORT, protocol: 'TCP' },
                { name: 'http-envoy-prom', containerPort: WAYPOINT_METRICS_PORT, protocol: 'TCP' },
                { name: 'status-port', containerPort: WAYPOINT_READINESS_PORT, protocol: 'TCP' },
              ],
              readinessProbe: { httpGet: { path: '/healthz/ready', port: WAYPOINT_READINESS_PORT }, periodSeconds: 5, failureThreshold: 4 },
              securityContext: {
                runAsNonRoot: true,
                runAsUser: WAYPOINT_UID,
                runAsGroup: WAYPOINT_UID,
                allowPrivilegeEscalation: false,
                privileged: false,
                readOnlyRootFilesystem: true,
                capabilities: { drop: ['ALL'] },
              },
              volumeMounts: [
                { name: 'istio-token', mountPath: WAYPOINT_TOKEN_DIR, readOnly: true },
                { name: 'istiod-ca-cert', mountPath: WAYPOINT_ROOT_CERT_DIR, readOnly: true },
                // Node's compile cache and any temporary file: the root filesystem is read-only.
                { name: 'tmp', mountPath: '/tmp' },
              ],
            },
          ],
          volumes: [
            {
              name: 'istio-token',
              projected: { sources: [{ serviceAccountToken: { audience: CONTROL_PLANE_TOKEN_AUDIENCE, expirationSeconds: WAYPOINT_TOKEN_EXPIRATION_SECONDS, path: WAYPOINT_TOKEN_FILE } }] },
            },
            { name: 'istiod-ca-cert', configMap: { name: 'istio-ca-root-cert' } },
            { name: 'tmp', emptyDir: { medium: 'Memory' } },
          ],
        },
      },
    },
  };
  return { serviceAccount, service, deployment };
}

export interface GatewayCondition {
  type: 'Accepted' | 'Programmed';
  status: 'True' | 'False';
  reason: string;
  message: string;
  observedGeneration?: number;
  lastTransitionTime?: string;
}

export interface GatewayStatus {
  addresses?: { type: 'IPAddress' | 'Hostname'; value: string }[];
  conditions: GatewayCondition[];
}

/**
 * The Gateway's status, as Istio writes it for a waypoint: Accepted (the class is ours and the listener is the HBONE
 * one on 15008: else UnsupportedValue), Programmed once its Service has an address (else AddressNotAssigned, or
 * Invalid when not accepted). `lastTransitionTime` is left to the writer, which keeps the previous one when the
 * status does not change.
 */
export function waypointGatewayStatus(gateway: GatewayObject, serviceClusterIp: string | undefined, clusterDomain: string): GatewayStatus {
  const generation = (gateway.metadata as { generation?: number }).generation;
  const observed = generation !== undefined ? { observedGeneration: generation } : {};
  const listeners = gateway.spec?.listeners ?? [];
  const hbone = listeners.find((listener) => listener.protocol === 'HBONE');
  const accepted: GatewayCondition = !hbone
    ? { type: 'Accepted', status: 'False', reason: 'UnsupportedValue', message: 'a waypoint needs a listener with protocol HBONE (name mesh, port 15008)', ...observed }
    : hbone.port !== WAYPOINT_HBONE_PORT
      ? { type: 'Accepted', status: 'False', reason: 'UnsupportedValue', message: `the HBONE listener must be on port ${WAYPOINT_HBONE_PORT}, not ${hbone.port}`, ...observed }
      : { type: 'Accepted', status: 'True', reason: 'Accepted', message: 'Resource accepted', ...observed };
  const hostname = `${gateway.metadata.name}.${namespaceOf(gateway)}.svc.${clusterDomain}`;
  const ip = serviceClusterIp && serviceClusterIp !== 'None' ? serviceClusterIp : undefined;
  const programmed: GatewayCondition =
    accepted.status === 'False'
      ? { type: 'Programmed', status: 'False', reason: 'Invalid', message: 'the Gateway is not accepted', ...observed }
      : ip
        ? { type: 'Programmed', status: 'True', reason: 'Programmed', message: `Resource programmed, assigned to service(s) ${hostname}:${WAYPOINT_HBONE_PORT}`, ...observed }
        : { type: 'Programmed', status: 'False', reason: 'AddressNotAssigned', message: `the Service ${hostname} has no cluster IP yet`, ...observed };
  return { ...(ip ? { addresses: [{ type: 'IPAddress' as const, value: ip }] } : {}), conditions: [accepted, programmed] };
}
