/**
 * The waypoint's settings, from its environment (the local runtime and, later, the Kubernetes Deployment set them).
 *
 * Owns: names, defaults (with why) and validation of every setting.
 * Must not know about: what the settings are used for.
 */
import { DEFAULT_TRUST_DOMAIN } from '../shared/identity/index.ts';
import { JWKS_REFRESH_MS } from './jwt/jwks-source.ts';

/** Istio's waypoint ports: HBONE in, Prometheus metrics, readiness. */
export const WAYPOINT_HBONE_PORT = 15008;
export const WAYPOINT_METRICS_PORT = 15020;
export const WAYPOINT_READINESS_PORT = 15021;
/** Envoy's admin port, on loopback: `/config_dump`. */
export const WAYPOINT_ADMIN_PORT = 15000;
/** Logged once the certificate, the first xDS sync and the HBONE listener are in place (the runtime waits for it). */
export const WAYPOINT_READY_MESSAGE = 'waypoint ready';
/** Open streams get this long to finish on SIGTERM (as the agent's drain: clients retry elsewhere after GOAWAY). */
export const WAYPOINT_DRAIN_MS = 5_000;

/**
 * Node's compile cache in the waypoint's container (NODE_COMPILE_CACHE; the Deployment's /tmp is an emptyDir): a
 * waypoint started after the first neither strips its TypeScript again nor loads the type stripper (amaro's
 * WebAssembly, whose memory is never given back), as agents run (runtime/local-mesh.ts, deploy/agent.ts).
 */
export const WAYPOINT_COMPILE_CACHE_DIR = '/tmp/node-compile-cache';

/**
 * V8 flags for the waypoint process, set where it is started (runtime/waypoint.ts, the Deployment the control plane
 * renders) as NODE_OPTIONS: V8's young generation limited to 4 MiB semi-spaces (default 16 MiB, which load grows it
 * to and keeps until the heap release). Profiled in the waypoint suite (BENCHMARKS.md), the garbage collector's share
 * of the waypoint's busy time: 18.1 % with 1 MiB, 11.6 % with 4 MiB, 11.1 % with 16 MiB; 4 MiB keeps almost all of
 * the CPU and caps what a burst can leave in the nursery.
 */
export const WAYPOINT_NODE_OPTIONS = '--max-semi-space-size=4';
/**
 * glibc's malloc for the waypoint (GLIBC_TUNABLES): at most 2 arenas. Each thread that allocates (V8's GC and
 * compiler threads, libuv's pool) otherwise gets an arena of its own whose freed memory stays resident.
 */
export const WAYPOINT_GLIBC_TUNABLES = 'glibc.malloc.arena_max=2';

/**
 * Growth of the V8 heap (committed) since the last memory-reducing GC after which an idle waypoint runs another
 * (shared/memory/heap-release.ts): half the agent's 16 MiB, as the waypoint's heap is about 20 MB once released.
 */
export const WAYPOINT_HEAP_RELEASE_GROWTH_BYTES = 8 * 1024 * 1024;
/**
 * The waypoint's memory-reducing GC waits for a loop busy under 1 % of the check's interval, not the agent's 5 %:
 * the GC stops the loop for tens to hundreds of milliseconds (lastGcMs in config_dump), and a waypoint serving
 * 100 HTTP/1.1 requests/s is about 4 % busy (390 ms of CPU per 1,000 requests), so at 5 % the pause could land on
 * a low-rate run's requests, never on a high-rate one's. Idle (no traffic) is well under 1 %.
 */
export const WAYPOINT_HEAP_RELEASE_QUIET_UTILIZATION = 0.01;
/**
 * ...and, when the loop never gets that quiet after a burst, once it was busy under 5 % (the agent's quiet) for 3
 * checks in a row (30 s): a waypoint left with a trickle of requests, or with its admin endpoint polled, otherwise
 * kept the burst's heap for good (an idle waypoint whose config_dump a test read every few hundred ms was 0.4-0.7 %
 * busy, and a busy neighbour on the 2 cores pushes that over 1 %: a clean-clone CI saw no release in 60 s). The
 * pause then lands once per burst on a low-rate request, the price of giving the memory back.
 */
export const WAYPOINT_HEAP_RELEASE_CALM_UTILIZATION = 0.05;
export const WAYPOINT_HEAP_RELEASE_CALM_CHECKS = 3;

