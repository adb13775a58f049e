/**
 * The waypoint instance the control plane writes for each Gateway of class istio-waypoint
 * (controlplane/model/waypoint-instance.ts), rendered here for a sample Gateway so that it is checked offline like the
 * rest of deploy/ (Kubernetes schemas, RBAC, the waypoint's own configuration parser) and an operator can read it in
 * deploy/manifests/waypoint-example.yaml. Also the settings the control plane Deployment passes to its controller.
 *
 * Owns: those settings and the sample. Must not know about: the objects' content (the control plane's model owns it).
 */
import { Deployment } from 'kubernetes-models/apps/v1/Deployment';
import { Service } from 'kubernetes-models/v1/Service';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import type { GatewayObject } from '../controlplane/model/kube-types.ts';
import { waypointInstance, type WaypointInstanceSettings } from '../controlplane/model/waypoint-instance.ts';
import { XDS_PORT } from '../controlplane/xds/server.ts';
import { CONTROLPLANE, IMAGE_APP_DIR, image } from './names.ts';
import type { KubernetesObject } from './render.ts';
import type { InstallValues } from './values.ts';

/** What the control plane's waypoint controller puts into every waypoint Deployment (AMBIT_WAYPOINT_* in its env). */
export function waypointSettings(values: InstallValues): WaypointInstanceSettings {
  return { image: image(values.hub, values.tag), xdsAddress: `${CONTROLPLANE}.${values.namespace}.svc:${XDS_PORT}`, trustDomain: values.trustDomain, appDir: IMAGE_APP_DIR, logLevel: values.logLevel };
}

/** The Gateway `kubectl apply` (or `ambitctl waypoint apply -n default`) makes, with the uid the API server gives it. */
export const SAMPLE_WAYPOINT_GATEWAY: GatewayObject = {
  apiVersion: 'gateway.networking.k8s.io/v1',
  kind: 'Gateway',
  metadata: { name: 'waypoint', namespace: 'default', uid: '00000000-0000-0000-0000-000000000000', labels: { 'istio.io/waypoint-for': 'service' } },
  spec: { gatewayClassName: 'istio-waypoint', listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] },
};

export function waypointExampleObjects(values: InstallValues): KubernetesObject[] {
  const instance = waypointInstance(SAMPLE_WAYPOINT_GATEWAY, waypointSettings(values));
  return [
    new ServiceAccount(instance.serviceAccount as ConstructorParameters<typeof ServiceAccount>[0]),
    new Service(instance.service as ConstructorParameters<typeof Service>[0]),
    new Deployment(instance.deployment as ConstructorParameters<typeof Deployment>[0]),
  ];
}
