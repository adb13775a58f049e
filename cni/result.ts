/**
 * Reads what a chained plugin needs from the previous plugin's result: the pod's IP addresses.
 *
 * Owns: the result shapes of spec 0.3.x/0.4.0/1.0.0/1.1.0 (`ips[].address` in CIDR form; 1.1.0 only added optional fields).
 * Must not know about: the agent or how the result is printed.
 */
import { CniError, CniErrorCode } from './errors.ts';

/** The pod's IPs, without prefix length, from `prevResult.ips[].address` (e.g. "10.1.0.5/24" -> "10.1.0.5"). */
export function podIpsFromResult(prevResult: Record<string, unknown>): string[] {
  const ips = prevResult.ips;
  if (ips === undefined) return [];
  if (!Array.isArray(ips)) {
    throw new CniError(CniErrorCode.INVALID_NETWORK_CONFIG, 'prevResult.ips must be a list of {"address": "ip/prefix"}');
  }
  return ips.map((entry: unknown, index) => {
    const address = (entry as Record<string, unknown> | null)?.address;
    if (typeof address !== 'string' || address === '') {
      throw new CniError(CniErrorCode.INVALID_NETWORK_CONFIG, `prevResult.ips[${index}].address is missing`);
    }
    const slash = address.indexOf('/');
    return slash === -1 ? address : address.slice(0, slash);
  });
}
