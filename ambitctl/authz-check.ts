/**
 * `ambitctl authz check <source pod> <destination pod | svc/ns/name | cluster IP> <port>`: would this connection be
 * allowed, and which policy (or the absence of one) decides it, in words. For a Service, at each endpoint the
 * client's agent could send it to (its selector's ready pods, or its EndpointSlices), on the endpoint's target port. With `--cluster-dir` (or AMBIT_CLUSTER_DIR) it reads the
 * same YAML the control plane reads in local mode (Pods, Namespaces, AuthorizationPolicy, PeerAuthentication);
 * without one (Kubernetes) it asks an agent's admin endpoint (`GET /authz/check`, agent/policy/authz-check.ts),
 * which answers from the workloads and policies it enforces: ask the agent on the destination's node.
 *
 * Owns: turning two pods (or a pod and a Service's endpoints) and a port into the connection the destination agent
 * would see (the source's SPIFFE identity when the source is in the mesh, plaintext otherwise), gathering the
 * policies in scope for the destination (PeerAuthentication included), and printing shared/policy's explanation.
 * Exit codes, the same on both paths: 0 allowed, 1 denied, 2 anything else (an unknown pod, a bad argument, no
 * directory or agent to ask), so a script can branch on the decision.
 * Must not know about: how policies match (shared/policy/evaluate.ts decides, exactly as the agent does).
 */
import { readClusterDir, type ClusterSnapshot } from '../shared/k8s/cluster-dir.ts';
import { captureDecision } from '../shared/k8s/enrollment.ts';
import { isIP } from 'node:net';
import { isPod, isService, podNamespace, type K8sObject, type PodObject, type ServiceObject } from '../shared/k8s/objects.ts';
import { podReady } from '../shared/k8s/pod-facts.ts';
import { DEFAULT_TRUST_DOMAIN } from '../shared/identity/index.ts';
import {
  compileAuthorizationPolicy,
  DEFAULT_ROOT_NAMESPACE,
  peerAuthenticationToAuthorization,
  policiesForWorkload,
  validatePolicy,
  type Authorization,
  type PeerAuthenticationObject,
} from '../shared/policy/index.ts';
import {
  decideConnection,
  decideServiceConnection,
  isServiceResult,
  podRef,
  serviceRefOf,
  type AnyAuthzCheckResult,
  type EndpointCandidate,
  type PodView,
} from '../shared/policy/check-result.ts';
import { adminGetJson, AmbitctlError } from './admin-client.ts';
import type { Command, CommandContext } from './command.ts';
import { renderDocument } from './output.ts';
import { authzCheckRequest } from './authz-check-request.ts';
import { podTargetPort } from '../shared/k8s/pod-facts.ts';

const USAGE =
  'ambitctl authz check <source pod> <destination pod | svc/NS/NAME | cluster IP> <port> [--cluster-dir DIR | --admin URL | --node NETNS] [-n NAMESPACE] [-o table|json|yaml]\n' +
  '       ambitctl authz check <source pod> <service> <port> --method M --path P [--header name:value ...] --cluster-dir DIR (a request through a waypoint)';

function podView(snapshot: ClusterSnapshot, text: string, defaultNamespace: string, trustDomain: string, dir: string): { view: PodView; pod: PodObject } {
  const ref = podRef(text, defaultNamespace);
  const pod = snapshot.findPod(ref.namespace, ref.name);
  if (!pod) {
    const known = snapshot.objects.filter(isPod).map((candidate) => `${podNamespace(candidate)}/${candidate.metadata.name}`);
    throw new AmbitctlError('USAGE', `no pod ${ref.namespace}/${ref.name} in the cluster directory ${dir}${known.length ? ` (pods: ${known.slice(0, 10).join(', ')}${known.length > 10 ? ', ...' : ''})` : ''}`);
  }
  return { view: viewOfPod(snapshot, pod, trustDomain), pod };
}

