/**
 * The control plane's certificate authority service: `istio.v1.auth.IstioCertificateService/CreateCertificate`.
 *
 * Owns: the request flow (authenticate the node agent, read the CSR, reconcile it with `ImpersonatedIdentity`,
 * authorize the identity for the caller's node, choose the lifetime, sign, answer [leaf, ...intermediates, root])
 * and the signature / refusal counters.
 * Must not know about: how tokens map to nodes or where pods run (injected), where the root is kept
 * (root-store.ts), the xDS server that shares the gRPC server.
 *
 * Status codes an agent sees: UNAUTHENTICATED (no or unknown token), PERMISSION_DENIED (no pod with that service
 * account on the caller's node; a waypoint asking for any identity but its own), INVALID_ARGUMENT (malformed CSR, not exactly one SPIFFE identity, foreign trust
 * domain, ImpersonatedIdentity that contradicts the CSR, negative lifetime), UNAVAILABLE (the caller could not be
 * checked now: the API server did not answer the TokenReview), INTERNAL (a bug: logged).
 */
import type * as grpc from '@grpc/grpc-js';
import {
  CREATE_CERTIFICATE_METHOD,
  IMPERSONATED_IDENTITY_KEY,
  istioCertificateServiceDefinition,
  type IstioCertificateRequest,
  type IstioCertificateResponse,
} from '../../shared/ca/ca-proto.ts';
import { IdentityError, parseSpiffeId, type CertificateAuthority, type SpiffeId, type VerifiedCsr } from '../../shared/identity/index.ts';
import { DEFAULT_WORKLOAD_CERT_TTL_MS, MAX_CSR_PEM_BYTES, MAX_WORKLOAD_CERT_TTL_MS } from './config.ts';
import { CaServiceError, type CaRefusalReason } from './errors.ts';
import type { NodeAuthenticator } from './node-authenticator.ts';
import { authorizeIdentityForNode, type PodsOnNode } from './node-authorizer.ts';

/** Plain counters until telemetry lands; `refused` is split by the status the caller saw. */
export interface CaServiceCounters {
  signed: number;
  refused: Record<CaRefusalReason, number>;
}

export function newCaServiceCounters(): CaServiceCounters {
  return { signed: 0, refused: { unauthenticated: 0, permissionDenied: 0, invalidArgument: 0, unavailable: 0, internal: 0 } };
}

/** The subset of a pino logger the service writes to. */
export interface CaServiceLog {
  info(fields: object, message: string): void;
  warn(fields: object, message: string): void;
  error(fields: object, message: string): void;
}

export interface CaServiceDeps {
  /** Signs; its root is the last element of every answered chain. */
  ca: CertificateAuthority;
  /** Intermediates between the signing CA and the mesh root, leaf-side first (none for a self-signed root). */
  intermediatesPem?: string[];
  authenticate: NodeAuthenticator;
  podsOnNode: PodsOnNode;
  /** Lifetime when the request asks for none. */
  defaultTtlMs?: number;
  /** Requests for longer are shortened to this. */
  maxTtlMs?: number;
  /** Pass one to share it with telemetry; a fresh one otherwise. */
  counters?: CaServiceCounters;
  log?: CaServiceLog;
}

export interface CaServiceHandle {
  counters: CaServiceCounters;
}

const SILENT_LOG: CaServiceLog = { info() {}, warn() {}, error() {} };

/** Adds IstioCertificateService to `server` (the control plane's gRPC server, shared with xDS). */
export function registerCaService(server: grpc.Server, deps: CaServiceDeps): CaServiceHandle {
  const counters = deps.counters ?? newCaServiceCounters();
  const log = deps.log ?? SILENT_LOG;
  const createCertificate: grpc.handleUnaryCall<IstioCertificateRequest, IstioCertificateResponse> = (call, callback) => {
    handleCreateCertificate(call.request, call.metadata, deps).then(
      ({ response, node, identity }) => {
        counters.signed++;
        log.info({ node, identity: identity.uri }, 'signed workload certificate');
        callback(null, response);
      },
      (error: unknown) => {
        const refusal = asRefusal(error);
        counters.refused[refusal.reason]++;
        if (refusal.reason === 'internal') log.error({ err: error, peer: call.getPeer() }, 'certificate request failed');
        else log.warn({ reason: refusal.reason, message: refusal.message, peer: call.getPeer() }, 'certificate request refused');
        callback({ code: refusal.grpcCode, details: refusal.message });
      },
    );
  };
  server.addService(istioCertificateServiceDefinition, { CreateCertificate: createCertificate });
  return { counters };
}

