/**
 * `ambitctl authz check <source pod> <destination pod> <port>`: would this connection be allowed, and which
 * policy (or the absence of one) decides it, in words. With `--cluster-dir` (or AMBIT_CLUSTER_DIR) it reads the
 * same YAML the control plane reads in local mode (Pods, Namespaces, AuthorizationPolicy, PeerAuthentication);
 * without one (Kubernetes) it asks an agent's admin endpoint (`GET /authz/check`, agent/policy/authz-check.ts),
 * which answers from the workloads and policies it enforces: ask the agent on the destination's node.
 *
 * Owns: turning two pods and a port into the connection the destination agent would see (the source's SPIFFE
 * identity when the source is in the mesh, plaintext otherwise), gathering the policies in scope for the
 * destination (PeerAuthentication included), and printing shared/policy's explanation.
 * Exit codes, the same on both paths: 0 allowed, 1 denied, 2 anything else (an unknown pod, a bad argument, no
 * directory or agent to ask), so a script can branch on the decision.
 * Must not know about: how policies match (shared/policy/evaluate.ts decides, exactly as the agent does).
 */
import { readClusterDir, type ClusterSnapshot } from '../shared/k8s/cluster-dir.ts';
import { captureDecision } from '../shared/k8s/enrollment.ts';
import { isPod, podNamespace, type PodObject } from '../shared/k8s/objects.ts';
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
import { decideConnection, podRef, type AuthzCheckResult, type PodView } from '../shared/policy/check-result.ts';
import { adminGetJson, AmbitctlError } from './admin-client.ts';
import type { Command, CommandContext } from './command.ts';
import { renderDocument } from './output.ts';
import { authzCheckRequest } from './authz-check-request.ts';

const USAGE =
  'ambitctl authz check <source pod> <destination pod> <port> [--cluster-dir DIR | --admin URL | --node NETNS] [-n NAMESPACE] [-o table|json|yaml]\n' +
  '       ambitctl authz check <source pod> <service> <port> --method M --path P [--header name:value ...] --cluster-dir DIR (a request through a waypoint)';

function podView(snapshot: ClusterSnapshot, text: string, defaultNamespace: string, trustDomain: string, dir: string): { view: PodView; pod: PodObject } {
  const ref = podRef(text, defaultNamespace);
  const pod = snapshot.findPod(ref.namespace, ref.name);
  if (!pod) {
    const known = snapshot.objects.filter(isPod).map((candidate) => `${podNamespace(candidate)}/${candidate.metadata.name}`);
    throw new AmbitctlError('USAGE', `no pod ${ref.namespace}/${ref.name} in the cluster directory ${dir}${known.length ? ` (pods: ${known.slice(0, 10).join(', ')}${known.length > 10 ? ', ...' : ''})` : ''}`);
  }
  const namespace = podNamespace(pod);
  const decision = captureDecision(pod, snapshot.findNamespace(namespace));
  const serviceAccount = pod.spec?.serviceAccountName || 'default';
  const ip = pod.status?.podIPs?.[0]?.ip ?? pod.status?.podIP ?? '';
  const view: PodView = { namespace, name: pod.metadata.name, ip, serviceAccount, inMesh: decision.capture, captureReason: decision.reason };
  if (decision.capture) view.principal = `spiffe://${trustDomain}/ns/${namespace}/sa/${serviceAccount}`;
  return { view, pod };
}

/** Decides one connection from the cluster directory's objects. */
export function authzCheck(snapshot: ClusterSnapshot, request: { source: string; destination: string; port: number; namespace: string; rootNamespace: string; trustDomain: string; dir: string }): AuthzCheckResult {
  const source = podView(snapshot, request.source, request.namespace, request.trustDomain, request.dir);
  const destination = podView(snapshot, request.destination, request.namespace, request.trustDomain, request.dir);
  const problems: string[] = [];
  const extra = { problems, decidedBy: `cluster directory ${request.dir}` };
  if (!destination.view.inMesh) return decideConnection(source.view, destination.view, request.port, [], extra);
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
    const compiled = compileAuthorizationPolicy(validated.object, { rootNamespace: request.rootNamespace });
    for (const warning of compiled.warnings) problems.push(`${name}: ${warning}`);
    if (compiled.authorization) authorizations.push(compiled.authorization);
  }
  const labels = destination.pod.metadata.labels ?? {};
  const inScope = [
    ...peerAuthenticationToAuthorization({ namespace: destination.view.namespace, labels }, peerAuthentications, request.rootNamespace),
    ...policiesForWorkload(labels, destination.view.namespace, request.rootNamespace, authorizations),
  ];
  return decideConnection(source.view, destination.view, request.port, inScope, extra);
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
    let result: AuthzCheckResult;
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
        result = await adminGetJson<AuthzCheckResult>(context.target, `/authz/check?${query}`);
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
    const out = [
      ...(result.decidedBy ? [`decided by the ${result.decidedBy}`] : []),
      `from ${describe(result.source)}`,
      `to   ${describe(result.destination)} port ${result.port}`,
      '',
      ...result.lines,
      ...(result.problems.length ? ['', 'policies not (fully) in force:', ...result.problems.map((problem) => `  ${problem}`)] : []),
      '',
    ];
    context.write(out.join('\n'));
    return exitCode;
  },
};
