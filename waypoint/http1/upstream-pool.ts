/**
 * The lean path's connection reuse to endpoints, as Envoy's upstream HTTP/1.1 pool over HBONE (and as the agent-based
 * pool of upstream-connections.ts did it): per endpoint (and the Service it was picked for, whose identities the
 * stream checks) a LIFO list of idle kept-alive connections (upstream-stream.ts), at most
 * MAX_IDLE_STREAMS_PER_ENDPOINT; an idle one closes after IDLE_STREAM_TIMEOUT_MS or the endpoint's
 * `keep-alive: timeout` hint less one second, checked by one sweep a second rather than a timer per request.
 *
 * Owns: the idle lists and the open counts. Must not know about: routes, retries, HTTP framing.
 */
import type { PickedEndpoint } from '../../shared/mesh/load-balance.ts';
import type { Service } from '../../shared/mesh/service.ts';
import { cachedServiceKey } from '../service-keys.ts';
import type { Upstreams } from '../upstream.ts';
import { DuplexTransport } from './duplex-transport.ts';
import { H2StreamTransport } from './h2-stream-transport.ts';
import { UpstreamHttp1Stream } from './upstream-stream.ts';

/** Idle connections kept per endpoint: enough for bursts of a few dozen concurrent requests; more are closed. */
export const MAX_IDLE_STREAMS_PER_ENDPOINT = 32;
/** An idle connection with no keep-alive hint from the endpoint closes after this (Node's own server default is 5 s). */
export const IDLE_STREAM_TIMEOUT_MS = 15_000;
/** How often idle connections are checked against their timeout. */
const SWEEP_INTERVAL_MS = 1_000;

/**
 * One endpoint's idle connections, last in first out. Its array never shrinks: Array.prototype.pop of the last element
 * gives the array's backing store back (V8 trims a store more than half unused), so the next push allocated a new one
 * (17 slots, about 150 bytes): per request, whenever an endpoint's list went 1 -> 0 -> 1 (session s13's `#release`, 123
 * bytes per request in the sampled heap). Slots above `count` hold undefined (no stream is kept alive by the list).
 */
class IdleList {
  readonly streams: (UpstreamHttp1Stream | undefined)[] = [];
  count = 0;

  push(stream: UpstreamHttp1Stream): void {
    const count = this.count;
    if (count < this.streams.length) this.streams[count] = stream;
    else this.streams.push(stream);
    this.count = count + 1;
  }

  /** The most recently idle connection, out of the list (undefined when none). */
  pop(): UpstreamHttp1Stream | undefined {
    if (this.count === 0) return undefined;
    const count = this.count - 1;
    const stream = this.streams[count];
    this.streams[count] = undefined;
    this.count = count;
    return stream;
  }

  /** Takes `stream` out wherever it is (a connection that closed while idle); false when not in the list. */
  remove(stream: UpstreamHttp1Stream): boolean {
    const streams = this.streams;
    const count = this.count;
    for (let index = 0; index < count; index++) {
      if (streams[index] !== stream) continue;
      for (let at = index + 1; at < count; at++) streams[at - 1] = streams[at];
      streams[count - 1] = undefined;
      this.count = count - 1;
      return true;
    }
    return false;
  }
}

export class UpstreamHttp1Pool {
  readonly #upstreams: Upstreams;
  readonly #idle = new Map<string, IdleList>();
  /** Connections per key carrying a request (or being opened for one). */
  readonly #busy = new Map<string, number>();
  /**
   * Per endpoint object, its pool key as last made, with what it was made of: a request to the endpoint of the one
   * before it finds its key without building (and hashing) a new string (about 0.3 KB of V8 heap per request).
   */
  readonly #keys = new WeakMap<object, { service: Service; serviceKey: string; address: string; targetPort: number; key: string }>();
  #sweeper: NodeJS.Timeout | undefined;

  constructor(upstreams: Upstreams) {
    this.#upstreams = upstreams;
  }

