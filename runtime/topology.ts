/**
 * Names and addresses of a local cluster, derived from its run id so parallel runs never collide.
 *
 * Owns: namespace names (`ambit-<runId>-n<i>`, `ambit-<runId>-fabric`, `ambit-<runId>-<pod>`), pod CIDRs
 * (`10.<X>.<i>.0/24`, X from the run id; in a dual-stack cluster also `fd00:<X>:<i>::/64`) and underlay addresses
 * (`10.<X>.255.<i+1>`, `fd00:<X>:ff::<i+1>`).
 * Must not know about: how namespaces are made or what runs in them.
 */
import { createHash, randomBytes } from 'node:crypto';

export const NETNS_PREFIX = 'ambit-';
/** Six hex digits: 16M run ids, short enough for interface-free names and unix socket paths (108-byte limit). */
const RUN_ID_BYTES = 3;
/** Second octet range for pod CIDRs: 10.20.0.0 - 10.219.255.255, away from the 10.0/16 and 10.96/12 defaults. */
const SECOND_OCTET_BASE = 20;
const SECOND_OCTET_SPAN = 200;
/** Third octet reserved for the underlay (node-to-node) network, so node indexes stay below it. */
const UNDERLAY_THIRD_OCTET = 255;
export const MAX_NODES = 250;
/** Linux bridge made by the bridge CNI plugin in each node namespace. */
export const NODE_BRIDGE = 'ambit0';
/** Node's interface into the fabric, seen from the node namespace. */
export const NODE_UNDERLAY_IF = 'eth0';
export const FABRIC_BRIDGE = 'br0';

export function newRunId(): string {
  return randomBytes(RUN_ID_BYTES).toString('hex');
}

export function runPrefix(runId: string): string {
  return `${NETNS_PREFIX}${runId}-`;
}

export function secondOctet(runId: string): number {
  const digest = createHash('sha256').update(runId).digest();
  return SECOND_OCTET_BASE + (digest.readUInt16BE(0) % SECOND_OCTET_SPAN);
}

export function nodeNetnsName(runId: string, index: number): string {
  return `${runPrefix(runId)}n${index}`;
}

export function fabricNetnsName(runId: string): string {
  return `${runPrefix(runId)}fabric`;
}

/**
 * A pod's network namespace name: pod names are unique per Kubernetes namespace only (`foo/sleep` and `bar/sleep`
 * coexist), so the name is a short hash of both, never the pod name itself.
 */
export function podNetnsName(runId: string, namespace: string, podName: string): string {
  return `${runPrefix(runId)}p${createHash('sha256').update(`${namespace}/${podName}`).digest('hex').slice(0, 12)}`;
}

export function podCidr(runId: string, index: number): string {
  return `10.${secondOctet(runId)}.${index}.0/24`;
}

export function podGateway(runId: string, index: number): string {
  return `10.${secondOctet(runId)}.${index}.1`;
}

export function underlayIp(runId: string, index: number): string {
  return `10.${secondOctet(runId)}.${UNDERLAY_THIRD_OCTET}.${index + 1}`;
}

export const UNDERLAY_PREFIX_LENGTH = 24;

/** IPv6 (ULA, fd00::/8) counterparts for a dual-stack cluster, from the same run-derived number. */
export function podCidr6(runId: string, index: number): string {
  return `fd00:${secondOctet(runId).toString(16)}:${index.toString(16)}::/64`;
}

export function podGateway6(runId: string, index: number): string {
  return `fd00:${secondOctet(runId).toString(16)}:${index.toString(16)}::1`;
}

export function underlayIp6(runId: string, index: number): string {
  return `fd00:${secondOctet(runId).toString(16)}:ff::${(index + 1).toString(16)}`;
}

export const UNDERLAY_PREFIX_LENGTH_6 = 64;

/** The fabric's own address on the underlay (a control plane listens there); far above any node index. */
export function fabricServiceIp(runId: string): string {
  return `10.${secondOctet(runId)}.${UNDERLAY_THIRD_OCTET}.250`;
}

/** Fabric-side interface of node i's link (in the fabric namespace, so names never clash with the root's). */
export function fabricPortName(index: number): string {
  return `n${index}`;
}

/** Pod names become namespace names: keep them DNS-label-like so every tool accepts them. */
export function isValidPodName(name: string): boolean {
  return /^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$/.test(name);
}
