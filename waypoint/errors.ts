/**
 * What can go wrong at the waypoint for one request or stream, with a code, the HTTP status the client gets and
 * Envoy's response flag (as Istio's waypoint reports them in metrics and logs).
 *
 * Owns: the catalogue. Must not know about: where the errors are raised.
 */
export type WaypointErrorCode =
  /** The `:authority` is no Service VIP this waypoint knows. */
  | 'WAYPOINT_UNKNOWN_DESTINATION'
  /** The service has no endpoint that can take it (NoHealthyUpstream, flag UH). */
  | 'WAYPOINT_NO_HEALTHY_UPSTREAM'
  /** The endpoint could not be reached (flag UF). */
  | 'WAYPOINT_UPSTREAM_CONNECT_FAILED'
  /** No route of the service matches the request (flag NR). */
  | 'WAYPOINT_NO_ROUTE'
  /** A try to an endpoint outlasted the route's timeouts.backendRequest (504, flag UT). */
  | 'WAYPOINT_BACKEND_TIMEOUT'
  /** The whole request outlasted the route's timeouts.request (504, flag UT). */
  | 'WAYPOINT_REQUEST_TIMEOUT'
  /** The endpoint's connection failed after the request was sent, before a response (503, flag UC). */
  | 'WAYPOINT_UPSTREAM_RESET'
  /** The matched route has no usable backend (every backendRef invalid, or weights 0): 500, as the Gateway API says (flag NC, Envoy's "no cluster"). */
  | 'WAYPOINT_NO_BACKEND'
  /** A DestinationRule connectionPool limit is full (Envoy's upstream overflow, flag UO). */
  | 'WAYPOINT_UPSTREAM_OVERFLOW'
  /** A VirtualService destination names a subset no DestinationRule of the Service defines (Envoy's cluster not found: 503, flag NC). */
  | 'WAYPOINT_UNKNOWN_SUBSET';

const STATUS: Record<WaypointErrorCode, number> = {
  WAYPOINT_UNKNOWN_DESTINATION: 503,
  WAYPOINT_NO_HEALTHY_UPSTREAM: 503,
  WAYPOINT_UPSTREAM_CONNECT_FAILED: 503,
  WAYPOINT_NO_ROUTE: 404,
  WAYPOINT_UPSTREAM_OVERFLOW: 503,
  WAYPOINT_BACKEND_TIMEOUT: 504,
  WAYPOINT_REQUEST_TIMEOUT: 504,
  WAYPOINT_UPSTREAM_RESET: 503,
  WAYPOINT_NO_BACKEND: 500,
  WAYPOINT_UNKNOWN_SUBSET: 503,
};
const FLAGS: Record<WaypointErrorCode, string> = {
  WAYPOINT_UNKNOWN_DESTINATION: 'NR',
  WAYPOINT_NO_HEALTHY_UPSTREAM: 'UH',
  WAYPOINT_UPSTREAM_CONNECT_FAILED: 'UF',
  WAYPOINT_NO_ROUTE: 'NR',
  WAYPOINT_UPSTREAM_OVERFLOW: 'UO',
  WAYPOINT_BACKEND_TIMEOUT: 'UT',
  WAYPOINT_REQUEST_TIMEOUT: 'UT',
  WAYPOINT_UPSTREAM_RESET: 'UC',
  WAYPOINT_NO_BACKEND: 'NC',
  WAYPOINT_UNKNOWN_SUBSET: 'NC',
};

export class WaypointError extends Error {
  readonly code: WaypointErrorCode;
  readonly status: number;
  readonly responseFlags: string;
  constructor(code: WaypointErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'WaypointError';
    this.code = code;
    this.status = STATUS[code];
    this.responseFlags = FLAGS[code];
  }
}
