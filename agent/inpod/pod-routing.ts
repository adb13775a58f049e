/**
 * Sets and removes a pod's policy routing (rules.ts podRouting) through the native addon
 * (agent/native/inpod-routing.c): rtnetlink requests from this thread, no process. What `ip rule` and `ip route`
 * show inside the pod is what the `ip` commands made before (test/net/inpod-routing.test.ts compares them).
 *
 * Owns: loading the addon and turning its errors into CaptureErrors.
 * Must not know about: which marks or tables (rules.ts), iptables, pods.
 */
import { createRequire } from 'node:module';
import { CaptureError } from './errors.ts';
import type { PodRouting } from './rules.ts';

interface RoutingNumbers {
  fwmark: number;
  fwmask: number;
  table: number;
  priority: number;
}

interface NativeInpodRouting {
  setupPodRouting(netns: string, spec: RoutingNumbers & { ipv6: boolean; sysctlPath: string }): boolean;
  removePodRouting(netns: string, spec: RoutingNumbers): void;
}

const require = createRequire(import.meta.url);
const native = require('../native/build/Release/ambit_inpod_routing.node') as NativeInpodRouting;

function numbers(routing: PodRouting): RoutingNumbers {
  return { fwmark: routing.fwmark, fwmask: routing.fwmask, table: routing.table, priority: routing.priority };
}

/**
 * Sets the routing up in the namespace at `netns` (IPv6 too when routing.families has 6). Idempotent. True when the
 * IPv4 rule was not there before (this call made it: a fresh pod rather than a re-install).
 */
export function setupPodRouting(netns: string, routing: PodRouting): boolean {
  if (!routing.families.includes(4)) throw new CaptureError('RULES_FAILED', 'policy routing always covers IPv4');
  try {
    return native.setupPodRouting(netns, { ...numbers(routing), ipv6: routing.families.includes(6), sysctlPath: routing.migrateReqSysctl });
  } catch (error) {
    if ((error as { syscall?: string }).syscall === 'open' && (error as { code?: string }).code === 'ENOENT') {
      throw new CaptureError('NETNS_NOT_FOUND', `network namespace ${netns} does not exist (was the pod deleted?)`, { cause: error });
    }
    throw new CaptureError('RULES_FAILED', `policy routing setup in ${netns} failed: ${(error as Error).message}`, { cause: error });
  }
}

/** Removes the routing from both families; what is already gone is fine. */
export function removePodRouting(netns: string, routing: PodRouting): void {
  try {
    native.removePodRouting(netns, numbers(routing));
  } catch (error) {
    throw new CaptureError('RULES_FAILED', `policy routing removal in ${netns} failed: ${(error as Error).message}`, { cause: error });
  }
}
