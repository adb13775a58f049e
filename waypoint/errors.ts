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
  /** A DestinationRule connectionPool limit is full (Envoy's upstream overflow, flag UO). */
  | 'WAYPOINT_UPSTREAM_OVERFLOW';

const STATUS: Record<WaypointErrorCode, number> = {
  WAYPOINT_UNKNOWN_DESTINATION: 503,
  WAYPOINT_NO_HEALTHY_UPSTREAM: 503,
  WAYPOINT_UPSTREAM_CONNECT_FAILED: 503,
  WAYPOINT_NO_ROUTE: 404,
  WAYPOINT_UPSTREAM_OVERFLOW: 503,
};
const FLAGS: Record<WaypointErrorCode, string> = {
  WAYPOINT_UNKNOWN_DESTINATION: 'NR',
  WAYPOINT_NO_HEALTHY_UPSTREAM: 'UH',
  WAYPOINT_UPSTREAM_CONNECT_FAILED: 'UF',
  WAYPOINT_NO_ROUTE: 'NR',
  WAYPOINT_UPSTREAM_OVERFLOW: 'UO',
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
