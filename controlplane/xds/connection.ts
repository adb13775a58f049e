/**
 * One agent's delta xDS stream on the server side: what it subscribed to, which version of each resource it
 * holds, and the (N)ACKs it sends back.
 *
 * Owns: per-connection subscription state, nonces, ACK/NACK bookkeeping, building each response from the
 * cache's pre-encoded resources (only what differs from what the client holds; deletions as removed_resources).
 * Must not know about: where resources come from, authentication, scheduling of pushes.
 */
import protobuf from 'protobufjs';
import type { DeltaDiscoveryRequest } from '../../shared/xds/types.ts';
import type { AuthenticatedCaller } from './auth.ts';
import type { ResourceCache } from './resource-cache.ts';

export interface XdsLogger {
  debug(object: object, message?: string): void;
  info(object: object, message?: string): void;
  warn(object: object, message?: string): void;
  error(object: object, message?: string): void;
}

/** Names of resources a client subscribed to, and the versions it holds. */
interface TypeSubscription {
  /** Wildcard: every resource of the type (ztunnel's subscription for Address and Authorization). */
  wildcard: boolean;
  names: Set<string>;
  /** name -> version the client holds (from initial_resource_versions, then from what we sent). */
  versionsHeld: Map<string, string>;
}

/** A response in flight, remembered until its (N)ACK so a NACK can be logged with what it rejected. */
interface SentResponse {
  typeUrl: string;
  names: string[];
  removed: number;
}

/** Responses not yet (N)ACKed that we remember; a client that never ACKs must not grow the map forever. */
const MAX_UNACKED_RESPONSES = 64;
/** How many resource names a NACK log line lists before eliding the rest. */
const NACK_LOG_NAMES = 10;

export interface ConnectionStats {
  id: number;
  caller: AuthenticatedCaller;
  nodeId: string;
  types: string[];
  responsesSent: number;
  acks: number;
  nacks: number;
}

export class XdsConnection {
  readonly id: number;
  readonly caller: AuthenticatedCaller;
  nodeId = '';
  responsesSent = 0;
  acks = 0;
  nacks = 0;
  readonly #cache: ResourceCache;
  readonly #logger: XdsLogger;
  readonly #send: (response: Buffer) => void;
  readonly #subscriptions = new Map<string, TypeSubscription>();
  readonly #unacked = new Map<string, SentResponse>();
  #nonceCounter = 0;

  constructor(options: { id: number; caller: AuthenticatedCaller; cache: ResourceCache; logger: XdsLogger; send: (response: Buffer) => void }) {
    this.id = options.id;
    this.caller = options.caller;
    this.#cache = options.cache;
    this.#logger = options.logger;
    this.#send = options.send;
  }

