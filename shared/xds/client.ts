/**
 * A generic delta xDS client (Envoy's incremental ADS protocol over gRPC + TLS).
 *
 * Owns: the stream to the control plane, subscribing to type URLs, decoding each resource by its type URL,
 * handing additions and removals to the handler registered for that type, ACK/NACK per response (a NACK carries
 * error_detail), the versions it holds (sent back as initial_resource_versions after a reconnect), reconnecting
 * with exponential backoff, and the `synced` promise (first complete response of every type).
 * Must not know about: Istio, workloads, policies: it knows type URLs and bytes. What a resource means is the
 * handler's business; the handler's caller (the mesh state) keeps serving the last good config while the
 * stream is down.
 */
import { X509Certificate } from 'node:crypto';
import { isIP as isIp } from 'node:net';
import type { PeerCertificate } from 'node:tls';
import * as grpc from '@grpc/grpc-js';
import type protobuf from 'protobufjs';
import { spiffeId } from '../identity/spiffe.ts';
import { DELTA_ADS_METHOD, messageType, TO_OBJECT_OPTIONS, typeForUrl, xdsProtoRoot } from './protos.ts';
import type { DeltaDiscoveryRequest, XdsNode } from './types.ts';

/** First reconnect delay; doubled per failed attempt up to the max. Short: a restarting control plane is back soon. */
export const RECONNECT_INITIAL_BACKOFF_MS = 100;
/** Cap on the reconnect delay, so an agent notices a recovered control plane within this long. */
export const RECONNECT_MAX_BACKOFF_MS = 15_000;
/** The gRPC channel's own reconnect backoff ceiling: short, the stream's backoff above paces the retries. */
const CHANNEL_MAX_BACKOFF_MS = 1_000;
/**
 * HTTP/2 pings on an idle stream: a control plane that vanished without closing the connection (node lost,
 * network partition) is noticed within KEEPALIVE_TIME_MS + KEEPALIVE_TIMEOUT_MS, then the client reconnects.
 * 30 s is Istio's agent-side xDS keepalive.
 */
export const KEEPALIVE_TIME_MS = 30_000;
export const KEEPALIVE_TIMEOUT_MS = 10_000;
/** A full push for a large cluster is several MB; gRPC's default 4 MB receive limit is too small. */
export const MAX_RESPONSE_BYTES = 256 * 1024 * 1024;
/** The namespace and service account the control plane's serving certificate names (Istio's istiod). */
export const CONTROL_PLANE_NAMESPACE = 'istio-system';
export const CONTROL_PLANE_SERVICE_ACCOUNT = 'istiod';

/** The SPIFFE identity agents should require of the control plane (`serverIdentity`). */
export function controlPlaneIdentity(trustDomain: string): string {
  return spiffeId(trustDomain, CONTROL_PLANE_NAMESPACE, CONTROL_PLANE_SERVICE_ACCOUNT).uri;
}

/** The SNI sent when the control plane is addressed by IP (Istio's istiod service name). */
const CONTROL_PLANE_SNI = 'istiod.istio-system.svc';
/** gRPC status code INTERNAL: what a NACK's error_detail carries (Envoy does the same). */
const NACK_STATUS_CODE = 13;

export interface XdsResourceUpdate<T = unknown> {
  name: string;
  version: string;
  /** The decoded message, as a plain object (see shared/xds/types.ts for the known shapes). */
  resource: T;
}

export interface XdsRejection {
  name: string;
  reason: string;
}

/**
 * Applies one response's changes for one type URL. Throwing rejects the whole response (NACK; the client keeps
 * the versions it held); returning `{ rejected }` accepts the others and NACKs naming the rejected ones.
 */
export type XdsHandler<T = unknown> = (added: XdsResourceUpdate<T>[], removed: string[]) => void | { rejected?: XdsRejection[] };

export type XdsClientStatus = { state: 'connecting' } | { state: 'connected' } | { state: 'disconnected'; error: string; /** gRPC status code when the server ended the stream (16 = UNAUTHENTICATED). */ code?: number; retryInMs: number };

