/**
 * The waypoint's L7 policy counters, on its Prometheus registry (15020): decisions by outcome and deciding policy
 * (as Envoy's RBAC filter counts `rbac.allowed`/`rbac.denied` and shadow results), and JWT checks by outcome.
 *
 * Owns: the metric names and labels. Must not know about: how decisions are made.
 */
import { Counter, type Registry } from 'prom-client';

export class AuthzMetrics {
  readonly #decisions: Counter<'decision' | 'policy'>;
  readonly #dryRun: Counter<'would_allow' | 'policy'>;
  readonly #jwt: Counter<'result'>;
  readonly #rateLimited: Counter<'limit'>;
  readonly #rateLimitedChildren = new Map<string, { inc(): void }>();

  constructor(registry: Registry) {
    this.#decisions = new Counter({ name: 'ambit_waypoint_authz_decisions_total', help: 'L7 authorization decisions at the waypoint, by decision (allow, deny, audit) and the policy that made it (none: no policy)', labelNames: ['decision', 'policy'], registers: [registry] });
    this.#dryRun = new Counter({ name: 'ambit_waypoint_authz_dry_run_total', help: 'Requests whose decision a dry-run policy would have changed or matched, by that policy', labelNames: ['would_allow', 'policy'], registers: [registry] });
    this.#rateLimited = new Counter({ name: 'ambit_waypoint_rate_limited_total', help: 'Requests answered 429 by a LocalRateLimitPolicy limit (namespace/policy/limit)', labelNames: ['limit'], registers: [registry] });
    this.#jwt = new Counter({ name: 'ambit_waypoint_jwt_total', help: 'JWT checks at the waypoint: verified (signature checked), cached (a verified token seen again), invalid (401)', labelNames: ['result'], registers: [registry] });
  }

  /** Labelled children by decision then policy: a request increments one without building a label set. */
  readonly #children = { allow: new Map<string, { inc(): void }>(), deny: new Map<string, { inc(): void }>(), audit: new Map<string, { inc(): void }>() };

  decision(decision: 'allow' | 'deny' | 'audit', policy: string): void {
    const children = this.#children[decision];
    let child = children.get(policy);
    if (child === undefined) {
      child = this.#decisions.labels({ decision, policy: policy || 'none' });
      children.set(policy, child);
    }
    child.inc();
  }

  dryRun(wouldAllow: boolean, policy: string): void {
    this.#dryRun.inc({ would_allow: wouldAllow ? 'true' : 'false', policy: policy || 'none' });
  }

  rateLimited(limit: string): void {
    let child = this.#rateLimitedChildren.get(limit);
    if (child === undefined) {
      child = this.#rateLimited.labels({ limit });
      this.#rateLimitedChildren.set(limit, child);
    }
    child.inc();
  }

  readonly #jwtChildren = new Map<string, { inc(): void }>();

  jwt(result: 'verified' | 'cached' | 'invalid'): void {
    let child = this.#jwtChildren.get(result);
    if (child === undefined) {
      child = this.#jwt.labels({ result });
      this.#jwtChildren.set(result, child);
    }
    child.inc();
  }
}
