/**
 * SPIFFE identities in Istio's form: spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>.
 *
 * Owns: parsing, formatting and validating identity strings.
 * Must not know about: certificates or how identities are proven.
 */
import { IdentityError } from './errors.ts';

export const DEFAULT_TRUST_DOMAIN = 'cluster.local';

/** An Istio workload identity. Immutable; `uri` is the canonical string form. */
export interface SpiffeId {
  readonly trustDomain: string;
  readonly namespace: string;
  readonly serviceAccount: string;
  readonly uri: string;
}

// Trust domain: lowercase letters, digits, dots, dashes and underscores (SPIFFE ID spec, section 2.1).
const TRUST_DOMAIN = /^[a-z0-9._-]+$/;
// Path segments: Kubernetes names (RFC 1123 labels for namespaces, subdomains for service accounts)
// fit within SPIFFE's allowed segment characters [A-Za-z0-9._-].
const SEGMENT = /^[A-Za-z0-9._-]+$/;
const MAX_URI_LENGTH = 2048;

function invalid(input: string, why: string): IdentityError {
  return new IdentityError(
    'AMBIT_IDENTITY_INVALID_SPIFFE_ID',
    `invalid SPIFFE ID ${JSON.stringify(input)}: ${why} (expected spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>)`,
  );
}

function checkSegment(input: string, what: string, value: string): void {
  if (value === '') throw invalid(input, `${what} is empty`);
  if (value === '.' || value === '..') throw invalid(input, `${what} may not be "${value}"`);
  if (!SEGMENT.test(value)) throw invalid(input, `${what} ${JSON.stringify(value)} has characters outside [A-Za-z0-9._-]`);
}

/** Builds an identity from its parts, validating each. */
export function spiffeId(trustDomain: string, namespace: string, serviceAccount: string): SpiffeId {
  const uri = `spiffe://${trustDomain}/ns/${namespace}/sa/${serviceAccount}`;
  if (!TRUST_DOMAIN.test(trustDomain)) throw invalid(uri, `trust domain ${JSON.stringify(trustDomain)} must be lowercase [a-z0-9._-]`);
  checkSegment(uri, 'namespace', namespace);
  checkSegment(uri, 'service account', serviceAccount);
  if (uri.length > MAX_URI_LENGTH) throw invalid(uri.slice(0, 64) + '...', `longer than ${MAX_URI_LENGTH} bytes`);
  return Object.freeze({ trustDomain, namespace, serviceAccount, uri });
}

/** Parses `spiffe://td/ns/x/sa/y`; throws IdentityError with the reason on anything else. */
export function parseSpiffeId(input: string): SpiffeId {
  if (typeof input !== 'string') throw invalid(String(input), 'not a string');
  if (input.length > MAX_URI_LENGTH) throw invalid(input.slice(0, 64) + '...', `longer than ${MAX_URI_LENGTH} bytes`);
  const scheme = 'spiffe://';
  if (!input.startsWith(scheme)) throw invalid(input, 'scheme must be spiffe://');
  const rest = input.slice(scheme.length);
  if (rest.includes('?') || rest.includes('#')) throw invalid(input, 'query and fragment are not allowed');
  const parts = rest.split('/');
  if (parts.length !== 5) throw invalid(input, `path must have exactly ns/<namespace>/sa/<service-account>`);
  const [trustDomain, nsKeyword, namespace, saKeyword, serviceAccount] = parts as [string, string, string, string, string];
  if (trustDomain === '') throw invalid(input, 'trust domain is empty');
  if (nsKeyword !== 'ns' || saKeyword !== 'sa') throw invalid(input, 'path must be /ns/<namespace>/sa/<service-account>');
  return spiffeId(trustDomain, namespace, serviceAccount);
}

/** True when `input` is a well-formed Istio SPIFFE identity. */
export function isSpiffeId(input: string): boolean {
  try {
    parseSpiffeId(input);
    return true;
  } catch {
    return false;
  }
}
