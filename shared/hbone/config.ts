/**
 * The HBONE library's defaults, each with the reason for its value.
 *
 * Owns: every number the client pool and the server fall back to when a caller does not say.
 * Must not know about: sessions, sockets, or who the caller is.
 */

/** Istio's HBONE port: every captured pod accepts mutual-TLS HTTP/2 CONNECT here. */
export const HBONE_PORT = 15008;

/** ALPN protocol for HBONE; a peer that does not pick it is not an HBONE endpoint. */
export const HBONE_ALPN = 'h2';

/**
 * Streams per pooled connection before the pool opens another: ztunnel's value. Enough that a warm pool rarely
 * dials, few enough that one connection's single TLS pipe (one core's worth of crypto on the peer) and one
 * flow-control window are not shared by too many tunnels.
 */
export const DEFAULT_MAX_STREAMS_PER_CONNECTION = 100;

/** A pooled connection with no streams is closed after 5 minutes (ztunnel's pool_unused_release_timeout). */
export const DEFAULT_IDLE_TIMEOUT_MS = 5 * 60 * 1000;

/**
 * A pooled connection beyond the first for its key (opened because the first had DEFAULT_MAX_STREAMS_PER_CONNECTION
 * streams at once: a burst) is closed once it has had no stream for 5 to 10 s (two pool sweeps 5 s apart): the first
 * connection keeps DEFAULT_IDLE_TIMEOUT_MS and serves everything until the next burst, and what a connection
 * storm opened (measured: dozens of connections to one peer) does not hold both agents' memory for 5 minutes.
 * Longer than a typical gap between bursts of a busy client, so a steady load above 100 concurrent streams does not
 * dial and close connections in a loop.
 */
export const DEFAULT_SURPLUS_IDLE_SWEEP_MS = 5 * 1000;

/**
 * How many pending CONNECTs (sent, not yet answered) one pool key may cancel with RST_STREAM CANCEL when their
 * clients leave: CANCELLED_PENDING_BURST at once, then CANCELLED_PENDING_RATE_PER_SECOND. A server counts a stream
 * reset before its answer as a possible rapid-reset flood (ambit's: 200 at once, then 50/s, SERVER_PREMATURE_RESET_*
 * below; nghttp2 and Go servers have like budgets) and closes the whole connection past it, every healthy tunnel on
 * it included. So the client keeps to half of ambit's server budget: a storm of clients giving up (a load tool
 * cutting thousands of waiting connections) cancels the first ones and lets the rest be answered and reset after the
 * 200 (as before: the server did the work, but no budget is spent and no connection lost).
 */
export const CANCELLED_PENDING_BURST = 100;
export const CANCELLED_PENDING_RATE_PER_SECOND = 25;

/** Keepalive PING every 10 s: finds a dead peer (node gone, path cut) long before TCP's own timers would. */
export const DEFAULT_KEEPALIVE_INTERVAL_MS = 10 * 1000;

/** A PING unanswered for 5 s means the connection is dead: loopback or in-cluster RTTs are milliseconds. */
export const DEFAULT_KEEPALIVE_TIMEOUT_MS = 5 * 1000;

/**
 * TCP connect + TLS handshake + the server's SETTINGS within 10 s: long enough for a loaded node, short enough
 * that an application's own connect timeout (often 30 s) still sees our error rather than its own.
 */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10 * 1000;

/** The server's TCP connect to the target; a pod's app should accept instantly, so 10 s only guards black holes. */
export const DEFAULT_TARGET_CONNECT_TIMEOUT_MS = 10 * 1000;

/**
 * HTTP/2 flow-control window per stream: 4 MiB (ztunnel's). Windows decide throughput: the default 64 KiB halves
 * it, because the sender stalls for a WINDOW_UPDATE round trip every 64 KiB.
 */
export const DEFAULT_STREAM_WINDOW_BYTES = 4 * 1024 * 1024;

/** HTTP/2 window per connection: 16 MiB (ztunnel's), so four streams at full speed do not starve each other. */
export const DEFAULT_CONNECTION_WINDOW_BYTES = 16 * 1024 * 1024;

/**
 * Largest DATA frame we accept (SETTINGS_MAX_FRAME_SIZE). 16 KiB is the protocol's floor; a peer that sends larger
 * frames (ztunnel, nghttpx) spends fewer frame headers and callbacks per megabyte. Node's own sender still cuts
 * 16 KiB frames whatever we allow (measured), so between two ambit peers this changes nothing.
 */
export const DEFAULT_MAX_FRAME_SIZE = 64 * 1024;

/**
 * Node's per-session memory cap in MiB (its default is 10). A full 16 MiB connection window of queued data plus
 * header tables for 100 streams must fit, or Node refuses new streams with ENHANCE_YOUR_CALM.
 */
export const DEFAULT_MAX_SESSION_MEMORY_MIB = 64;

/**
 * Bytes a node:http2 session may have queued on its TLS socket before its writes wait for the socket to drain (and
 * the session, as Node makes it, stops reading meanwhile): session-socket.ts. Above what a peer that reads can make
 * us queue (DATA is limited by the peer's connection window, 16 MiB between ambit peers and with ztunnel; frame
 * headers and control frames add well under 1 MiB), so a bulk transfer both ways never waits on it; it stops only a
 * peer that sends and never reads (PING or SETTINGS floods) from growing our memory.
 */
export const SESSION_SOCKET_QUEUE_LIMIT_BYTES = DEFAULT_CONNECTION_WINDOW_BYTES + 4 * 1024 * 1024;

/**
 * A closed node:http2 session's TLS socket is cut when its queue has not moved for this long (session-socket.ts):
 * Node ends the socket only once everything queued was written, which a peer that stopped reading never allows.
 * The keepalive's timeout: as long as an open connection may stay silent.
 */