async function handleCreateCertificate(
  request: IstioCertificateRequest,
  metadata: grpc.Metadata,
  deps: CaServiceDeps,
): Promise<{ response: IstioCertificateResponse; node: string; identity: SpiffeId }> {
  const caller = await deps.authenticate(metadata);
  const node = caller.node;
  const impersonated = impersonatedIdentity(request);
  const csrPem = request.csr ?? '';
  if (csrPem.length > MAX_CSR_PEM_BYTES) throw new CaServiceError('invalidArgument', `the CSR is ${csrPem.length} bytes; a workload CSR is under ${MAX_CSR_PEM_BYTES}`);
  let identity: SpiffeId;
  let csr: VerifiedCsr;
  try {
    csr = deps.ca.readCsr(csrPem);
    identity = csr.identity;
  } catch (error) {
    if (error instanceof IdentityError) throw new CaServiceError('invalidArgument', error.message, { cause: error });
    throw error;
  }
  if (impersonated && impersonated.uri !== identity.uri) {
    throw new CaServiceError('invalidArgument', `ImpersonatedIdentity is ${impersonated.uri} but the CSR asks for ${identity.uri}: they must be the same identity`);
  }
  const only = caller.onlyIdentity;
  if (only && (only.namespace !== identity.namespace || only.serviceAccount !== identity.serviceAccount || identity.trustDomain !== deps.ca.trustDomain)) {
    throw new CaServiceError('permissionDenied', `the caller is service account ${only.namespace}/${only.serviceAccount} (a waypoint): it may get only its own identity, not ${identity.uri}`);
  }
  await authorizeIdentityForNode(node, identity, deps.podsOnNode);
  const ttlMs = lifetime(request, deps);
  const { certPem } = await deps.ca.signCsr(csr, { ttlMs });
  return { response: { cert_chain: [certPem, ...(deps.intermediatesPem ?? []), deps.ca.rootCertPem] }, node, identity };
}

/** The identity ztunnel asks for on a pod's behalf, from `metadata.ImpersonatedIdentity`, if any. */
function impersonatedIdentity(request: IstioCertificateRequest): SpiffeId | undefined {
  const value = request.metadata?.fields?.[IMPERSONATED_IDENTITY_KEY];
  if (value === undefined) return undefined;
  if (typeof value.stringValue !== 'string') throw new CaServiceError('invalidArgument', `metadata ${IMPERSONATED_IDENTITY_KEY} must be a string SPIFFE identity`);
  if (value.stringValue === '') return undefined;
  try {
    return parseSpiffeId(value.stringValue);
  } catch (error) {
    throw new CaServiceError('invalidArgument', `metadata ${IMPERSONATED_IDENTITY_KEY}: ${(error as Error).message}`, { cause: error });
  }
}

/** The requested lifetime (seconds on the wire), the default when absent, capped at the maximum. */
function lifetime(request: IstioCertificateRequest, deps: CaServiceDeps): number {
  const maxTtlMs = deps.maxTtlMs ?? MAX_WORKLOAD_CERT_TTL_MS;
  const seconds = Number(request.validity_duration ?? 0);
  if (!Number.isFinite(seconds) || seconds < 0) throw new CaServiceError('invalidArgument', `validity_duration must be a non-negative number of seconds, got ${request.validity_duration}`);
  if (seconds === 0) return Math.min(deps.defaultTtlMs ?? DEFAULT_WORKLOAD_CERT_TTL_MS, maxTtlMs);
  return Math.min(seconds * 1000, maxTtlMs);
}

function asRefusal(error: unknown): CaServiceError {
  if (error instanceof CaServiceError) return error;
  return new CaServiceError('internal', `${CREATE_CERTIFICATE_METHOD} failed inside the CA; see the control plane log`, { cause: error });
}