  /** A kept-alive connection to `picked` (an endpoint of `service`) when one is idle, else a new one. Rejects with UF. */
  acquire(service: Service, picked: Readonly<PickedEndpoint>): UpstreamHttp1Stream | Promise<UpstreamHttp1Stream> {
    const key = this.#keyOf(service, picked);
    const idle = this.#idle.get(key);
    const now = performance.now();
    while (idle !== undefined && idle.count > 0) {
      const stream = idle.pop()!;
      if (stream.destroyed) continue;
      if (now - stream.idleSince > stream.idleTimeoutMs) {
        stream.destroy();
        continue;
      }
      stream.inUse = true;
      this.#countBusy(key, 1);
      return stream;
    }
    this.#countBusy(key, 1);
    return this.#upstreams.connectDirect(service, picked).then(
      (upstream) => {
        // The own layer's stream is read and written directly; node:http2's stream or a TCP socket through its events.
        const transport = upstream.kind === 'h2' ? new H2StreamTransport(upstream.stream) : new DuplexTransport(upstream.kind === 'hbone' ? upstream.stream : upstream.socket);
        const stream = new UpstreamHttp1Stream(key, transport, IDLE_STREAM_TIMEOUT_MS, (done) => this.#release(done), (closed) => this.#forget(closed));
        stream.inUse = true;
        return stream;
      },
      (error: unknown) => {
        this.#countBusy(key, -1);
        throw error;
      },
    );
  }

  /** `<service key>|<address>|<port>`: the endpoint's connections for that Service (whose identities they checked). */
  #keyOf(service: Service, picked: Readonly<PickedEndpoint>): string {
    const endpoint = picked.endpoint;
    const serviceKey = cachedServiceKey(service);
    const cached = this.#keys.get(endpoint);
    if (cached !== undefined && cached.service === service && cached.serviceKey === serviceKey && cached.address === picked.address && cached.targetPort === picked.targetPort) return cached.key;
    const key = `${serviceKey}|${picked.address}|${picked.targetPort}`;
    this.#keys.set(endpoint, { service, serviceKey, address: picked.address, targetPort: picked.targetPort, key });
    return key;
  }

  /** Open (busy) and idle connections per endpoint, for the config dump. */
  view(): Record<string, { open: number; idle: number }> {
    const result: Record<string, { open: number; idle: number }> = {};
    for (const [key, count] of this.#busy) if (count > 0) result[key] = { open: count, idle: 0 };
    for (const [key, list] of this.#idle) {
      const entry = (result[key] ??= { open: 0, idle: 0 });
      entry.idle = list.count;
    }
    return result;
  }

  close(): void {
    if (this.#sweeper !== undefined) clearInterval(this.#sweeper);
    this.#sweeper = undefined;
    for (const list of this.#idle.values()) for (let stream = list.pop(); stream !== undefined; stream = list.pop()) stream.destroy();
    this.#idle.clear();
  }

  #release(stream: UpstreamHttp1Stream): void {
    stream.inUse = false;
    this.#countBusy(stream.key, -1);
    let list = this.#idle.get(stream.key);
    if (list === undefined) this.#idle.set(stream.key, (list = new IdleList()));
    if (list.count >= MAX_IDLE_STREAMS_PER_ENDPOINT) {
      stream.destroy();
      return;
    }
    stream.idleSince = performance.now();
    list.push(stream);
    this.#sweeper ??= setInterval(() => this.#sweep(), SWEEP_INTERVAL_MS).unref();
  }

  /** A connection closed: out of its idle list, or out of the busy count if it was carrying a request. */
  #forget(stream: UpstreamHttp1Stream): void {
    const list = this.#idle.get(stream.key);
    if (list !== undefined && list.remove(stream)) {
      if (list.count === 0) {
        this.#idle.delete(stream.key);
        if (this.#busy.get(stream.key) === 0) this.#busy.delete(stream.key);
      }
    }
    if (stream.inUse) {
      stream.inUse = false;
      this.#countBusy(stream.key, -1);
    }
  }

  #countBusy(key: string, change: number): void {
    const count = (this.#busy.get(key) ?? 0) + change;
    // At zero the entry stays while the key has an idle list (the usual request: busy 1, then 0 with its stream idle):
    // deleted and added again per request, an entry leaves a hole in the map's table, which is rebuilt to drop them.
    if (count > 0 || (count === 0 && this.#idle.has(key))) this.#busy.set(key, count);
    else this.#busy.delete(key);
  }

  #sweep(): void {
    const now = performance.now();
    for (const list of this.#idle.values()) {
      // destroy() takes a stream out of its list (#forget): the list is walked from its end.
      for (let index = list.count - 1; index >= 0; index--) {
        const stream = list.streams[index];
        if (stream !== undefined && now - stream.idleSince > stream.idleTimeoutMs) stream.destroy();
      }
    }
    if (this.#idle.size === 0 && this.#sweeper !== undefined) {
      clearInterval(this.#sweeper);
      this.#sweeper = undefined;
    }
  }
}