/**
 * Which HTTP/2 layer carries both HBONE legs (AMBIT_WAYPOINT_HBONE): `own` (shared/hbone/h2/: frames parsed and
 * written in JS straight on the TLS sockets, no node:http2 session or stream objects; the default) or `node`
 * (node:http2: HboneServer terminates the clients' streams, HboneClientPool opens the endpoints'; still selectable).
 * waypoint/hbone-leg.ts is what the rest of the waypoint sees of either. The agents' AMBIT_HBONE_IMPL does not
 * decide it. `own` measured cheaper (five A/B pairs of the HTTP/1.1 bench, --quick, load 12-25, session s7:
 * waypoint CPU per 1,000 requests median 450 ms against 610 ms, ratio to haproxy's 2.29x against 2.82x). It waited
 * for one failure of waypoint-rude-peers on it (no memory given back within 60 s after a flood round), which was the
 * heap release's 1 % quiet threshold against the test's own config_dump polling on a busy machine (the same failure
 * hit the node legs; fixed by the calm fallback above); session s8 ran that test 5 times and every other waypoint
 * net file once on own, all green (BENCHMARKS.md, "The gRPC path on own legs (session s8)").
 */
export type WaypointHboneLayer = 'own' | 'node';
export const DEFAULT_WAYPOINT_HBONE: WaypointHboneLayer = 'own';

/**
 * Which HTTP/2 implementation carries the waypoint's h2c and gRPC requests to endpoints, inside the upstream HBONE
 * stream (AMBIT_WAYPOINT_H2_UPSTREAM): `own` (waypoint/h2-own-upstream.ts: shared/hbone/h2/'s H2Connection run
 * straight on the stream's chunks; the default) or `node` (h2-upstream.ts: a node:http2 client session over a Duplex
 * adapter and a JSStreamSocket, nghttp2 nested in the HBONE stream; still selectable). `own` measured cheaper
 * (session s5: 508 against 648 ms of waypoint CPU per 1,000 gRPC calls in the runs that kept up; the nested codec
 * alone 19-43 against 94-163 ms; session s8's A/B on own legs in BENCHMARKS.md, "The gRPC path on own legs"). It
 * waited for one failure of waypoint-rude-peers's flood memory test (live heap +5.7 MB in round 4, at load 20), the
 * heap release's quiet threshold as for the legs; session s8 ran that test 4 times on it after that fix, green.
 */
export type WaypointH2UpstreamLayer = 'own' | 'node';
export const DEFAULT_WAYPOINT_H2_UPSTREAM: WaypointH2UpstreamLayer = 'own';

/**
 * Which HTTP/2 implementation serves the clients' h2c and gRPC requests, inside the terminated HBONE stream
 * (AMBIT_WAYPOINT_H2_DOWNSTREAM): `own` (waypoint/h2-own-downstream.ts: the own layer's server role straight on the
 * stream's chunks) or `node` (node:http2's server over a Duplex adapter and a JSStreamSocket, nghttp2 nested in the
 * HBONE stream); the own one is the default. Session s6 kept it opt-in after one run of waypoint-rude-peers failed 4
 * of 6 with it (29 of a 1,000-request flood answered 503, a backend killed mid-answer seen as a clean end; not
 * reproduced since), and its rapid-reset budget was the layer's looser one for pooled HBONE (10,000 then 1,000/s),
 * now nghttp2's 1,000 then 33/s (h2-proxy.ts; unit test waypoint-h2-own-downstream). Session s8: waypoint-rude-peers
 * green on it 3 times of 3, waypoint-grpc, -h2-features, -http-protocols, -authz green, and the gRPC A/B in
 * BENCHMARKS.md ("The gRPC path on own legs (session s8)").
 */
export type WaypointH2DownstreamLayer = 'own' | 'node';
export const DEFAULT_WAYPOINT_H2_DOWNSTREAM: WaypointH2DownstreamLayer = 'own';

export class WaypointConfigError extends Error {
  readonly code = 'WAYPOINT_BAD_CONFIG';
  constructor(message: string) {
    super(message);
    this.name = 'WaypointConfigError';
  }
}