function viewOfPod(snapshot: ClusterSnapshot, pod: PodObject, trustDomain: string): PodView {
  const namespace = podNamespace(pod);
  const decision = captureDecision(pod, snapshot.findNamespace(namespace));
  const serviceAccount = pod.spec?.serviceAccountName || 'default';
  const ip = pod.status?.podIPs?.[0]?.ip ?? pod.status?.podIP ?? '';
  const view: PodView = { namespace, name: pod.metadata.name, ip, serviceAccount, inMesh: decision.capture, captureReason: decision.reason };
  if (decision.capture) view.principal = `spiffe://${trustDomain}/ns/${namespace}/sa/${serviceAccount}`;
  return view;
}

interface CheckRequest {
  source: string;
  destination: string;
  port: number;
  namespace: string;
  rootNamespace: string;
  trustDomain: string;
  dir: string;
}

/** Decides one connection from the cluster directory's objects. */
export function authzCheck(snapshot: ClusterSnapshot, request: CheckRequest): AnyAuthzCheckResult {
  const source = podView(snapshot, request.source, request.namespace, request.trustDomain, request.dir);
  const problems: string[] = [];
  const extra = { problems, decidedBy: `cluster directory ${request.dir}` };
  const policies = collectPolicies(snapshot, request.rootNamespace, problems);
  const service = findService(snapshot, request);
  if (service) return checkService(snapshot, service, source.view, request, policies, extra);
  const destination = podView(snapshot, request.destination, request.namespace, request.trustDomain, request.dir);
  if (!destination.view.inMesh) return decideConnection(source.view, destination.view, request.port, [], extra);
  return decideConnection(source.view, destination.view, request.port, policies.inScopeFor(destination.pod, request.rootNamespace), extra);
}

interface CollectedPolicies {
  inScopeFor(pod: PodObject, rootNamespace: string): Authorization[];
}

/** Every AuthorizationPolicy and PeerAuthentication of the directory, validated and compiled once; problems noted. */
function collectPolicies(snapshot: ClusterSnapshot, rootNamespace: string, problems: string[]): CollectedPolicies {
  const authorizations: Authorization[] = [];
  const peerAuthentications: PeerAuthenticationObject[] = [];
  for (const object of snapshot.objects) {
    if (object.kind !== 'AuthorizationPolicy' && object.kind !== 'PeerAuthentication') continue;
    const name = `${object.kind} ${object.metadata?.namespace ?? 'default'}/${object.metadata?.name ?? '?'}`;
    const validated = validatePolicy(object);
    if (!validated.ok) {
      problems.push(`${validated.error.message.startsWith(object.kind) ? '' : `${name}: `}${validated.error.message} (so it is not in force)`);
      continue;
    }
    if (validated.kind === 'PeerAuthentication') {
      peerAuthentications.push(validated.object);
      continue;
    }
    const compiled = compileAuthorizationPolicy(validated.object, { rootNamespace });
    for (const warning of compiled.warnings) problems.push(`${name}: ${warning}`);
    if (compiled.authorization) authorizations.push(compiled.authorization);
  }
  return {
    inScopeFor(pod, root) {
      const labels = pod.metadata.labels ?? {};
      const namespace = podNamespace(pod);
      return [...peerAuthenticationToAuthorization({ namespace, labels }, peerAuthentications, root), ...policiesForWorkload(labels, namespace, root, authorizations)];
    },
  };
}

const SERVICE_NAME_LABEL = 'kubernetes.io/service-name';

interface EndpointSliceObject extends K8sObject {
  endpoints?: { addresses?: string[]; targetRef?: { kind?: string; name?: string; namespace?: string }; conditions?: { ready?: boolean } }[];
  ports?: { name?: string; port?: number; protocol?: string }[];
}

function clusterIpsOf(service: ServiceObject): string[] {
  const ips = service.spec?.clusterIPs ?? (service.spec?.clusterIP ? [service.spec.clusterIP] : []);
  return ips.filter((ip) => ip && ip !== 'None');
}

