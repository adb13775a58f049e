/**
 * PeerAuthentication: which mTLS mode applies to a workload's port, and the DENY Authorization policies that
 * enforce it through the same path as AuthorizationPolicy (as Istio's control plane does for ztunnel).
 *
 * Precedence, most specific wins: the workload policy (same namespace, selector matches the workload's labels;
 * its `portLevelMtls` entry for the port first), then the namespace policy (no selector), then the mesh policy
 * (root namespace, no selector); UNSET inherits from the next level; nothing set means PERMISSIVE. When two
 * policies compete at one level, the oldest (creationTimestamp, then name) wins, as in Istio.
 *
 * STRICT is enforced as a DENY policy that matches connections without a peer identity: either Istio's one
 * static policy `<root>/istio_converted_static_strict`, or — when a workload policy has port-level exceptions —
 * a per-workload policy `converted_peer_authentication_<name>` (pilot's convertPeerAuthentication).
 *
 * Owns: mode resolution and the conversion. Must not know about: sockets or how plaintext is detected.
 */
import type { PeerAuthenticationObject, MtlsMode } from './crd-schema.ts';
import { DEFAULT_ROOT_NAMESPACE, type Authorization, type Group, type Rules } from './model.ts';
import { selectorMatches } from './scope.ts';

export type EffectiveMtlsMode = 'STRICT' | 'PERMISSIVE' | 'DISABLE';

export interface WorkloadRef {
  namespace: string;
  labels: Readonly<Record<string, string>>;
}

/** Istio's name for the static STRICT policy (underscores: illegal in Kubernetes names, so it cannot collide). */
export const STATIC_STRICT_POLICY_NAME = 'istio_converted_static_strict';
/** Istio's prefix for a PeerAuthentication converted to an Authorization. */
export const CONVERTED_PEER_AUTHENTICATION_PREFIX = 'converted_peer_authentication_';

function modeOf(mtls: { mode?: MtlsMode } | undefined): MtlsMode {
  return mtls?.mode ?? 'UNSET';
}

function hasSelector(policy: PeerAuthenticationObject): boolean {
  const labels = policy.spec?.selector?.matchLabels;
  return labels !== undefined && Object.keys(labels).length > 0;
}

function older(a: PeerAuthenticationObject, b: PeerAuthenticationObject): boolean {
  const at = a.metadata.creationTimestamp ?? '';
  const bt = b.metadata.creationTimestamp ?? '';
  if (at !== bt) return at < bt;
  return `${a.metadata.namespace ?? ''}/${a.metadata.name}` < `${b.metadata.namespace ?? ''}/${b.metadata.name}`;
}

interface Levels {
  mesh: PeerAuthenticationObject | undefined;
  namespace: PeerAuthenticationObject | undefined;
  workload: PeerAuthenticationObject | undefined;
}

/** The mesh, namespace and workload policy that apply to a workload (oldest wins within a level). */
export function peerAuthenticationLevels(workload: WorkloadRef, policies: readonly PeerAuthenticationObject[], rootNamespace: string = DEFAULT_ROOT_NAMESPACE): Levels {
  const levels: Levels = { mesh: undefined, namespace: undefined, workload: undefined };
  const pick = (level: keyof Levels, policy: PeerAuthenticationObject): void => {
    const current = levels[level];
    if (!current || older(policy, current)) levels[level] = policy;
  };
  for (const policy of policies) {
    const namespace = policy.metadata.namespace ?? 'default';
    if (!hasSelector(policy)) {
      if (namespace === rootNamespace) pick('mesh', policy);
      else if (namespace === workload.namespace) pick('namespace', policy);
    } else if (namespace === workload.namespace && namespace !== rootNamespace && selectorMatches(policy.spec?.selector?.matchLabels, workload.labels)) {
      pick('workload', policy);
    }
  }
  return levels;
}

/** The mode a workload policy inherits from the namespace and mesh policies (UNSET inherits; none: PERMISSIVE). */
function inheritedMode(namespacePolicy: PeerAuthenticationObject | undefined, meshPolicy: PeerAuthenticationObject | undefined): EffectiveMtlsMode {
  const namespaceMode = modeOf(namespacePolicy?.spec?.mtls);
  if (namespaceMode !== 'UNSET') return namespaceMode;
  const meshMode = modeOf(meshPolicy?.spec?.mtls);
  return meshMode !== 'UNSET' ? meshMode : 'PERMISSIVE';
}

/** The mTLS mode in force for connections to `port` of the workload. */
export function mtlsModeFor(
  workload: WorkloadRef,
  port: number,
  policies: readonly PeerAuthenticationObject[],
  rootNamespace: string = DEFAULT_ROOT_NAMESPACE,
): EffectiveMtlsMode {
  const levels = peerAuthenticationLevels(workload, policies, rootNamespace);
  let mode: EffectiveMtlsMode = 'PERMISSIVE';
  for (const policy of [levels.mesh, levels.namespace, levels.workload]) {
    const level = modeOf(policy?.spec?.mtls);
    if (level !== 'UNSET') mode = level;
  }
  const portMode = modeOf(levels.workload?.spec?.portLevelMtls?.[String(port)]);
  if (portMode !== 'UNSET') mode = portMode;
  return mode;
}

const NO_IDENTITY: Rules = { matches: [{ notPrincipals: [{ presence: true }] }] };

/** Istio's static STRICT policy: deny any connection without a peer identity. Workloads reference it by key. */
export function staticStrictAuthorization(rootNamespace: string = DEFAULT_ROOT_NAMESPACE): Authorization {
  return {
    name: STATIC_STRICT_POLICY_NAME,
    namespace: rootNamespace,
    scope: 'WORKLOAD_SELECTOR',
    action: 'DENY',
    groups: [{ rules: [structuredClone(NO_IDENTITY)] }],
    dryRun: false,
  };
}