export interface XdsClientOptions {
  /** `host:port` of the control plane's xDS port. */
  address: string;
  /** PEM of the mesh root the control plane's serving certificate chains to. */
  rootCertPem: string;
  /** Bearer token sent as `authorization` metadata on every stream (a function is called per connect). */
  token?: string | (() => string | Promise<string>);
  /**
   * The identity the server must present: a SPIFFE URI in its certificate's URI SANs (default: any
   * certificate that chains to the root), or a DNS name checked the usual way when it has no scheme.
   */
  serverIdentity?: string;
  node: XdsNode;
  handlers: Record<string, XdsHandler<never>>;
  /** Message types for decoding; defaults to ambit's xDS protos. */
  protoRoot?: protobuf.Root;
  initialBackoffMs?: number;
  maxBackoffMs?: number;
  onStatus?: (status: XdsClientStatus) => void;
  /** Called on each NACK this client sends (for logs and metrics). */
  onNack?: (typeUrl: string, message: string) => void;
}

interface DecodedResponse {
  typeUrl: string;
  nonce: string;
  resources: { name: string; version: string; resource?: { typeUrl: string; value: Uint8Array } | null }[];
  removedResources: string[];
}

/**
 * The TLS server name to send when dialling the control plane at `address`: Istio's istiod service name when the
 * address is an IP (TLS SNI must not be an IP, RFC 6066; the identity is checked by SAN), none otherwise.
 */
export function controlPlaneServerName(address: string): string | undefined {
  return isIp(hostOf(address)) ? CONTROL_PLANE_SNI : undefined;
}

function hostOf(address: string): string {
  const bracketed = /^\[([^\]]+)\]/.exec(address);
  if (bracketed) return bracketed[1]!;
  const colons = address.split(':').length - 1;
  return colons === 1 ? address.slice(0, address.lastIndexOf(':')) : address;
}

/** TLS server check for the control plane: chain to the mesh root (done by TLS), then its SPIFFE URI (or DNS name). */
export function checkServerIdentity(expected: string | undefined): (host: string, certificate: PeerCertificate) => Error | undefined {
  return (_host, certificate) => {
    if (!expected) return undefined; // chain verification against the root already ran
    const sans = (certificate.subjectaltname ?? '').split(', ');
    const wanted = expected.includes('://') ? `URI:${expected}` : `DNS:${expected}`;
    if (sans.includes(wanted)) return undefined;
    let subject = certificate.subjectaltname ?? '';
    try {
      subject = new X509Certificate(certificate.raw).subjectAltName ?? subject;
    } catch {
      // keep the text we have
    }
    return new Error(`the control plane presented ${subject || 'no subjectAltName'}, expected ${expected}`);
  };
}

export class XdsClient {
  /** Resolves once every registered type URL has had its first response applied (readiness). */
  readonly synced: Promise<void>;
  readonly #options: XdsClientOptions;
  readonly #root: protobuf.Root;
  readonly #grpcClient: grpc.Client;
  readonly #requestType = messageType('envoy.service.discovery.v3.DeltaDiscoveryRequest');
  readonly #responseType = messageType('envoy.service.discovery.v3.DeltaDiscoveryResponse');
  /** typeUrl -> (name -> version) of what the handlers accepted: survives reconnects. */
  readonly #versionsHeld = new Map<string, Map<string, string>>();
  readonly #syncedTypes = new Set<string>();
  /** Message types by type URL, looked up once (a lookup walks the namespace tree). */
  readonly #typesByUrl = new Map<string, protobuf.Type | undefined>();
  #resolveSynced!: () => void;
  #stream: grpc.ClientDuplexStream<DeltaDiscoveryRequest, DecodedResponse> | undefined;
  #backoffMs: number;
  #retryTimer: NodeJS.Timeout | undefined;
  #closed = false;
  #started = false;

