/**
 * Which names the agent answers itself, and with what: the Kubernetes Service names as a pod writes them, with the
 * short forms its search path yields, as ztunnel's DNS server does (`dns/server.rs`: aliases, search-domain
 * stripping with a CNAME).
 *
 * For a client pod in namespace `ns` and cluster domain `d`, a query name is tried as given, expanded to a Service
 * FQDN (`svc` -> `svc.ns.svc.d`, `svc.other` -> `svc.other.svc.d`, `svc.other.svc` -> `svc.other.svc.d`), and with a
 * search domain (`ns.svc.d`, `svc.d`, `d`) stripped off and expanded again: a resolver with `ndots:5` asks for
 * `server.shop.shop.svc.cluster.local` before `server.shop.svc.cluster.local`, and the first already finds the
 * Service (answered as a CNAME to the stripped name `server.shop` plus its addresses, ztunnel's shape).
 *
 * Every other name goes to the upstream resolver, as ztunnel forwards what it does not know (`dns/server.rs`:
 * "unknown host, forwarding"), Service-shaped names included: the control plane does not send every Service name
 * the cluster DNS serves (an ExternalName Service is no Address resource, as istiod leaves it out; kube-dns answers
 * it with a CNAME), so an unknown `<svc>.<ns>.svc.<d>` is the upstream's to answer, NXDOMAIN when it is nothing.
 * Also forwarded: a pod hostname of a headless Service (`<pod>.<subdomain>.<ns>.svc.<d>`, which kube-dns answers),
 * and the search-path candidates of unknown names (`<name>.<ns>.<ns>.svc.<d>`).
 *
 * Owns: the candidate names and the decision answer / forward.
 * Must not know about: DNS wire format, sockets, where the Service addresses come from (ServiceRecords).
 */
import type { ServiceRecords } from './service-records.ts';

export type NameResolution =
  /** The agent answers: `addresses` (both families; the caller keeps the queried one) under `owner`, after a CNAME from the query name to `owner` when `viaCname`. */
  | { kind: 'answer'; owner: string; viaCname: boolean; addresses: readonly string[] }
  | { kind: 'nxdomain' }
  | { kind: 'forward' };

const FORWARD: NameResolution = Object.freeze({ kind: 'forward' });

export class ClusterNames {
  readonly domain: string;
  /** `.svc.<domain>`: the suffix of every Service hostname. */
  readonly #svcSuffix: string;
  readonly #domainSuffix: string;

  constructor(domain: string) {
    this.domain = normalise(domain);
    this.#svcSuffix = `.svc.${this.domain}`;
    this.#domainSuffix = `.${this.domain}`;
  }

  /**
   * `name`: the question's name as the client sent it (any case, with or without the trailing dot); `namespace`:
   * the client pod's namespace.
   */
  resolve(name: string, namespace: string, records: ServiceRecords): NameResolution {
    const query = normalise(name);
    if (query.length === 0) return FORWARD;
    return this.#find(query, namespace, records) ?? FORWARD;
  }

  #find(query: string, namespace: string, records: ServiceRecords): NameResolution | undefined {
    const direct = this.#lookupWithExpansions(query, namespace, records);
    if (direct !== undefined) return { kind: 'answer', owner: query, viaCname: false, addresses: direct };
    // Search domains, most specific first, as the pod's resolv.conf lists them.
    for (const search of [`.${namespace}${this.#svcSuffix}`, this.#svcSuffix, this.#domainSuffix]) {
      if (!query.endsWith(search) || query.length === search.length) continue;
      const stripped = query.slice(0, query.length - search.length);
      const addresses = this.#lookupWithExpansions(stripped, namespace, records);
      if (addresses !== undefined) return { kind: 'answer', owner: stripped, viaCname: true, addresses };
    }
    return undefined;
  }

  #lookupWithExpansions(name: string, namespace: string, records: ServiceRecords): readonly string[] | undefined {
    if (name.endsWith(this.#svcSuffix)) return records.addressesOf(name);
    switch (labelCount(name)) {
      case 1:
        return records.addressesOf(`${name}.${namespace}${this.#svcSuffix}`);
      case 2:
        return records.addressesOf(`${name}${this.#svcSuffix}`);
      case 3:
        return name.endsWith('.svc') ? records.addressesOf(`${name}${this.#domainSuffix}`) : undefined;
      default:
        return undefined;
    }
  }
}

/** Lower case, no trailing dot: DNS names compare case-insensitively and the mesh state keys them this way. */
export function normalise(name: string): string {
  const trimmed = name.endsWith('.') ? name.slice(0, -1) : name;
  return trimmed.toLowerCase();
}

function labelCount(name: string): number {
  let count = 1;
  for (let i = 0; i < name.length; i++) if (name.charCodeAt(i) === 46) count++;
  return count;
}
