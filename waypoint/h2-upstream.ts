/**
 * HTTP/2 to endpoints, as Envoy's HTTP/2 connection pool: one cleartext HTTP/2 session per endpoint (over an HBONE
 * stream to it, or TCP when it is not in the mesh), reused by every request the waypoint sends there, a new one
 * only when the open ones are at their concurrent-stream limit or going away. Requests that arrive while the first
 * session is being set up wait for it instead of each dialing its own.
 *
 * Owns: the sessions per endpoint, their stream counts, windows and idle close.
 * Must not know about: routes, downstream streams, which endpoint to pick (upstream.ts picks; this dials through it).
 */
import http2 from 'node:http2';
import type { Duplex } from 'node:stream';
import type { Service } from '../shared/mesh/service.ts';
import { workloadIdentity } from '../shared/mesh/workload.ts';
import { WaypointError } from './errors.ts';
import { Http2StreamDuplex } from './stream-adapter.ts';
import type { UpstreamRequestHead } from './h2-upstream-head.ts';
import type { UpstreamTarget, Upstreams } from './upstream.ts';

/**
 * Flow-control windows of the waypoint's own HTTP/2 sessions (both sides): 1 MiB per stream lets one gRPC stream
 * run at the HBONE tunnel's pace without a WINDOW_UPDATE round trip per 64 KiB, and bounds what one stream can make
 * the waypoint hold; 8 MiB per session bounds the whole session (the HBONE stream under it has 4 MiB).
 */
export const H2_STREAM_WINDOW_BYTES = 1024 * 1024;
export const H2_SESSION_WINDOW_BYTES = 8 * 1024 * 1024;
/** Streams the waypoint puts on one upstream session before it opens another to the same endpoint (as HBONE's pool). */
export const H2_MAX_STREAMS_PER_SESSION = 100;
/** An upstream session with no stream for this long is closed (Envoy's idle_timeout is 1 h; endpoints come and go). */
export const H2_UPSTREAM_IDLE_MS = 60_000;

const { NGHTTP2_CANCEL } = http2.constants;

type Listener = Parameters<http2.ClientHttp2Stream['off']>[1];

/**
 * An upstream request stream as the waypoint drives it (h2-try.ts, h2-request-body.ts, h2-proxy.ts, mirror.ts):
 * node:http2's ClientHttp2Stream, or h2-own-upstream.ts's stream on the own HTTP/2 layer.
 */
export interface UpstreamH2Stream {
  readonly rstCode: number | undefined;
  readonly closed: boolean;
  readonly destroyed: boolean;
  on(event: string, listener: Listener): unknown;
  once(event: string, listener: Listener): unknown;
  off(event: string, listener: Listener): unknown;
  write(chunk: Buffer): boolean;
  end(): unknown;
  pause(): unknown;
  resume(): unknown;
  close(code?: number): void;
  sendTrailers(headers: http2.OutgoingHttpHeaders): void;
}

/** HTTP/2 sessions to endpoints: node:http2's (H2SessionPool) or the own layer's (h2-own-upstream.ts). */
export interface H2Sessions {
  /** Sessions opened so far (tests and config_dump read it to see reuse). */
  readonly sessionsOpened: number;
  /**
   * A request stream to `picked` on a pooled session: `headers` sent, the body to be written by the caller. Throws
   * WAYPOINT_UPSTREAM_CONNECT_FAILED when no session can be had.
   */
  request(service: Service, picked: UpstreamTarget, head: UpstreamRequestHead, endStream: boolean): Promise<UpstreamH2Stream>;
  /**
   * `request` without a promise when a pooled session has room now (the common case); undefined when one has to be
   * opened or waited for (then `request`). Throws as `request` rejects.
   */
  requestNow?(service: Service, picked: UpstreamTarget, head: UpstreamRequestHead, endStream: boolean): UpstreamH2Stream | undefined;
  close(): void;
  view(): object;
}

interface PooledSession {
  session: http2.ClientHttp2Session;
  streams: number;
  key: string;
  /** When the last stream on it closed (performance.now()); its idle close counts from there. */
  idleSince: number;
  /** The idle check, armed while the session has no stream. */
  idleTimer: NodeJS.Timeout | undefined;
}

export class H2SessionPool implements H2Sessions {
  readonly #upstreams: Upstreams;
  readonly #sessionsByEndpoint = new Map<string, PooledSession[]>();
  readonly #connectingByEndpoint = new Map<string, Promise<PooledSession>>();
  /** Sessions opened so far (tests and config_dump read it to see reuse). */
  sessionsOpened = 0;

  constructor(upstreams: Upstreams) {
    this.#upstreams = upstreams;
  }

  /**
   * A request stream to `picked` on a pooled session: `headers` sent, the body to be written by the caller. Throws
   * WAYPOINT_UPSTREAM_CONNECT_FAILED when no session can be had.
   */
  async request(service: Service, picked: UpstreamTarget, head: UpstreamRequestHead, endStream: boolean): Promise<http2.ClientHttp2Stream> {
    if (head.problem !== undefined) throw head.problem;
    const headers = head.object;
    const key = `${picked.address.host}:${picked.address.port}/${workloadIdentity(picked.endpoint).uri}`;
    for (let attempt = 0; ; attempt++) {
      const pooled = await this.#sessionFor(key, service, picked);
      try {
        const stream = pooled.session.request(headers, { endStream, waitForTrailers: !endStream });
        pooled.streams++;
        // In flight for least-request balancing until the stream closes (as the HTTP/1.1 path's tries count).
        this.#upstreams.leastRequest.started(picked.picked.address);
        stream.once('close', () => {
          this.#upstreams.leastRequest.finished(picked.picked.address);
          this.#released(pooled);
        });
        return stream;
      } catch (error) {
        // The session began to close between the pick and the request (GOAWAY): drop it, try a fresh one once.
        this.#forget(pooled);
        if (attempt > 0) throw new WaypointError('WAYPOINT_UPSTREAM_CONNECT_FAILED', `HTTP/2 to ${key} failed: ${(error as Error).message}`, { cause: error });
      }
    }
  }

