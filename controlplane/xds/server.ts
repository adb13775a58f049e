/**
 * The delta xDS server: gRPC `envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources`
 * on the control plane's TLS port (15012), serving the resource cache to authenticated agents.
 *
 * Owns: the gRPC method, authenticating each stream before it is served, the set of live connections, and
 * the push scheduler (debounce within a bound, then hand each connection the names that changed).
 * Must not know about: Kubernetes objects or what the resources mean (the model fills the cache).
 */
import { X509Certificate } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { spiffeId, type CertificateAuthority } from '../../shared/identity/index.ts';
import { CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_SERVICE_ACCOUNT } from '../../shared/xds/client.ts';
import { DELTA_ADS_METHOD, messageType, TO_OBJECT_OPTIONS } from '../../shared/xds/protos.ts';
import type { DeltaDiscoveryRequest } from '../../shared/xds/types.ts';
import { AuthenticationError, AuthorizationError, type XdsAuthenticator } from './auth.ts';
import { XdsConnection, type ConnectionStats, type XdsLogger } from './connection.ts';
import type { ResourceCache } from './resource-cache.ts';

/** Istio's xDS port (istiod serves xDS and the CA on 15012). */
export const XDS_PORT = 15012;
/**
 * Wait this long after a change for more changes before pushing: a Deployment rollout or a namespace relabel
 * changes many objects within milliseconds, and one push of all of them is cheaper than many.
 */
export const PUSH_DEBOUNCE_MS = 5;
/** ...but never delay a push longer than this after the first change (the "change reaches all agents" budget). */
export const PUSH_MAX_DELAY_MS = 50;

const silentLogger: XdsLogger = { debug() {}, info() {}, warn() {}, error() {} };

export interface XdsServerOptions {
  cache: ResourceCache;
  authenticator: XdsAuthenticator;
  logger?: XdsLogger;
  pushDebounceMs?: number;
  pushMaxDelayMs?: number;
}

/** A function that adds services to the control plane's one gRPC server (xDS here; the CA service beside it). */
export type ServiceRegistrar = (server: grpc.Server) => void;

export class XdsServer {
  readonly #cache: ResourceCache;
  readonly #authenticator: XdsAuthenticator;
  readonly #logger: XdsLogger;
  readonly #debounceMs: number;
  readonly #maxDelayMs: number;
  readonly #connections = new Set<XdsConnection>();
  readonly #calls = new Set<grpc.ServerDuplexStream<DeltaDiscoveryRequest, Buffer>>();
  #nextConnectionId = 1;
  #timer: NodeJS.Timeout | undefined;
  #firstChangeAt = 0;
  #unsubscribe: () => void;

  constructor(options: XdsServerOptions) {
    this.#cache = options.cache;
    this.#authenticator = options.authenticator;
    this.#logger = options.logger ?? silentLogger;
    this.#debounceMs = options.pushDebounceMs ?? PUSH_DEBOUNCE_MS;
    this.#maxDelayMs = options.pushMaxDelayMs ?? PUSH_MAX_DELAY_MS;
    this.#unsubscribe = this.#cache.onChange(() => this.#schedulePush());
  }

