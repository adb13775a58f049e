/**
 * HBONE's TLS: mutual TLS 1.3 only, ALPN h2, peers proven by chain to the mesh roots plus their SPIFFE URI SAN.
 *
 * Owns: the client's TLS connect (with a `checkServerIdentity` that checks the SPIFFE set, never a host name,
 * and no SNI), the server's TLS settings (client certificate demanded), reading and checking a peer's identity,
 * and caching one secure context per certificate so handshakes never rebuild it.
 * Must not know about: HTTP/2, pools, policy.
 */
import { X509Certificate } from 'node:crypto';
import type net from 'node:net';
import tls from 'node:tls';
import { checkExpectedIdentity, createWorkloadSecureContext, IdentityError, spiffeIdOfCertificate } from '../identity/index.ts';
import type { SpiffeId, WorkloadCertificate } from '../identity/index.ts';
import { HBONE_ALPN } from './config.ts';
import { hboneErrors, HboneError } from './errors.ts';
import type { HostPort } from './types.ts';

const ALPN_PROTOCOLS = [HBONE_ALPN];

/** One secure context per certificate object: a rotated certificate is a new object and gets a new context. */
const secureContexts = new WeakMap<WorkloadCertificate, tls.SecureContext>();

export function secureContextFor(certificate: WorkloadCertificate): tls.SecureContext {
  let context = secureContexts.get(certificate);
  if (!context) {
    context = createWorkloadSecureContext(certificate);
    secureContexts.set(certificate, context);
  }
  return context;
}

export interface ClientTlsParams {
  proxy: HostPort;
  certificate: WorkloadCertificate;
  trustDomain: string;
  expectedIdentities: readonly string[];
  /** Told the server's identity once it passed every check (the identity the connection then speaks to). */
  onPeerVerified?: (identity: SpiffeId) => void;
}

/** The SPIFFE identity a peer certificate proves, in `trustDomain`; throws IdentityError otherwise. */
function identityOf(certificate: X509Certificate, trustDomain: string): SpiffeId {
  const identity = spiffeIdOfCertificate(certificate);
  if (identity.trustDomain !== trustDomain) {
    throw new IdentityError('AMBIT_IDENTITY_WRONG_TRUST_DOMAIN', `it presented ${identity.uri}, outside trust domain ${trustDomain}`);
  }
  return identity;
}

/**
 * Starts the client side of the handshake over an (often still connecting) TCP socket. The chain is verified by
 * OpenSSL against the certificate's mesh roots; then the SPIFFE URI must be in the trust domain and the expected
 * set. Failures surface as the socket's 'error' (HboneError HBONE_PEER_IDENTITY for identity, raw TLS errors else).
 */
export function connectTls(socket: net.Socket, params: ClientTlsParams): tls.TLSSocket {
  const { proxy, trustDomain, expectedIdentities } = params;
  return tls.connect({
    socket,
    secureContext: secureContextFor(params.certificate),
    ALPNProtocols: ALPN_PROTOCOLS,
    rejectUnauthorized: true,
    // No `servername`/`host`: no SNI is sent, and the host name plays no part in who the peer is.
    checkServerIdentity: (_hostname: string, peer: tls.PeerCertificate): Error | undefined => {
      try {
        const identity = identityOf(new X509Certificate(peer.raw), trustDomain);
        checkExpectedIdentity(identity, expectedIdentities);
        params.onPeerVerified?.(identity);
        return undefined;
      } catch (cause) {
        return hboneErrors.peerIdentity(proxy, cause instanceof Error ? cause.message : String(cause));
      }
    },
  });
}

/** Options for the server's TLS layer presenting `certificate` and trusting only `rootsPem`. */
export function serverTlsOptions(certificate: WorkloadCertificate, rootsPem: string[], handshakeTimeoutMs: number): tls.TlsOptions {
  return {
    cert: [certificate.certPem, ...certificate.chainPem].join(''),
    key: certificate.keyPem,
    ca: rootsPem,
    minVersion: 'TLSv1.3',
    maxVersion: 'TLSv1.3',
    ALPNProtocols: ALPN_PROTOCOLS,
    requestCert: true,
    // The handshake's verdict is checked by `verifyClient`, so a rejection is counted and explained, not silent.
    rejectUnauthorized: false,
    handshakeTimeout: handshakeTimeoutMs,
  };
}

/**
 * The verified identity of a client that completed the server handshake: its certificate must have chained to
 * the roots (OpenSSL's verdict), ALPN must be h2, and its SPIFFE URI must be in `trustDomain`.
 */
export function verifyClient(socket: tls.TLSSocket, trustDomain: string): SpiffeId {
  if (!socket.authorized) {
    const reason = socket.authorizationError;
    throw new HboneError(
      'HBONE_TLS',
      `client ${socket.remoteAddress ?? '?'} presented no acceptable certificate (${reason instanceof Error ? reason.message : String(reason)}): ` +
        'it must be signed by the mesh root and still valid',
    );
  }
  if (socket.alpnProtocol !== HBONE_ALPN) {
    throw new HboneError('HBONE_TLS', `client ${socket.remoteAddress ?? '?'} did not negotiate ALPN h2: it is not an HBONE client`);
  }
  const certificate = socket.getPeerX509Certificate();
  if (!certificate) throw new HboneError('HBONE_TLS', `client ${socket.remoteAddress ?? '?'} presented no certificate`);
  try {
    return identityOf(certificate, trustDomain);
  } catch (cause) {
    throw new HboneError('HBONE_PEER_IDENTITY', `client ${socket.remoteAddress ?? '?'} is not a mesh workload: ${(cause as Error).message}`, { cause });
  }
}
