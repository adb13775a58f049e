/**
 * A CertificateSource that asks the control plane's CA (Istio's `IstioCertificateService/CreateCertificate`).
 *
 * Owns: one TLS gRPC channel to the CA, a fresh P-256 key and CSR per fetch, the bearer token and
 * `ImpersonatedIdentity` (ztunnel's way of saying which pod identity it asks for), and turning the answered
 * chain into a WorkloadCertificate after checking it is for the identity asked and for our key.
 * Must not know about: caching, rotation, backoff (certificate-manager.ts), pods.
 *
 * Which node is asking: the CA learns it from the credential when it can (a per-node bootstrap token, or a
 * bound service account token in Kubernetes), so an agent cannot claim another node's pods; with local mode's
 * one shared bootstrap token the agent names its node in `x-ambit-node` (see controlplane/ca/ca-registrar.ts).
 */
import { checkServerIdentity } from '../xds/client.ts';
import { createPublicKey, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import * as grpc from '@grpc/grpc-js';
import {
  AUTHORIZATION_METADATA_KEY,
  IMPERSONATED_IDENTITY_KEY,
  IstioCertificateServiceClient,
  NODE_METADATA_KEY,
  type IstioCertificateRequest,
  type IstioCertificateResponse,
} from './ca-proto.ts';
import { createCsr, generateKeyPair, spiffeIdOfCertificate, type SpiffeId, type WorkloadCertificate } from '../identity/index.ts';
import type { CertificateSource } from './certificate-source.ts';

/** A CA answer slower than this is treated as a failure (the manager retries with backoff). */
const CA_CALL_TIMEOUT_MS = 10_000;
/**
 * gRPC reconnect backoff toward the CA. grpc-js defaults to a 120 s ceiling; a restarted control plane should be
 * reached again within seconds, while certificates still have half their life left.
 */
const CA_RECONNECT_INITIAL_MS = 500;
const CA_RECONNECT_MAX_MS = 5_000;

type CreateCertificateCall = (
  request: IstioCertificateRequest,
  metadata: grpc.Metadata,
  options: grpc.CallOptions,
  callback: grpc.requestCallback<IstioCertificateResponse>,
) => grpc.ClientUnaryCall;

export interface CaClientOptions {
  /** `host:port` of the control plane's gRPC server (Istio: istiod:15012). */
  address: string;
  /** PEM roots that sign the CA server's TLS certificate (local mode: the published `root-cert.pem`). */
  rootsPem: string[];
  /** This node's bearer token. */
  token: string;
  /**
   * This node's name, sent as `x-ambit-node` for a CA whose credential does not carry the node (local mode with
   * one shared bootstrap token). A per-node token or a bound service account token makes it unnecessary.
   */
  node?: string;
  /** Requested lifetime (validity_duration); the CA may shorten it. Default: the CA's default. */
  ttlMs?: number;
  /** TLS name to verify instead of the address's host (grpc `ssl_target_name_override`). */
  serverName?: string;
  /**
   * The SPIFFE URI the CA must present (istiod's: spiffe://<td>/ns/istio-system/sa/istiod). The control plane's
   * certificate carries only that URI, so with it set the host name is not checked.
   */
  serverIdentity?: string;
}

export class CaClient implements CertificateSource {
  readonly #client: grpc.Client;
  readonly #token: string;
  readonly #node: string | undefined;
  readonly #ttlSeconds: number;
  /** Mesh roots: the configured ones, plus the root each answer ends with. */
  #rootsPem: string[];

  constructor(options: CaClientOptions) {
    this.#token = options.token;
    this.#node = options.node;
    this.#ttlSeconds = options.ttlMs === undefined ? 0 : Math.ceil(options.ttlMs / 1000);
    this.#rootsPem = [...options.rootsPem];
    const channelOptions: grpc.ChannelOptions = {
      'grpc.initial_reconnect_backoff_ms': CA_RECONNECT_INITIAL_MS,
      'grpc.max_reconnect_backoff_ms': CA_RECONNECT_MAX_MS,
    };
    if (options.serverName) channelOptions['grpc.ssl_target_name_override'] = options.serverName;
    const credentials = options.serverIdentity
      ? grpc.credentials.createSsl(Buffer.from(options.rootsPem.join('')), null, null, { checkServerIdentity: checkServerIdentity(options.serverIdentity) })
      : grpc.credentials.createSsl(Buffer.from(options.rootsPem.join('')));
    this.#client = new IstioCertificateServiceClient(options.address, credentials, channelOptions);
  }

  /** Reads the roots file (and the token file, when given instead of a token) and connects. */
  static async open(options: Omit<CaClientOptions, 'rootsPem' | 'token'> & { rootsFile: string; token?: string; tokenFile?: string }): Promise<CaClient> {
    const rootsText = await readFile(options.rootsFile, 'utf8');
    const rootsPem = rootsText.match(/-----BEGIN CERTIFICATE-----[\s\S]*?-----END CERTIFICATE-----\n?/g) ?? [];
    if (rootsPem.length === 0) throw new Error(`${options.rootsFile} holds no PEM certificate`);
    const token = options.token ?? (options.tokenFile ? (await readFile(options.tokenFile, 'utf8')).trim() : undefined);
    if (!token) throw new Error('CaClient needs a node token (token or tokenFile)');
    return new CaClient({ ...options, rootsPem, token });
  }

  rootsPem(): string[] {
    return this.#rootsPem;
  }

  async fetch(identity: SpiffeId): Promise<WorkloadCertificate> {
    const keys = await generateKeyPair();
    const request: IstioCertificateRequest = {
      csr: await createCsr(keys, identity),
      validity_duration: String(this.#ttlSeconds),
      metadata: { fields: { [IMPERSONATED_IDENTITY_KEY]: { stringValue: identity.uri } } },
    };
    const response = await this.#call(request);
    const chain = response.cert_chain ?? [];
    if (chain.length === 0) throw new Error(`the CA answered no certificate for ${identity.uri}`);
    const leafPem = chain[0]!;
    const leaf = new X509Certificate(leafPem);
    const got = spiffeIdOfCertificate(leaf);
    if (got.uri !== identity.uri) throw new Error(`the CA answered a certificate for ${got.uri} when ${identity.uri} was asked`);
    const ourKey = createPublicKey(keys.privateKeyPem).export({ type: 'spki', format: 'der' });
    if (!leaf.publicKey.export({ type: 'spki', format: 'der' }).equals(ourKey)) {
      throw new Error(`the CA answered a certificate for ${identity.uri} with another key than the CSR's`);
    }
    const root = chain.length > 1 ? chain[chain.length - 1]! : undefined;
    if (root && !this.#rootsPem.includes(root)) this.#rootsPem = [...this.#rootsPem, root];
    return {
      identity,
      certPem: leafPem,
      keyPem: keys.privateKeyPem,
      chainPem: chain.slice(1, -1),
      rootsPem: this.#rootsPem,
      notBefore: leaf.validFromDate,
      notAfter: leaf.validToDate,
    };
  }

  close(): void {
    this.#client.close();
  }

  #call(request: IstioCertificateRequest): Promise<IstioCertificateResponse> {
    const metadata = new grpc.Metadata();
    metadata.set(AUTHORIZATION_METADATA_KEY, `Bearer ${this.#token}`);
    if (this.#node) metadata.set(NODE_METADATA_KEY, this.#node);
    return new Promise((resolve, reject) => {
      const client = this.#client as unknown as { CreateCertificate: CreateCertificateCall };
      client.CreateCertificate(request, metadata, { deadline: Date.now() + CA_CALL_TIMEOUT_MS }, (error, response) => {
        if (error) reject(error);
        else resolve(response!);
      });
    });
  }
}