  /** Adds the ADS service to `server`; use as a ServiceRegistrar. */
  readonly register: ServiceRegistrar = (server) => {
    const requestType = messageType('envoy.service.discovery.v3.DeltaDiscoveryRequest');
    const responseType = messageType('envoy.service.discovery.v3.DeltaDiscoveryResponse');
    const definition: grpc.ServiceDefinition = {
      DeltaAggregatedResources: {
        path: DELTA_ADS_METHOD,
        requestStream: true,
        responseStream: true,
        requestSerialize: (request: DeltaDiscoveryRequest) => Buffer.from(requestType.encode(requestType.fromObject(request)).finish()),
        requestDeserialize: (bytes: Buffer) => requestType.toObject(requestType.decode(bytes), TO_OBJECT_OPTIONS) as DeltaDiscoveryRequest,
        // Responses are assembled from pre-encoded resources by the connection: already bytes.
        responseSerialize: (response: Buffer) => response,
        responseDeserialize: (bytes: Buffer) => responseType.toObject(responseType.decode(bytes), TO_OBJECT_OPTIONS),
      },
    };
    server.addService(definition, { DeltaAggregatedResources: (call: grpc.ServerDuplexStream<DeltaDiscoveryRequest, Buffer>) => this.#serve(call) });
  };

  connections(): ConnectionStats[] {
    return [...this.#connections].map((connection) => connection.stats());
  }

  /** Pushes pending changes now (tests, shutdown). */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#firstChangeAt = 0;
    const changes = this.#cache.drainChanges();
    if (changes.size === 0) return;
    for (const connection of this.#connections) for (const [typeUrl, names] of changes) connection.push(typeUrl, names);
  }

  /** Ends every stream (clients reconnect elsewhere or later) and stops scheduling pushes. */
  close(): void {
    clearTimeout(this.#timer);
    this.#unsubscribe();
    for (const call of this.#calls) call.end();
    this.#calls.clear();
    this.#connections.clear();
  }

  #schedulePush(): void {
    const now = Date.now();
    if (this.#firstChangeAt === 0) this.#firstChangeAt = now;
    clearTimeout(this.#timer);
    const delay = Math.max(0, Math.min(this.#debounceMs, this.#firstChangeAt + this.#maxDelayMs - now));
    this.#timer = setTimeout(() => this.flush(), delay);
  }

  #serve(call: grpc.ServerDuplexStream<DeltaDiscoveryRequest, Buffer>): void {
    this.#calls.add(call);
    const queued: DeltaDiscoveryRequest[] = [];
    let connection: XdsConnection | undefined;
    let closed = false;
    const finish = () => {
      if (closed) return;
      closed = true;
      this.#calls.delete(call);
      if (connection) {
        this.#connections.delete(connection);
        this.#logger.info({ connection: connection.id, node: connection.nodeId }, 'xDS client disconnected');
      }
    };
    call.on('data', (request: DeltaDiscoveryRequest) => {
      if (connection) this.#handle(connection, request);
      else queued.push(request);
    });
    call.on('end', () => {
      finish();
      call.end();
    });
    call.on('cancelled', finish);
    call.on('error', finish);
    call.on('close', finish);

    this.#authenticator.authenticate(call.metadata).then(
      (caller) => {
        if (closed) return;
        connection = new XdsConnection({
          id: this.#nextConnectionId++,
          caller,
          cache: this.#cache,
          logger: this.#logger,
          send: (response) => {
            if (!closed) call.write(response);
          },
        });
        this.#connections.add(connection);
        this.#logger.info({ connection: connection.id, caller: caller.identity, peer: call.getPeer() }, 'xDS client connected');
        for (const request of queued.splice(0)) this.#handle(connection, request);
      },
      (error: Error) => {
        const known = error instanceof AuthenticationError || error instanceof AuthorizationError;
        this.#logger.warn({ peer: call.getPeer(), reason: error.message }, 'xDS client refused');
        finish();
        const code = error instanceof AuthorizationError ? grpc.status.PERMISSION_DENIED : known ? grpc.status.UNAUTHENTICATED : grpc.status.UNAVAILABLE;
        call.emit('error', { code, details: known ? error.message : `cannot authenticate the caller: ${error.message}` });
      },
    );
  }

  #handle(connection: XdsConnection, request: DeltaDiscoveryRequest): void {
    try {
      connection.handleRequest(request);
    } catch (error) {
      this.#logger.error({ connection: connection.id, node: connection.nodeId, err: error }, 'xDS request handling failed');
    }
  }
}

/** The serving certificate's lifetime: the CA's workload default (a day), like any other mesh identity. */
/**
 * DNS names on the serving certificate besides its SPIFFE identity: ztunnel (and istio-agent) verify the control
 * plane by the host name they dial, `istiod.istio-system.svc:15012` by default; these are the names istiod's own
 * certificate carries (the current name, the remote-cluster one and the legacy pilot one).
 */
export const DEFAULT_SERVING_DNS_NAMES: readonly string[] = ['istiod.istio-system.svc', 'istiod-remote.istio-system.svc', 'istio-pilot.istio-system.svc'];
export const SERVING_CERT_TTL_MS = 24 * 60 * 60 * 1000;
/** Renew at half-life, as agents do theirs: a failed renewal then has half a lifetime of retries left. */
const SERVING_CERT_RENEW_FRACTION = 0.5;
/** After a failed renewal, try again this soon. */
const SERVING_CERT_RETRY_MS = 60 * 1000;

/**
 * TLS credentials for the control plane's gRPC port, rotated before they expire: a serving certificate signed by
 * the mesh CA for `spiffe://<trust domain>/ns/istio-system/sa/istiod` (agents verify that identity against the
 * mesh root). Rotation swaps the secure context of the running server; open streams keep theirs.
 */
export class ServingCredentials extends grpc.ServerCredentials {
  readonly identity: string;
  readonly #ca: CertificateAuthority;
  readonly #ttlMs: number;
  readonly #dnsNames: readonly string[];
  readonly #onError: (error: Error) => void;
  #timer: NodeJS.Timeout | undefined;
  #closed = false;
  /** Serial number of the certificate now served (for logs and tests). */
  serialNumber = '';

  private constructor(ca: CertificateAuthority, ttlMs: number, dnsNames: readonly string[], onError: (error: Error) => void, context: { cert: string; key: string }, serial: string) {
    super({ requestCert: false }, context);
    this.#ca = ca;
    this.#ttlMs = ttlMs;
    this.#dnsNames = dnsNames;
    this.#onError = onError;
    this.identity = spiffeId(ca.trustDomain, CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_SERVICE_ACCOUNT).uri;
    this.serialNumber = serial;
    this.#schedule(ttlMs * SERVING_CERT_RENEW_FRACTION);
  }

  static async create(ca: CertificateAuthority, options: { ttlMs?: number; dnsNames?: readonly string[]; onError?: (error: Error) => void } = {}): Promise<ServingCredentials> {
    const ttlMs = options.ttlMs ?? SERVING_CERT_TTL_MS;
    const dnsNames = options.dnsNames ?? DEFAULT_SERVING_DNS_NAMES;
    const { context, serial } = await ServingCredentials.#issue(ca, ttlMs, dnsNames);
    return new ServingCredentials(ca, ttlMs, dnsNames, options.onError ?? (() => {}), context, serial);
  }

  static async #issue(ca: CertificateAuthority, ttlMs: number, dnsNames: readonly string[]): Promise<{ context: { cert: string; key: string }; serial: string }> {
    const certificate = await ca.issueServingCertificate(spiffeId(ca.trustDomain, CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_SERVICE_ACCOUNT), dnsNames, ttlMs);
    return {
      context: { cert: certificate.certPem + certificate.chainPem.join(''), key: certificate.keyPem },
      serial: new X509Certificate(certificate.certPem).serialNumber,
    };
  }

  /** Issues a new serving certificate now and serves it to new connections. */
  async rotate(): Promise<void> {
    const { context, serial } = await ServingCredentials.#issue(this.#ca, this.#ttlMs, this.#dnsNames);
    if (this.#closed) return;
    this.serialNumber = serial;
    this.updateSecureContextOptions(context);
  }

  /** Stops renewing (the server is shutting down). */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
  }

  override _equals(other: grpc.ServerCredentials): boolean {
    return other === this;
  }

  #schedule(delayMs: number): void {
    if (this.#closed) return;
    this.#timer = setTimeout(() => {
      this.rotate().then(
        () => this.#schedule(this.#ttlMs * SERVING_CERT_RENEW_FRACTION),
        (error: Error) => {
          this.#onError(error);
          this.#schedule(SERVING_CERT_RETRY_MS);
        },
      );
    }, delayMs);
    this.#timer.unref();
  }
}

/** Server-side pings find agents that vanished without closing (node lost): their streams are then dropped. */
const SERVER_KEEPALIVE_TIME_MS = 30_000;
const SERVER_KEEPALIVE_TIMEOUT_MS = 10_000;

/** Starts one gRPC server with every registrar's services on `address` ("host:port"; port 0 picks one). */
export async function startGrpcServer(options: { address: string; credentials: grpc.ServerCredentials; registrars: ServiceRegistrar[] }): Promise<{ server: grpc.Server; port: number }> {
  const server = new grpc.Server({ 'grpc.keepalive_time_ms': SERVER_KEEPALIVE_TIME_MS, 'grpc.keepalive_timeout_ms': SERVER_KEEPALIVE_TIMEOUT_MS });
  for (const register of options.registrars) register(server);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(options.address, options.credentials, (error, boundPort) => (error ? reject(error) : resolve(boundPort)));
  });
  return { server, port };
}
