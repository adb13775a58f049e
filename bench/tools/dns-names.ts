/**
 * The records the dns suite serves, the same for the agent and for dnsmasq: Service `svc-<i>` in namespace `bench`
 * at 10.96.<i / 250>.<i % 250 + 1>.
 * Must not know about: either server.
 */
export function benchServiceName(index: number): string {
  return `svc-${index}.bench.svc.cluster.local`;
}

export function benchServiceAddress(index: number): string {
  return `10.96.${Math.floor(index / 250)}.${(index % 250) + 1}`;
}
