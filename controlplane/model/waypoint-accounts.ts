/**
 * Which callers are waypoints: a service account `system:serviceaccount:<namespace>:<name>` is a waypoint's when the
 * store holds a Gateway `<namespace>/<name>` of class istio-waypoint (its deployment controller runs it under a
 * service account named after the Gateway: controlplane/model/waypoint-instance.ts).
 *
 * Owns: that rule. xDS lets such a caller read the mesh configuration a waypoint needs; the CA signs for it only its
 * own identity (controlplane/ca/ca-service.ts). Must not know about: tokens, gRPC.
 */
import type { ObjectStore } from '../store.ts';
import type { GatewayObject } from './kube-types.ts';
import { WAYPOINT_GATEWAY_CLASS } from './waypoint.ts';

export interface WaypointAccount {
  namespace: string;
  serviceAccount: string;
}

const SERVICE_ACCOUNT_USER = /^system:serviceaccount:([^:]+):([^:]+)$/;

export function waypointAccountOf(store: ObjectStore, username: string): WaypointAccount | undefined {
  const match = SERVICE_ACCOUNT_USER.exec(username);
  if (!match) return undefined;
  const [, namespace = '', serviceAccount = ''] = match;
  const gateway = store.get<GatewayObject>('Gateway', `${namespace}/${serviceAccount}`);
  if (gateway?.spec?.gatewayClassName !== WAYPOINT_GATEWAY_CLASS) return undefined;
  return { namespace, serviceAccount };
}