export interface WaypointConfig {
  /** The Gateway this instance serves (`<namespace>/<name>`). */
  gatewayName: string;
  namespace: string;
  /** Its service account: the identity it presents to clients and to endpoints. */
  serviceAccount: string;
  /** Its pod's name and node (load balancing by locality starts from its own workload). */
  podName: string;
  nodeName: string;
  trustDomain: string;
  /** `host:port` of the control plane's xDS and CA port (15012). */
  xdsAddress: string;
  rootCertFile: string;
  tokenFile: string;
  /** Address the HBONE, metrics and readiness listeners bind ('::' by default: both families). */
  listenHost: string;
  logLevel: string;
  /**
   * Istio's numTrustedProxies: how many proxies in front of the clients append to X-Forwarded-For, so `remote.ip`
   * and remoteIpBlocks see the client (0, the default: the peer address; a client cannot forge it).
   */
  numTrustedProxies: number;
  /** How often a jwksUri is fetched again (Istio's 20 minutes by default). */
  jwksRefreshMs: number;
  /** The HTTP/2 layer of both HBONE legs (AMBIT_WAYPOINT_HBONE). */
  hbone: WaypointHboneLayer;
  /** The HTTP/2 implementation of h2c/gRPC requests to endpoints (AMBIT_WAYPOINT_H2_UPSTREAM). */
  h2Upstream: WaypointH2UpstreamLayer;
  /** The HTTP/2 implementation serving the clients' h2c/gRPC requests (AMBIT_WAYPOINT_H2_DOWNSTREAM). */
  h2Downstream: WaypointH2DownstreamLayer;
  /** AMBIT_WAYPOINT_V8_FLAGS: V8 flags set at start (`v8.setFlagsFromString`), those NODE_OPTIONS refuses; A/B runs only. */
  v8Flags: string;
}

function required(env: NodeJS.ProcessEnv, name: string): string {
  const value = env[name]?.trim();
  if (!value) throw new WaypointConfigError(`${name} is not set`);
  return value;
}

function nonNegativeInteger(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const text = env[name]?.trim();
  if (!text) return fallback;
  const value = Number(text);
  if (!Number.isInteger(value) || value < 0) throw new WaypointConfigError(`${name} must be a non-negative integer (got ${JSON.stringify(text)})`);
  return value;
}

/** An `own` / `node` switch (AMBIT_WAYPOINT_HBONE, AMBIT_WAYPOINT_H2_UPSTREAM, AMBIT_WAYPOINT_H2_DOWNSTREAM): `fallback` when unset. */
function ownOrNode(env: NodeJS.ProcessEnv, name: string, fallback: 'own' | 'node'): 'own' | 'node' {
  const text = env[name]?.trim();
  if (!text) return fallback;
  if (text === 'own' || text === 'node') return text;
  throw new WaypointConfigError(`${name} must be "own" (ambit's HTTP/2 layer) or "node" (node:http2) (got ${JSON.stringify(text)})`);
}

export function configFromEnv(env: NodeJS.ProcessEnv = process.env): WaypointConfig {
  const namespace = required(env, 'AMBIT_WAYPOINT_NAMESPACE');
  const gateway = required(env, 'AMBIT_WAYPOINT_NAME');
  return {
    gatewayName: `${namespace}/${gateway}`,
    namespace,
    // Istio's deployment controller runs a waypoint under a service account named after its Gateway.
    serviceAccount: env.AMBIT_WAYPOINT_SERVICE_ACCOUNT?.trim() || gateway,
    podName: env.AMBIT_POD_NAME?.trim() || gateway,
    nodeName: required(env, 'AMBIT_NODE_NAME'),
    trustDomain: env.AMBIT_TRUST_DOMAIN?.trim() || DEFAULT_TRUST_DOMAIN,
    xdsAddress: required(env, 'AMBIT_XDS_ADDRESS'),
    rootCertFile: required(env, 'AMBIT_ROOT_CERT_FILE'),
    tokenFile: required(env, 'AMBIT_TOKEN_FILE'),
    listenHost: env.AMBIT_WAYPOINT_LISTEN_HOST?.trim() || '::',
    logLevel: env.AMBIT_LOG_LEVEL?.trim() || 'info',
    numTrustedProxies: nonNegativeInteger(env, 'AMBIT_WAYPOINT_NUM_TRUSTED_PROXIES', 0),
    jwksRefreshMs: nonNegativeInteger(env, 'AMBIT_WAYPOINT_JWKS_REFRESH_MS', JWKS_REFRESH_MS) || JWKS_REFRESH_MS,
    hbone: ownOrNode(env, 'AMBIT_WAYPOINT_HBONE', DEFAULT_WAYPOINT_HBONE),
    h2Upstream: ownOrNode(env, 'AMBIT_WAYPOINT_H2_UPSTREAM', DEFAULT_WAYPOINT_H2_UPSTREAM),
    h2Downstream: ownOrNode(env, 'AMBIT_WAYPOINT_H2_DOWNSTREAM', DEFAULT_WAYPOINT_H2_DOWNSTREAM),
    v8Flags: env.AMBIT_WAYPOINT_V8_FLAGS?.trim() ?? '',
  };
}