  constructor(options: XdsClientOptions) {
    this.#options = options;
    this.#root = options.protoRoot ?? xdsProtoRoot();
    this.#backoffMs = options.initialBackoffMs ?? RECONNECT_INITIAL_BACKOFF_MS;
    for (const typeUrl of Object.keys(options.handlers)) this.#versionsHeld.set(typeUrl, new Map());
    this.synced = new Promise((resolve) => {
      this.#resolveSynced = resolve;
    });
    const credentials = grpc.credentials.createSsl(Buffer.from(options.rootCertPem), null, null, { checkServerIdentity: checkServerIdentity(options.serverIdentity) });
    const serverName = controlPlaneServerName(options.address);
    this.#grpcClient = new grpc.Client(options.address, credentials, {
      'grpc.max_receive_message_length': MAX_RESPONSE_BYTES,
      'grpc.keepalive_time_ms': KEEPALIVE_TIME_MS,
      'grpc.keepalive_timeout_ms': KEEPALIVE_TIMEOUT_MS,
      // TLS SNI must not be an IP (RFC 6066): name the control plane instead; identity is checked by SAN above.
      ...(serverName ? { 'grpc.ssl_target_name_override': serverName } : {}),
      // Reconnection pacing is ours (per stream); keep the channel's own backoff short so it does not add to it:
      // with the channel backing off up to our maximum too, a stream attempt made after the control plane came back
      // was failed from the channel's cached error, and the next one waited another full backoff.
      'grpc.initial_reconnect_backoff_ms': Math.min(options.initialBackoffMs ?? RECONNECT_INITIAL_BACKOFF_MS, CHANNEL_MAX_BACKOFF_MS),
      'grpc.max_reconnect_backoff_ms': CHANNEL_MAX_BACKOFF_MS,
    });
  }

  /** Opens the stream (and keeps reopening it until `close`). */
  start(): this {
    if (!this.#started) {
      this.#started = true;
      void this.#connect();
    }
    return this;
  }

  /** The versions this client holds per type URL (what it would send as initial_resource_versions). */
  versions(typeUrl: string): ReadonlyMap<string, string> {
    return this.#versionsHeld.get(typeUrl) ?? new Map();
  }

  isSynced(typeUrl?: string): boolean {
    return typeUrl ? this.#syncedTypes.has(typeUrl) : this.#syncedTypes.size === this.#versionsHeld.size;
  }

  /**
   * While the stream is down and waiting out its backoff, tries again now (and restarts the backoff): the agent
   * calls it when a CNI ADD waits for a pod the last config does not have, which a control plane that just came back
   * would have. No-op while a stream is open.
   */
  reconnectNow(): void {
    if (!this.#started || this.#closed || this.#stream) return;
    clearTimeout(this.#retryTimer);
    this.#backoffMs = this.#options.initialBackoffMs ?? RECONNECT_INITIAL_BACKOFF_MS;
    void this.#connect();
  }

  close(): void {
    this.#closed = true;
    clearTimeout(this.#retryTimer);
    this.#stream?.cancel();
    this.#stream = undefined;
    this.#grpcClient.close();
  }

  async #connect(): Promise<void> {
    if (this.#closed) return;
    this.#options.onStatus?.({ state: 'connecting' });
    const metadata = new grpc.Metadata();
    try {
      const token = typeof this.#options.token === 'function' ? await this.#options.token() : this.#options.token;
      if (token) metadata.set('authorization', `Bearer ${token}`);
    } catch (error) {
      this.#scheduleReconnect(`cannot read the xDS token: ${(error as Error).message}`);
      return;
    }
    if (this.#closed) return;
    const stream = this.#grpcClient.makeBidiStreamRequest<DeltaDiscoveryRequest, DecodedResponse>(
      DELTA_ADS_METHOD,
      (request) => Buffer.from(this.#requestType.encode(this.#requestType.fromObject(request)).finish()),
      // The decoded message is read directly (absent fields read as their defaults): no copy into plain objects.
      (bytes) => this.#responseType.decode(bytes) as unknown as DecodedResponse,
      metadata,
    );
    this.#stream = stream;
    let ended = false;
    const onEnd = (reason: string, code?: number) => {
      if (ended) return;
      ended = true;
      if (this.#stream === stream) this.#stream = undefined;
      this.#scheduleReconnect(reason, code);
    };
    stream.on('data', (response: DecodedResponse) => {
      if (this.#stream !== stream) return;
      this.#backoffMs = this.#options.initialBackoffMs ?? RECONNECT_INITIAL_BACKOFF_MS;
      this.#handleResponse(stream, response);
    });
    stream.on('error', (error: grpc.ServiceError) => onEnd(error.details || error.message, error.code));
    stream.on('end', () => onEnd('the control plane ended the stream'));
    stream.on('metadata', () => this.#options.onStatus?.({ state: 'connected' }));

    let first = true;
    for (const [typeUrl, versions] of this.#versionsHeld) {
      stream.write({
        ...(first ? { node: this.#options.node } : {}),
        typeUrl,
        resourceNamesSubscribe: [],
        initialResourceVersions: Object.fromEntries(versions),
      });
      first = false;
    }
  }

  #scheduleReconnect(reason: string, code?: number): void {
    if (this.#closed) return;
    const jitter = 0.8 + Math.random() * 0.4;
    const delay = Math.round(this.#backoffMs * jitter);
    this.#backoffMs = Math.min(this.#backoffMs * 2, this.#options.maxBackoffMs ?? RECONNECT_MAX_BACKOFF_MS);
    this.#options.onStatus?.(code === undefined ? { state: 'disconnected', error: reason, retryInMs: delay } : { state: 'disconnected', error: reason, code, retryInMs: delay });
    clearTimeout(this.#retryTimer);
    this.#retryTimer = setTimeout(() => void this.#connect(), delay);
  }

  #handleResponse(stream: grpc.ClientDuplexStream<DeltaDiscoveryRequest, DecodedResponse>, response: DecodedResponse): void {
    const typeUrl = response.typeUrl;
    const handler = this.#options.handlers[typeUrl] as XdsHandler<unknown> | undefined;
    const versions = this.#versionsHeld.get(typeUrl);
    if (!handler || !versions) {
      this.#nack(stream, response, `no handler for type ${typeUrl}`);
      return;
    }
    const added: XdsResourceUpdate[] = [];
    const rejected: XdsRejection[] = [];
    for (const entry of response.resources) {
      const any = entry.resource;
      const type = any ? this.#typeFor(any.typeUrl || typeUrl) : undefined;
      if (!any || !type) {
        rejected.push({ name: entry.name, reason: any ? `unknown resource type ${any.typeUrl}` : 'resource body missing' });
        continue;
      }
      try {
        added.push({ name: entry.name, version: entry.version, resource: type.toObject(type.decode(any.value), TO_OBJECT_OPTIONS) });
      } catch (error) {
        rejected.push({ name: entry.name, reason: `cannot decode: ${(error as Error).message}` });
      }
    }
    let result: ReturnType<XdsHandler>;
    try {
      result = handler(added, response.removedResources);
    } catch (error) {
      this.#nack(stream, response, (error as Error).message || String(error));
      return;
    }
    const handlerRejected = (result && result.rejected) || [];
    rejected.push(...handlerRejected);
    const rejectedNames = new Set(rejected.map((entry) => entry.name));
    for (const update of added) if (!rejectedNames.has(update.name)) versions.set(update.name, update.version);
    for (const name of response.removedResources) versions.delete(name);
    if (rejected.length > 0) this.#nack(stream, response, rejected.map((entry) => `${entry.name}: ${entry.reason}`).join('; '));
    else stream.write({ typeUrl, responseNonce: response.nonce });
    this.#markSynced(typeUrl);
  }

  #typeFor(typeUrl: string): protobuf.Type | undefined {
    if (!this.#typesByUrl.has(typeUrl)) this.#typesByUrl.set(typeUrl, typeForUrl(typeUrl, this.#root));
    return this.#typesByUrl.get(typeUrl);
  }

  #nack(stream: grpc.ClientDuplexStream<DeltaDiscoveryRequest, DecodedResponse>, response: DecodedResponse, message: string): void {
    this.#options.onNack?.(response.typeUrl, message);
    stream.write({ typeUrl: response.typeUrl, responseNonce: response.nonce, errorDetail: { code: NACK_STATUS_CODE, message } });
  }

  #markSynced(typeUrl: string): void {
    if (this.#syncedTypes.has(typeUrl)) return;
    this.#syncedTypes.add(typeUrl);
    if (this.#syncedTypes.size === this.#versionsHeld.size) this.#resolveSynced();
  }
}
