/**
 * The CA service's defaults, each with the reason for its value.
 *
 * Owns: lifetimes and names the CA service and the root store use when the caller does not say otherwise.
 * Must not know about: gRPC, Kubernetes clients, files.
 */

/** Istio's default workload certificate lifetime: agents renew at half life, so a day means a renewal every 12 h. */
export const DEFAULT_WORKLOAD_CERT_TTL_MS = 24 * 60 * 60 * 1000;

/**
 * The longest lifetime an agent may ask for. A stolen workload key stays useful until its certificate expires
 * (there is no revocation in the mesh), and agents renew at half life, so nothing needs more than a day.
 * Longer requests are shortened to this, not refused, so an agent built for another CA still works.
 */
export const MAX_WORKLOAD_CERT_TTL_MS = 24 * 60 * 60 * 1000;

/** A P-256 CSR with one SPIFFE SAN is well under 1 KiB of PEM; anything far larger is refused before parsing. */
export const MAX_CSR_PEM_BYTES = 16 * 1024;

/** Where istiod keeps its self-signed CA (namespace-local Secret) and the keys inside, so tools find it. */
export const CA_SECRET_NAME = 'istio-ca-secret';
export const CA_SECRET_CERT_KEY = 'ca-cert.pem';
export const CA_SECRET_KEY_KEY = 'ca-key.pem';

/** The ConfigMap istiod publishes the mesh root in, in every namespace, and its key. */
export const ROOT_CONFIGMAP_NAME = 'istio-ca-root-cert';
export const ROOT_CONFIGMAP_KEY = 'root-cert.pem';

/** Files of the local-mode root directory (as the agent's LocalCaSource names them). */
export const LOCAL_ROOT_CERT_FILE = 'root-cert.pem';
export const LOCAL_ROOT_KEY_FILE = 'ca-key.pem';
