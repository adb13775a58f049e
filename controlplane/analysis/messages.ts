/**
 * The catalogue of `ambitctl analyze` findings, in istioctl analyze's form: a code, a level and a name per
 * kind of problem. Codes Istio already has keep Istio's number (IST0101, IST0106), so a user who knows
 * istioctl's reference finds the same meaning; ambit's own findings are AMB0001 and up.
 *
 * Owns: codes, levels, names. Must not know about: how findings are found or shown.
 */

export type AnalysisLevel = 'Error' | 'Warning' | 'Info';

export interface MessageType {
  code: string;
  level: AnalysisLevel;
  name: string;
}

export const MESSAGES = {
  /** A targetRef, parentRef or use-waypoint label names an object that does not exist. */
  ReferencedResourceNotFound: { code: 'IST0101', level: 'Error', name: 'ReferencedResourceNotFound' },
  /** The object breaks its schema or a value rule (the field path is in the message). */
  SchemaValidationError: { code: 'IST0106', level: 'Error', name: 'SchemaValidationError' },
  /** A waypoint Gateway no Namespace, Service or Pod is bound to (istio.io/use-waypoint). */
  UnusedWaypoint: { code: 'AMB0001', level: 'Warning', name: 'UnusedWaypoint' },
  /** A DestinationRule subset no route sends traffic to. */
  UnusedDestinationRuleSubset: { code: 'AMB0002', level: 'Warning', name: 'UnusedDestinationRuleSubset' },
  /** An AuthorizationPolicy with action CUSTOM: ambit has no extension providers. */
  CustomActionNotSupported: { code: 'AMB0003', level: 'Error', name: 'CustomActionNotSupported' },
  /** A policy target or route parent is a Service bound to no waypoint: nothing enforces or serves it. */
  ServiceHasNoWaypoint: { code: 'AMB0004', level: 'Warning', name: 'ServiceHasNoWaypoint' },
  /** A route with no parentRefs, or only parents waypoints do not serve. */
  RouteNotAttached: { code: 'AMB0005', level: 'Warning', name: 'RouteNotAttached' },
  /** Part of a valid policy the control plane ignores (a target of the wrong kind or namespace, no target). */
  PolicyPartIgnored: { code: 'AMB0006', level: 'Warning', name: 'PolicyPartIgnored' },
  /** istio.io/use-waypoint names a Gateway that is not a waypoint (class istio-waypoint). */
  NotAWaypoint: { code: 'AMB0007', level: 'Error', name: 'NotAWaypoint' },
} as const satisfies Record<string, MessageType>;

export const LEVEL_ORDER: Record<AnalysisLevel, number> = { Error: 0, Warning: 1, Info: 2 };
