/**
 * Test helper: the control plane's CA service on a loopback TLS gRPC server, and a raw client for requests the
 * agent's CaClient would never send (malformed CSRs, two identities).
 * Used by tests only; never imported by production code.
 */
import * as grpc from '@grpc/grpc-js';
import { registerCaService, type CaServiceCounters } from '../../controlplane/ca/ca-service.ts';
import { bootstrapTokenAuthenticator } from '../../controlplane/ca/node-authenticator.ts';
import type { PodServiceAccount } from '../../controlplane/ca/node-authorizer.ts';
import {
  AUTHORIZATION_METADATA_KEY,
  IstioCertificateServiceClient,
  type IstioCertificateRequest,
  type IstioCertificateResponse,
} from '../../shared/ca/ca-proto.ts';
import { x509 } from '../../shared/identity/crypto-provider.ts';
import { generateKeyPair, importPrivateKeyPem, SIGNING_ALGORITHM, type CertificateAuthority } from '../../shared/identity/index.ts';

export interface TestPod extends PodServiceAccount {
  node: string;
}

export interface TestCaServer {
  address: string;
  port: number;
  /** Roots that verify the server's TLS certificate (the mesh root). */
  rootsPem: string[];
  counters: CaServiceCounters;
  /** Mutable: tests add and remove pods. */
  pods: TestPod[];
  stop(): Promise<void>;
}

/** A TLS serving certificate for 127.0.0.1 signed by the mesh root, as the control plane presents. */
export async function servingCertificate(ca: CertificateAuthority): Promise<{ certPem: string; keyPem: string }> {
  const rootKeys = await importPrivateKeyPem(ca.rootKeyPem);
  const serverKeys = await generateKeyPair();
  const root = new x509.X509Certificate(ca.rootCertPem);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: '01' + Date.now().toString(16),
    subject: 'CN=ambit-controlplane',
    issuer: root.subject,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 24 * 3600_000),
    signingAlgorithm: SIGNING_ALGORITHM,
    publicKey: serverKeys.publicKey,
    signingKey: rootKeys.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension([{ type: 'ip', value: '127.0.0.1' }, { type: 'dns', value: 'localhost' }]),
    ],
  });
  return { certPem: cert.toString('pem') + '\n', keyPem: serverKeys.privateKeyPem };
}

/** Starts the CA service on 127.0.0.1 (an ephemeral port unless `port` is given). */
export async function startCaServer(options: {
  ca: CertificateAuthority;
  tokens: Record<string, string>;
  pods: TestPod[];
  maxTtlMs?: number;
  port?: number;
  /** Registers the CA service another way (the control plane's registrar) instead of tokens and pods. */
  register?: (server: grpc.Server) => { counters: CaServiceCounters };
}): Promise<TestCaServer> {
  const server = new grpc.Server();
  const pods = options.pods;
  const { counters } = options.register
    ? options.register(server)
    : registerCaService(server, {
      ca: options.ca,
      authenticate: bootstrapTokenAuthenticator(options.tokens),
      podsOnNode: (node) => pods.filter((pod) => pod.node === node),
      ...(options.maxTtlMs === undefined ? {} : { maxTtlMs: options.maxTtlMs }),
    });
  const serving = await servingCertificate(options.ca);
  const credentials = grpc.ServerCredentials.createSsl(null, [{ cert_chain: Buffer.from(serving.certPem), private_key: Buffer.from(serving.keyPem) }], false);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(`127.0.0.1:${options.port ?? 0}`, credentials, (error, bound) => (error ? reject(error) : resolve(bound)));
  });
  return {
    address: `127.0.0.1:${port}`,
    port,
    rootsPem: [options.ca.rootCertPem],
    counters,
    pods,
    stop: () => new Promise<void>((resolve) => {
      server.forceShutdown();
      resolve();
    }),
  };
}

/** Sends one CreateCertificate exactly as given; resolves with the response or rejects with the ServiceError. */
export function rawCreateCertificate(
  server: { address: string; rootsPem: string[] },
  token: string,
  request: IstioCertificateRequest,
): Promise<IstioCertificateResponse> {
  const client = new IstioCertificateServiceClient(server.address, grpc.credentials.createSsl(Buffer.from(server.rootsPem.join(''))));
  const metadata = new grpc.Metadata();
  metadata.set(AUTHORIZATION_METADATA_KEY, `Bearer ${token}`);
  return new Promise<IstioCertificateResponse>((resolve, reject) => {
    (client as unknown as Record<string, (...args: unknown[]) => void>)['CreateCertificate']!(request, metadata, (error: grpc.ServiceError | null, response: IstioCertificateResponse) => {
      if (error) reject(error);
      else resolve(response);
    });
  }).finally(() => client.close());
}