  stats(): ConnectionStats {
    return { id: this.id, caller: this.caller, nodeId: this.nodeId, types: [...this.#subscriptions.keys()], responsesSent: this.responsesSent, acks: this.acks, nacks: this.nacks };
  }

  handleRequest(request: DeltaDiscoveryRequest): void {
    if (!this.nodeId && request.node?.id) this.nodeId = request.node.id;
    const typeUrl = request.typeUrl;
    if (!typeUrl) {
      this.#logger.warn({ connection: this.id, node: this.nodeId }, 'xDS request without a type_url ignored');
      return;
    }
    if (request.responseNonce) this.#handleAck(request);

    const subscribe = request.resourceNamesSubscribe ?? [];
    const unsubscribe = request.resourceNamesUnsubscribe ?? [];
    let subscription = this.#subscriptions.get(typeUrl);
    if (!subscription) {
      // The first request for a type: legacy wildcard when it names nothing; honour what the client holds.
      const wildcard = subscribe.length === 0 || subscribe.includes('*');
      subscription = { wildcard, names: new Set(subscribe.filter((name) => name !== '*')), versionsHeld: new Map(Object.entries(request.initialResourceVersions ?? {})) };
      this.#subscriptions.set(typeUrl, subscription);
      // Always answer the first request, even with nothing, so the client knows it is in sync.
      this.#pushAll(typeUrl, subscription, true);
      return;
    }
    if (subscribe.length === 0 && unsubscribe.length === 0) return;
    for (const name of unsubscribe) {
      if (name === '*') subscription.wildcard = false;
      subscription.names.delete(name);
      if (!subscription.wildcard) subscription.versionsHeld.delete(name);
    }
    const newlySubscribed: string[] = [];
    for (const name of subscribe) {
      if (name === '*') {
        subscription.wildcard = true;
        continue;
      }
      subscription.names.add(name);
      // The protocol requires an answer for every newly subscribed name, even if the client may hold it.
      subscription.versionsHeld.delete(name);
      newlySubscribed.push(name);
    }
    if (subscribe.includes('*')) this.#pushAll(typeUrl, subscription, false);
    else if (newlySubscribed.length > 0) this.push(typeUrl, newlySubscribed);
  }

  /** Sends what changed among `names` for `typeUrl` (nothing when the client already holds it all). */
  push(typeUrl: string, names: Iterable<string>): void {
    const subscription = this.#subscriptions.get(typeUrl);
    if (!subscription) return;
    const framed: Uint8Array[] = [];
    const addedNames: string[] = [];
    const removed: string[] = [];
    for (const name of names) {
      if (!subscription.wildcard && !subscription.names.has(name)) continue;
      const resource = this.#cache.get(typeUrl, name);
      const held = subscription.versionsHeld.get(name);
      if (resource) {
        if (held === resource.version) continue;
        subscription.versionsHeld.set(name, resource.version);
        framed.push(resource.framed);
        addedNames.push(name);
      } else if (held !== undefined) {
        subscription.versionsHeld.delete(name);
        removed.push(name);
      }
    }
    if (framed.length > 0 || removed.length > 0) this.#respond(typeUrl, framed, addedNames, removed);
  }

  #pushAll(typeUrl: string, subscription: TypeSubscription, alwaysRespond: boolean): void {
    const framed: Uint8Array[] = [];
    const addedNames: string[] = [];
    const removed: string[] = [];
    for (const [name, resource] of this.#cache.all(typeUrl)) {
      if (!subscription.wildcard && !subscription.names.has(name)) continue;
      if (subscription.versionsHeld.get(name) === resource.version) continue;
      subscription.versionsHeld.set(name, resource.version);
      framed.push(resource.framed);
      addedNames.push(name);
    }
    for (const name of [...subscription.versionsHeld.keys()]) {
      if (this.#cache.get(typeUrl, name)) continue;
      subscription.versionsHeld.delete(name);
      removed.push(name);
    }
    if (alwaysRespond || framed.length > 0 || removed.length > 0) this.#respond(typeUrl, framed, addedNames, removed);
  }

  #respond(typeUrl: string, framed: Uint8Array[], addedNames: string[], removed: string[]): void {
    const nonce = `${this.id}-${++this.#nonceCounter}`;
    // DeltaDiscoveryResponse: type_url=4, nonce=5, removed_resources=6; resources (field 2) are pre-framed.
    const head = protobuf.Writer.create();
    head.uint32((4 << 3) | 2).string(typeUrl);
    head.uint32((5 << 3) | 2).string(nonce);
    for (const name of removed) head.uint32((6 << 3) | 2).string(name);
    const response = Buffer.concat([head.finish(), ...framed]);
    if (this.#unacked.size >= MAX_UNACKED_RESPONSES) this.#unacked.delete(this.#unacked.keys().next().value!);
    this.#unacked.set(nonce, { typeUrl, names: addedNames, removed: removed.length });
    this.responsesSent++;
    this.#logger.debug({ connection: this.id, node: this.nodeId, typeUrl, nonce, resources: addedNames.length, removed: removed.length }, 'xDS push');
    this.#send(response);
  }

  #handleAck(request: DeltaDiscoveryRequest): void {
    const nonce = request.responseNonce!;
    const sent = this.#unacked.get(nonce);
    this.#unacked.delete(nonce);
    const error = request.errorDetail;
    if (!error || (!error.message && !error.code)) {
      this.acks++;
      return;
    }
    // The client keeps its last good version; we keep believing it holds what we sent, so the same rejected
    // version is not resent in a loop, and the next change to the resource is pushed as usual.
    this.nacks++;
    const names = sent?.names ?? [];
    this.#logger.warn(
      {
        connection: this.id,
        node: this.nodeId,
        caller: this.caller.identity,
        typeUrl: request.typeUrl,
        nonce,
        code: error.code,
        resources: names.slice(0, NACK_LOG_NAMES),
        ...(names.length > NACK_LOG_NAMES ? { moreResources: names.length - NACK_LOG_NAMES } : {}),
      },
      `xDS client rejected (NACK) a ${request.typeUrl} response: ${error.message}`,
    );
  }
}
