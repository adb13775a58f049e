/**
 * Connection reuse to endpoints, as Envoy's upstream HTTP/1.1 connection pool over HBONE: per endpoint (and the
 * Service it was picked for, whose identities the stream checks) a keep-alive `http.Agent` whose connections are
 * HBONE CONNECT streams on the pooled mutual-TLS connection to that endpoint (TCP for an endpoint outside the
 * mesh). A stream whose response ended keep-alive is kept idle and carries the next request to the same endpoint;
 * idle ones close by the backend's `keep-alive: timeout` hint (Node's agent, less one second) or after
 * IDLE_STREAM_TIMEOUT_MS. An endpoint's agent is dropped once its last stream closed.
 *
 * Owns: the agents and the socket face of an HBONE stream. Must not know about: routes, retries, which endpoint
 * is picked.
 */
import http from 'node:http';
import type { Duplex } from 'node:stream';
import type { PickedEndpoint } from '../shared/mesh/load-balance.ts';
import { serviceKey, type Service } from '../shared/mesh/service.ts';
import type { HboneLegStream } from './hbone-leg.ts';
import { Http2StreamDuplex } from './stream-adapter.ts';
import type { Upstreams } from './upstream.ts';

/** Idle streams kept per endpoint: enough for bursts of a few dozen concurrent requests; more are closed. */
const MAX_IDLE_STREAMS_PER_ENDPOINT = 32;
/** An idle stream with no keep-alive hint from the backend closes after this (Node's own server default is 5 s). */
const IDLE_STREAM_TIMEOUT_MS = 15_000;

/** An HBONE stream with the socket methods Node's agent and client call (keep-alive, ref, idle timeout). */
export class HboneStreamSocket extends Http2StreamDuplex {
  timeout = 0;

  constructor(stream: HboneLegStream) {
    super(stream);
    stream.on('timeout', () => this.emit('timeout'));
    // Destroyed with an error after its request was done (no client listener left), it must not take the process
    // down: the agent and the client attach their own listeners while they use it.
    this.on('error', () => undefined);
  }

  setKeepAlive(): this {
    return this;
  }

  setNoDelay(): this {
    return this;
  }

  ref(): this {
    return this;
  }

  unref(): this {
    return this;
  }

  /**
   * As net.Socket's: a callback is added as a 'timeout' listener, and taken off with `setTimeout(0, callback)`,
   * which Node's HTTP client calls when a kept-alive response ends. (Adding it there too left one listener per
   * request on a busy stream: the list grew without bound under load and cost O(n²) when the idle timeout fired.)
   */
  setTimeout(ms: number, callback?: () => void): this {
    this.timeout = ms;
    if (callback && ms === 0) this.removeListener('timeout', callback);
    else if (callback) this.once('timeout', callback);
    if (!this.stream.destroyed) this.stream.setTimeout(ms);
    return this;
  }
}

export class UpstreamConnections {
  readonly #upstreams: Upstreams;
  readonly #agents = new Map<string, http.Agent>();

  constructor(upstreams: Upstreams) {
    this.#upstreams = upstreams;
  }

  /** The keep-alive agent for `picked` (an endpoint of `service`); its connect failures are WaypointErrors (UF). */
  agentFor(service: Service, picked: PickedEndpoint): http.Agent {
    const key = `${serviceKey(service)}|${picked.address}|${picked.targetPort}`;
    let agent = this.#agents.get(key);
    if (agent !== undefined) return agent;
    agent = new http.Agent({ keepAlive: true, maxFreeSockets: MAX_IDLE_STREAMS_PER_ENDPOINT, scheduling: 'lifo', timeout: IDLE_STREAM_TIMEOUT_MS });
    const upstreams = this.#upstreams;
    const created = agent;
    // An endpoint's agent goes once its last stream closed and nothing waits (endpoints come and go).
    const forgetIfUnused = (): void => {
      const busy = [created.sockets, created.freeSockets, created.requests].some((lists) => Object.values(lists).some((list) => (list?.length ?? 0) > 0));
      if (!busy && this.#agents.get(key) === created) {
        this.#agents.delete(key);
        created.destroy();
      }
    };
    // Asynchronous: Node's agent waits for the callback when createConnection returns nothing.
    agent.createConnection = ((_options: unknown, callback: (error: Error | null, socket?: Duplex) => void): undefined => {
      upstreams.connect(service, picked).then(
        (upstream) => {
          const socket = upstream.kind === 'hbone' ? new HboneStreamSocket(upstream.stream) : upstream.socket;
          socket.once('close', () => setImmediate(forgetIfUnused));
          callback(null, socket);
        },
        (error: Error) => {
          callback(error);
          setImmediate(forgetIfUnused);
        },
      );
      return undefined;
    }) as unknown as http.Agent['createConnection'];
    this.#agents.set(key, agent);
    return agent;
  }

  /** Idle and open streams per endpoint, for the config dump. */
  view(): Record<string, { open: number; idle: number }> {
    const result: Record<string, { open: number; idle: number }> = {};
    for (const [key, agent] of this.#agents) {
      const count = (sockets: NodeJS.ReadOnlyDict<unknown[]>): number => Object.values(sockets).reduce((sum, list) => sum + (list?.length ?? 0), 0);
      result[key] = { open: count(agent.sockets), idle: count(agent.freeSockets) };
    }
    return result;
  }

  close(): void {
    for (const agent of this.#agents.values()) agent.destroy();
    this.#agents.clear();
  }
}