export const SESSION_SOCKET_END_STALL_MS = DEFAULT_KEEPALIVE_TIMEOUT_MS;

/**
 * nghttp2's "rapid reset" defence (CVE-2023-44487) closes a server session once a client has reset streams
 * faster than `rate` per second after a burst of `burst`; nghttp2's defaults are 1000 and 33/s. A pooled HBONE
 * connection carries every tunnel between two workloads, and each application connection that is reset (or
 * aborted) becomes one RST_STREAM: an app aborting 50 connections/s would lose the whole pool connection, every
 * healthy tunnel on it included. Peers are authenticated mesh workloads; these values allow 1000 resets/s
 * sustained, and still cut off a client resetting faster than a real application would.
 */
export const SERVER_STREAM_RESET_BURST = 10_000;
export const SERVER_STREAM_RESET_RATE_PER_SECOND = 1000;

/**
 * Streams the server lets one client connection keep open at once, advertised in SETTINGS_MAX_CONCURRENT_STREAMS and
 * enforced by nghttp2 (a stream beyond it is refused with RST_STREAM REFUSED_STREAM before the agent sees it): 200,
 * ztunnel's server value (hyper's default). Every open stream can hold one connection to the application, so this
 * is also the most application connections one client connection can make the agent open at once. Our client stops
 * at 100 per connection, so a pooled connection never meets it.
 */
export const DEFAULT_SERVER_MAX_CONCURRENT_STREAMS = 200;

/**
 * The server's keepalive: a PING every 10 s on every client connection, and a PING unanswered for 20 s closes the
 * connection with its tunnels (ztunnel's server PING_INTERVAL and PING_TIMEOUT). It finds a client whose node or
 * process vanished without a FIN (power loss, a cut path, a frozen process), which TCP alone would keep for hours.
 */
export const DEFAULT_SERVER_KEEPALIVE_INTERVAL_MS = 10 * 1000;
export const DEFAULT_SERVER_KEEPALIVE_TIMEOUT_MS = 20 * 1000;

/**
 * A client connection with no stream for 10 minutes is closed with GOAWAY NO_ERROR: twice the client pool's
 * 5-minute idle release, so our own clients always close first and never race a GOAWAY, while a client that
 * connects and never opens a stream (or stopped using a connection without closing it) cannot hold a descriptor
 * and a TLS session for good.
 */
export const DEFAULT_SERVER_IDLE_TIMEOUT_MS = 10 * 60 * 1000;

/**
 * Rapid-reset budget (CVE-2023-44487; Envoy's premature-reset and nghttp2's reset-rate defences): a stream the
 * client resets before the server has answered it cost the server a policy decision and maybe a connection to the
 * application, and gave the client nothing. One client connection may do that 200 times at once, then 50 times a
 * second; beyond that the server sends GOAWAY ENHANCE_YOUR_CALM and closes the connection. A real application
 * aborts a connection while its tunnel is being set up (a few milliseconds) rarely; resets after the 200, however
 * many, do not count.
 */
export const SERVER_PREMATURE_RESET_BURST = 200;
export const SERVER_PREMATURE_RESET_RATE_PER_SECOND = 50;

/**
 * Graceful shutdown: after GOAWAY, open streams get 5 s to finish before they are cut (ztunnel's drain default
 * order of magnitude; Kubernetes' terminationGracePeriodSeconds of 30 s leaves room for the rest of shutdown).
 */
export const DEFAULT_DRAIN_DEADLINE_MS = 5 * 1000;

/**
 * A splice stops reading one side when the other holds this much unsent: 256 KiB, four 64 KiB socket reads.
 * Stopping at Node's 64 KiB high-water mark instead would stop and restart reading on nearly every chunk; the
 * HTTP/2 windows, not this buffer, are what bound the data in flight.
 */
export const SPLICE_BUFFER_BYTES = 256 * 1024;

/**
 * Which HTTP/2 implementation carries HBONE: `own` (shared/hbone/h2/: frames parsed and written in JavaScript
 * straight on the TLS socket, no stream objects per tunnel), the default, or `node` (node:http2, nghttp2 in C++
 * behind Node's stream machinery). Both keep the same contract and pass the same tests. `own` is the default
 * because node:http2 stops reading its socket while one of its own writes is pending, so several tunnels moving
 * bulk both ways between two agents can deadlock (test/net/agent-bulk-tunnels.test.ts), and because the quiet
 * A/B of the mesh suite (BENCHMARKS.md, "The default becomes own") has own ahead on CPU per request, the
 * connection storm and memory; node:http2 is ahead on single-stream throughput. A caller may pin one (the
 * waypoint picks its own with AMBIT_WAYPOINT_HBONE, `own` by default); otherwise AMBIT_HBONE_IMPL decides, so
 * one variable switches an agent, its proxy workers and tests.
 */
export type HboneImplementation = 'own' | 'node';
export const DEFAULT_HBONE_IMPLEMENTATION: HboneImplementation = 'own';

/** AMBIT_HBONE_IMPL (`own` or `node`), DEFAULT_HBONE_IMPLEMENTATION when unset; throws on any other value. */
export function hboneImplementation(env: NodeJS.ProcessEnv = process.env): HboneImplementation {
  const value = env['AMBIT_HBONE_IMPL'];
  if (value === undefined || value === '') return DEFAULT_HBONE_IMPLEMENTATION;
  if (value === 'own' || value === 'node') return value;
  throw new TypeError(`AMBIT_HBONE_IMPL=${JSON.stringify(value)}: expected "own" (ambit's HTTP/2 layer) or "node" (node:http2)`);
}