  close(): void {
    for (const sessions of this.#sessionsByEndpoint.values()) for (const pooled of sessions) pooled.session.close();
    this.#sessionsByEndpoint.clear();
  }

  view(): object {
    return { sessionsOpened: this.sessionsOpened, endpoints: Object.fromEntries([...this.#sessionsByEndpoint].map(([key, sessions]) => [key, sessions.map((pooled) => pooled.streams)])) };
  }

  #sessionFor(key: string, service: Service, picked: UpstreamTarget): Promise<PooledSession> {
    const sessions = this.#sessionsByEndpoint.get(key);
    if (sessions) {
      for (const pooled of sessions) {
        const limit = Math.min(H2_MAX_STREAMS_PER_SESSION, pooled.session.remoteSettings.maxConcurrentStreams ?? H2_MAX_STREAMS_PER_SESSION);
        if (!pooled.session.closed && !pooled.session.destroyed && pooled.streams < limit) return Promise.resolve(pooled);
      }
    }
    const connecting = this.#connectingByEndpoint.get(key);
    if (connecting) return connecting;
    const opened = this.#open(key, service, picked).finally(() => this.#connectingByEndpoint.delete(key));
    this.#connectingByEndpoint.set(key, opened);
    return opened;
  }

  async #open(key: string, service: Service, picked: UpstreamTarget): Promise<PooledSession> {
    const upstream = await this.#upstreams.connect(service, picked.picked);
    const transport: Duplex = upstream.kind === 'hbone' ? new Http2StreamDuplex(upstream.stream) : upstream.socket;
    const session = http2.connect(`http://${picked.address.host}:${picked.address.port}`, {
      createConnection: () => transport as never,
      settings: { initialWindowSize: H2_STREAM_WINDOW_BYTES, enablePush: false },
    });
    this.sessionsOpened++;
    const pooled: PooledSession = { session, streams: 0, key, idleSince: performance.now(), idleTimer: undefined };
    session.on('error', () => {
      // 'close' follows; streams on it see their own errors
    });
    session.once('close', () => {
      if (pooled.idleTimer !== undefined) clearTimeout(pooled.idleTimer);
      this.#forget(pooled);
      if (!transport.destroyed) transport.destroy();
    });
    session.once('goaway', () => this.#forget(pooled));
    // Idle close: a timer armed while the session has no stream, not session.setTimeout, which Node refreshes on
    // every read and write of the session (profiled under gRPC load: a timer refresh per frame).
    this.#armIdle(pooled);
    await new Promise<void>((resolve, reject) => {
      const onError = (error: Error): void => reject(new WaypointError('WAYPOINT_UPSTREAM_CONNECT_FAILED', `HTTP/2 to ${key} failed: ${error.message}`, { cause: error }));
      session.once('error', onError);
      session.once('connect', () => {
        session.off('error', onError);
        if (session.destroyed) {
          reject(new WaypointError('WAYPOINT_UPSTREAM_CONNECT_FAILED', `HTTP/2 to ${key} closed as it opened`));
          return;
        }
        session.setLocalWindowSize(H2_SESSION_WINDOW_BYTES);
        resolve();
      });
    });
    const list = this.#sessionsByEndpoint.get(key) ?? [];
    list.push(pooled);
    this.#sessionsByEndpoint.set(key, list);
    return pooled;
  }

  #released(pooled: PooledSession): void {
    pooled.streams--;
    if (pooled.streams === 0) {
      pooled.idleSince = performance.now();
      this.#armIdle(pooled);
    }
  }

  /** Closes the session once it has had no stream for H2_UPSTREAM_IDLE_MS (one timer at a time, unref'd). */
  #armIdle(pooled: PooledSession, delayMs = H2_UPSTREAM_IDLE_MS): void {
    if (pooled.idleTimer !== undefined) return;
    pooled.idleTimer = setTimeout(() => {
      pooled.idleTimer = undefined;
      if (pooled.streams > 0 || pooled.session.closed || pooled.session.destroyed) return;
      const idleMs = performance.now() - pooled.idleSince;
      if (idleMs >= H2_UPSTREAM_IDLE_MS) pooled.session.close();
      else this.#armIdle(pooled, H2_UPSTREAM_IDLE_MS - idleMs);
    }, delayMs);
    pooled.idleTimer.unref();
  }

  #forget(pooled: PooledSession): void {
    const list = this.#sessionsByEndpoint.get(pooled.key);
    if (!list) return;
    const index = list.indexOf(pooled);
    if (index >= 0) list.splice(index, 1);
    if (list.length === 0) this.#sessionsByEndpoint.delete(pooled.key);
  }
}

/** Cancels an upstream stream whose downstream went away (RST_STREAM CANCEL, as Envoy does). */
export function cancelStream(stream: UpstreamH2Stream): void {
  if (!stream.closed && !stream.destroyed) stream.close(NGHTTP2_CANCEL);
}