/**
 * pilot's convertPeerAuthentication: a workload policy with port-level modes becomes one DENY Authorization that
 * encodes the exceptions (and, when the effective parent mode is STRICT, the STRICT default). Undefined when the
 * policy needs no policy of its own (mesh or namespace policy, no port-level modes, or all ports agree).
 */
export function convertPeerAuthentication(
  policy: PeerAuthenticationObject,
  namespacePolicy: PeerAuthenticationObject | undefined,
  meshPolicy: PeerAuthenticationObject | undefined,
  rootNamespace: string = DEFAULT_ROOT_NAMESPACE,
): Authorization | undefined {
  const namespace = policy.metadata.namespace ?? 'default';
  const portLevel = policy.spec?.portLevelMtls ?? {};
  if (namespace === rootNamespace || !hasSelector(policy) || Object.keys(portLevel).length === 0) return undefined;
  const mode = modeOf(policy.spec?.mtls);
  // The mode the workload inherits. Istio's converter tests the namespace policy for STRICT without letting an
  // UNSET namespace policy inherit the mesh's mode; ambit resolves the inheritance first, as mtlsModeFor does.
  const parentStrict = inheritedMode(namespacePolicy, meshPolicy) === 'STRICT';
  const rules: Rules[] = [];
  const groups: Group[] = [];
  if (mode === 'STRICT') rules.push(structuredClone(NO_IDENTITY));

  let foundNonStrictPort = false;
  const ports = Object.keys(portLevel).map(Number).sort((a, b) => a - b);
  for (const port of ports) {
    const portMode = modeOf(portLevel[String(port)]);
    if (portMode === 'STRICT') {
      // Already covered when the workload (or, with UNSET, its parent) is STRICT.
      if (mode === 'STRICT' || (mode === 'UNSET' && parentStrict)) continue;
      groups.push({ rules: [{ matches: [{ notPrincipals: [{ presence: true }], destinationPorts: [port] }] }] });
    } else if (portMode === 'PERMISSIVE' || portMode === 'DISABLE') {
      // An exception only matters when the port would otherwise be STRICT.
      if (mode === 'PERMISSIVE' || mode === 'DISABLE' || (mode === 'UNSET' && !parentStrict)) continue;
      foundNonStrictPort = true;
      rules.push({ matches: [{ notDestinationPorts: [port] }] });
    }
  }
  if (mode === 'STRICT' && !foundNonStrictPort) return undefined;
  if (rules.length === 0 && groups.length === 0) return undefined;
  // The parent's STRICT default, merged so the static STRICT policy can be left out for this workload.
  if (mode === 'UNSET' && parentStrict && foundNonStrictPort) rules.push(structuredClone(NO_IDENTITY));
  if (rules.length > 0) groups.push({ rules });
  return {
    name: `${CONVERTED_PEER_AUTHENTICATION_PREFIX}${policy.metadata.name}`,
    namespace,
    scope: 'WORKLOAD_SELECTOR',
    action: 'DENY',
    groups,
    dryRun: false,
    selector: { ...(policy.spec?.selector?.matchLabels ?? {}) },
  };
}

/**
 * The DENY Authorization policies that enforce the PeerAuthentication in force for a workload (pilot's
 * convertedSelectorPeerAuthentications + convertPeerAuthentication): none when plaintext is accepted
 * everywhere, Istio's static STRICT policy when STRICT applies to every port, or the workload's converted
 * policy when ports differ. Add them to the workload's policies in scope and evaluate as usual.
 */
export function peerAuthenticationToAuthorization(
  workload: WorkloadRef,
  policies: readonly PeerAuthenticationObject[],
  rootNamespace: string = DEFAULT_ROOT_NAMESPACE,
): Authorization[] {
  const levels = peerAuthenticationLevels(workload, policies, rootNamespace);
  let strict = levels.mesh !== undefined && modeOf(levels.mesh.spec?.mtls) === 'STRICT';
  if (levels.namespace && modeOf(levels.namespace.spec?.mtls) !== 'UNSET') strict = modeOf(levels.namespace.spec?.mtls) === 'STRICT';
  const out: Authorization[] = [];
  const workloadPolicy = levels.workload;
  if (workloadPolicy) {
    const mode = modeOf(workloadPolicy.spec?.mtls);
    if (mode === 'STRICT') strict = true;
    if (mode === 'PERMISSIVE' || mode === 'DISABLE') strict = false;
    const portModes = Object.values(workloadPolicy.spec?.portLevelMtls ?? {}).map(modeOf);
    if (portModes.length > 0) {
      let referenceConverted = false;
      if (mode === 'STRICT') {
        if (portModes.some((portMode) => portMode === 'PERMISSIVE' || portMode === 'DISABLE')) {
          referenceConverted = true;
          strict = false;
        }
      } else if (mode === 'PERMISSIVE' || mode === 'DISABLE') {
        referenceConverted = portModes.includes('STRICT');
      } else if (strict) {
        // Istio checks PERMISSIVE only here, which leaves a DISABLE port under the static STRICT policy; ambit
        // treats DISABLE like PERMISSIVE so the enforced policy agrees with mtlsModeFor.
        if (portModes.some((portMode) => portMode === 'PERMISSIVE' || portMode === 'DISABLE')) {
          referenceConverted = true;
          strict = false;
        }
      } else {
        referenceConverted = portModes.includes('STRICT');
      }
      if (referenceConverted) {
        const converted = convertPeerAuthentication(workloadPolicy, levels.namespace, levels.mesh, rootNamespace);
        if (converted) out.push(converted);
      }
    }
  }
  if (strict) out.unshift(staticStrictAuthorization(rootNamespace));
  return out;
}
