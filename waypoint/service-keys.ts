/**
 * `serviceKey(service)` (`<namespace>/<hostname>`) made once per Service object and kept while its namespace and
 * hostname stay the same: a request looks its Service up several times (routes, DestinationRules, endpoints, the
 * pool, the access log), and a key made per lookup is a new string to build, flatten and hash each time.
 *
 * Owns: that cache. Must not know about: what the keys are used for.
 */
import { serviceKey, type Service } from '../shared/mesh/service.ts';

const keys = new WeakMap<Service, { namespace: string; hostname: string; key: string }>();

export function cachedServiceKey(service: Service): string {
  const cached = keys.get(service);
  if (cached !== undefined && cached.namespace === service.namespace && cached.hostname === service.hostname) return cached.key;
  const key = serviceKey(service);
  keys.set(service, { namespace: service.namespace, hostname: service.hostname, key });
  return key;
}