/** The Service the destination names (`svc/ns/name` or a cluster IP), undefined when it names a pod. */
function findService(snapshot: ClusterSnapshot, request: CheckRequest): ServiceObject | undefined {
  const services = snapshot.objects.filter(isService);
  const ref = serviceRefOf(request.destination, request.namespace);
  if (ref === undefined) {
    if (isIP(request.destination) === 0) return undefined;
    const byIp = services.find((service) => clusterIpsOf(service).includes(request.destination));
    if (byIp) return byIp;
    throw new AmbitctlError('USAGE', `${request.destination} is the cluster IP of no Service in the cluster directory ${request.dir} (name a pod as namespace/name)`);
  }
  const found = services.find((service) => (service.metadata.namespace || 'default') === ref.namespace && service.metadata.name === ref.name);
  if (found) return found;
  const known = services.map((service) => `svc/${service.metadata.namespace || 'default'}/${service.metadata.name}`).sort();
  throw new AmbitctlError('USAGE', `no Service ${ref.namespace}/${ref.name} in the cluster directory ${request.dir}${known.length ? ` (services: ${known.slice(0, 10).join(', ')}${known.length > 10 ? ', ...' : ''})` : ''}`);
}


/** The endpoints of `service` as the mesh would have them (selector pods, or EndpointSlices), each decided on its target port. */
function checkService(
  snapshot: ClusterSnapshot,
  service: ServiceObject,
  source: PodView,
  request: CheckRequest,
  policies: CollectedPolicies,
  extra: { problems: string[]; decidedBy: string },
): AnyAuthzCheckResult {
  const namespace = service.metadata.namespace || 'default';
  const servicePort = (service.spec?.ports ?? []).find((port) => port.port === request.port);
  const candidates: EndpointCandidate[] = [];
  const forPod = (pod: PodObject, targetPort: number | undefined): void => {
    const view = viewOfPod(snapshot, pod, request.trustDomain);
    candidates.push({ view, targetPort, healthy: podReady(pod), inScope: view.inMesh ? policies.inScopeFor(pod, request.rootNamespace) : [] });
  };
  const selector = service.spec?.selector ?? {};
  if (Object.keys(selector).length > 0) {
    for (const pod of snapshot.objects.filter(isPod)) {
      if (podNamespace(pod) !== namespace || !Object.entries(selector).every(([key, value]) => pod.metadata.labels?.[key] === value)) continue;
      if (pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') continue;
      forPod(pod, servicePort ? podTargetPort(servicePort.targetPort, servicePort.port, pod) : undefined);
    }
  } else {
    for (const slice of snapshot.objects as EndpointSliceObject[]) {
      if (slice.kind !== 'EndpointSlice' || slice.metadata?.labels?.[SERVICE_NAME_LABEL] !== service.metadata.name || (slice.metadata.namespace || 'default') !== namespace) continue;
      const slicePort = servicePort ? slice.ports?.find((port) => (port.name ?? '') === (servicePort.name ?? ''))?.port : undefined;
      for (const endpoint of slice.endpoints ?? []) {
        const ref = endpoint.targetRef;
        const pod = ref?.kind === 'Pod' && ref.name ? snapshot.findPod(ref.namespace || namespace, ref.name) : undefined;
        if (pod) {
          forPod(pod, slicePort);
          continue;
        }
        const ip = endpoint.addresses?.[0] ?? '';
        const view: PodView = { namespace, name: slice.metadata?.name ?? '', ip, serviceAccount: '', inMesh: false, captureReason: 'an EndpointSlice address, no pod' };
        candidates.push({ view, targetPort: slicePort, healthy: endpoint.conditions?.ready !== false, inScope: [] });
      }
    }
  }
  const view = { namespace, name: service.metadata.name, hostname: `${service.metadata.name}.${namespace}.svc.cluster.local`, vips: clusterIpsOf(service) };
  return decideServiceConnection(source, view, request.port, candidates, extra);
}

/** How a pod outside the mesh is shown, here and by `ambitctl workloads`: it has no identity on the wire. */
export const PLAINTEXT_IDENTITY = 'none (plaintext)';

function describe(pod: PodView): string {
  const identity = pod.principal ? `identity ${pod.principal}` : `identity ${PLAINTEXT_IDENTITY}: not in the mesh (${pod.captureReason})`;
  return `${pod.namespace}/${pod.name} (${pod.ip || 'no IP yet'}, ${identity})`;
}

export const authzCommand: Command = {
  name: 'authz',
  usage: USAGE,
  summary: 'authz check SRC DST PORT [--method --path --header]: would the connection (or HTTP request) be allowed, and which policy decides (exit 0/1/2)',
  failureExitCode: 2,
  async run(context: CommandContext) {
    const [verb, source, destination, portText, ...extra] = context.args;
    if (verb !== 'check' || source === undefined || destination === undefined || portText === undefined || extra.length > 0) {
      throw new AmbitctlError('USAGE', `usage: ${USAGE}`);
    }
    const port = Number(portText);
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new AmbitctlError('USAGE', `port ${portText} is not a port number (1-65535)`);
    const dir = context.clusterDir;
    const namespace = context.namespace ?? 'default';
    if (context.httpRequest) {
      const { method, path, headers } = context.httpRequest;
      if (!dir) throw new AmbitctlError('USAGE', 'an HTTP request check (--method/--path/--header) decides from the cluster directory: pass --cluster-dir DIR');
      if (path !== undefined && !path.startsWith('/')) throw new AmbitctlError('USAGE', `--path ${path} must start with /`);
      let snapshot: ClusterSnapshot;
      try {
        snapshot = await readClusterDir(dir);
      } catch (error) {
        throw new AmbitctlError('USAGE', `cannot read the cluster directory ${dir}: ${(error as Error).message}`);
      }
      const checked = authzCheckRequest(snapshot, {
        source, service: destination, port, namespace,
        rootNamespace: context.rootNamespace ?? DEFAULT_ROOT_NAMESPACE,
        trustDomain: context.trustDomain ?? DEFAULT_TRUST_DOMAIN,
        http: { method: method ?? 'GET', path: path ?? '/', headers },
      });
      if (context.output !== 'table') context.write(renderDocument(checked, context.output));
      else context.write([...checked.lines, ...(checked.problems.length ? ['', 'policies not (fully) in force:', ...checked.problems.map((problem) => `  ${problem}`)] : []), ''].join('\n'));
      return checked.allowed ? 0 : 1;
    }
    let result: AnyAuthzCheckResult;
    if (dir) {
      let snapshot: ClusterSnapshot;
      try {
        snapshot = await readClusterDir(dir);
      } catch (error) {
        throw new AmbitctlError('USAGE', `cannot read the cluster directory ${dir}: ${(error as Error).message}`);
      }
      result = authzCheck(snapshot, {
        source,
        destination,
        port,
        namespace,
        rootNamespace: context.rootNamespace ?? DEFAULT_ROOT_NAMESPACE,
        trustDomain: context.trustDomain ?? DEFAULT_TRUST_DOMAIN,
        dir,
      });
    } else {
      // No directory (Kubernetes): the agent that enforces decides, from the workloads and policies it holds.
      const query = new URLSearchParams({ source, destination, port: String(port), namespace });
      try {
        result = await adminGetJson<AnyAuthzCheckResult>(context.target, `/authz/check?${query}`);
      } catch (error) {
        if (error instanceof AmbitctlError && error.code === 'ADMIN_UNREACHABLE') {
          throw new AmbitctlError('ADMIN_UNREACHABLE', `${error.message} Ask the agent on the destination's node (--admin URL, --node NETNS), or pass --cluster-dir DIR to decide from the YAML directory the control plane reads.`);
        }
        // 404: a pod the agent does not know; 400: a query it refused. Both are the caller's to fix, as with a directory.
        if (error instanceof AmbitctlError && (error.status === 404 || error.status === 400)) throw new AmbitctlError('USAGE', error.message);
        throw error;
      }
    }
    const exitCode = result.allowed ? 0 : 1;
    if (context.output !== 'table') {
      context.write(renderDocument(result, context.output));
      return exitCode;
    }
    const to = isServiceResult(result)
      ? `to   Service ${result.service.namespace}/${result.service.name} (${result.service.vips.join(', ') || 'headless'}) port ${result.port}`
      : `to   ${describe(result.destination)} port ${result.port}`;
    const out = [
      ...(result.decidedBy ? [`decided by the ${result.decidedBy}`] : []),
      `from ${describe(result.source)}`,
      to,
      '',
      ...result.lines,
      ...(result.problems.length ? ['', 'policies not (fully) in force:', ...result.problems.map((problem) => `  ${problem}`)] : []),
      '',
    ];
    context.write(out.join('\n'));
    return exitCode;
  },
};
