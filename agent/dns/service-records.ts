/**
 * What the DNS proxy may know about the mesh: the addresses behind a Service hostname, and nothing else (least
 * privilege, as ztunnel's DNS server: it can look names up, it cannot fetch certificates, see policies or pods).
 *
 * Owns: the narrow lookup interface the DNS server is given.
 * Must not know about: how the mesh state is stored or fed (xDS, a cluster directory); DNS wire format.
 */

export interface ServiceRecords {
  /**
   * Changes whenever an answer of `addressesOf` may have changed (the mesh state's version): the server keeps the
   * responses it built only while this stays the same.
   */
  readonly generation: number;

  /**
   * The addresses a name resolves to, for a Service hostname as the mesh state keys it (`<name>.<namespace>.svc.
   * <domain>`, lower case, no trailing dot): its cluster IPs (VIPs), or for a headless Service the pod IPs of its
   * endpoints; both families mixed, in a stable order. Undefined when no Service has that hostname. Called once per
   * candidate name of every query: must be a map lookup, not a scan.
   */
  addressesOf(hostname: string): readonly string[] | undefined;
}
