/**
 * The control plane as a Deployment and the Service agents reach it by (xDS and the CA on one gRPC port, 15012,
 * as istiod's).
 *
 * Owns: the control plane's pod: Kubernetes source, namespace from the downward API, resources, probes.
 * One replica: the CA's root is created on first start (Secret istio-ca-secret), and the model is in memory; a
 * second replica would be a second writer of that Secret (leader election is not built).
 * Must not know about: RBAC (rbac.ts) or the agent (agent.ts).
 */
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { Service } from 'kubernetes-models/v1/Service';
import { XDS_PORT } from '../controlplane/xds/server.ts';
import { AGENT, CONTROLPLANE, IMAGE_APP_DIR, image, labels } from './names.ts';
import type { InstallValues } from './values.ts';
import { waypointSettings } from './waypoint.ts';

export function controlPlaneObjects(values: InstallValues) {
  const { namespace } = values;
  const selector = { app: CONTROLPLANE };
  return [
    new Service({
      metadata: { name: CONTROLPLANE, namespace, labels: labels(CONTROLPLANE) },
      spec: { selector, ports: [{ name: 'grpc-xds', port: XDS_PORT, targetPort: XDS_PORT, protocol: 'TCP' }] },
    }),
    new Deployment({
      metadata: { name: CONTROLPLANE, namespace, labels: labels(CONTROLPLANE) },
      spec: {
        replicas: 1,
        strategy: { type: 'Recreate' },
        selector: { matchLabels: selector },
        template: {
          metadata: { labels: { ...labels(CONTROLPLANE), 'sidecar.istio.io/inject': 'false' } },
          spec: {
            serviceAccountName: CONTROLPLANE,
            priorityClassName: 'system-cluster-critical',
            containers: [
              {
                name: 'controlplane',
                image: image(values.hub, values.tag),
                command: ['node', `${IMAGE_APP_DIR}/controlplane/main.ts`, '--source', 'kubernetes'],
                env: [
                  { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
                  { name: 'AMBIT_TRUST_DOMAIN', value: values.trustDomain },
                  { name: 'AMBIT_LOG_LEVEL', value: values.logLevel },
                  { name: 'CA_TRUSTED_NODE_ACCOUNTS', value: `system:serviceaccount:${namespace}:${AGENT}` },
                  // The waypoint deployment controller: Gateways of class istio-waypoint get a Deployment of this image.
                  { name: 'AMBIT_WAYPOINT_IMAGE', value: waypointSettings(values).image },
                  { name: 'AMBIT_WAYPOINT_XDS_ADDRESS', value: waypointSettings(values).xdsAddress },
                ],
                ports: [{ name: 'grpc-xds', containerPort: XDS_PORT, protocol: 'TCP' }],
                readinessProbe: { tcpSocket: { port: XDS_PORT }, periodSeconds: 5 },
                livenessProbe: { tcpSocket: { port: XDS_PORT }, initialDelaySeconds: 30, periodSeconds: 10 },
                resources: {
                  requests: { cpu: values.controlplane.cpuRequest, memory: values.controlplane.memoryRequest },
                  limits: { memory: values.controlplane.memoryLimit },
                },
                securityContext: {
                  runAsNonRoot: true,
                  runAsUser: 1337,
                  allowPrivilegeEscalation: false,
                  readOnlyRootFilesystem: true,
                  capabilities: { drop: ['ALL'] },
                },
              },
            ],
          },
        },
      },
    }),
  ];
}
