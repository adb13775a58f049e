/**
 * The answer to "would this connection be allowed, and which policy decides": what `ambitctl authz check` prints,
 * whether it decided from a cluster directory itself or asked an agent's admin endpoint (`GET /authz/check`).
 *
 * Owns: the shape both sides agree on. Must not know about: how either computes it.
 */
import type { Explanation } from './explain.ts';

export interface PodView {
  namespace: string;
  name: string;
  ip: string;
  serviceAccount: string;
  inMesh: boolean;
  captureReason: string;
  principal?: string;
}

export interface AuthzCheckResult {
  source: PodView;
  destination: PodView;
  port: number;
  allowed: boolean;
  /** `namespace/name` of the deciding policy, absent when none decided. */
  decidingPolicy?: string;
  reason: string;
  lines: string[];
  explanation?: Explanation;
  /** Policies that are not in force (rejected, or compiled with warnings). */
  problems: string[];
  /** Who decided: `cluster directory <dir>` or `agent on <node>`. */
  decidedBy?: string;
}
