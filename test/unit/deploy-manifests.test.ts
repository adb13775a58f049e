// Offline checks of what an operator applies (deploy/): the committed manifests and Helm chart are what
// deploy/generate.ts makes, every object passes the Kubernetes schemas (kubernetes-models), the chart with its
// default values is the plain manifests, and the objects agree with the programs that run in them (the agent's
// and the control plane's own config parsers accept their settings; RBAC covers what the control plane watches).
// No Kubernetes runs here: these are the checks that can be made without an API server.
import test from 'ava';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { Ajv } from 'ajv';
import { parse, parseAllDocuments } from 'yaml';
import { configFromEnv } from '../../agent/config.ts';
import { parseInstallArgs } from '../../cni/install.ts';
import { parseConfig as parseControlPlaneConfig } from '../../controlplane/main.ts';
import { WATCHED_RESOURCES } from '../../controlplane/sources/kubernetes.ts';
import { ROOT_CONFIGMAP_NAME } from '../../controlplane/ca/config.ts';
import { generatedFiles } from '../../deploy/generate.ts';
import { crdObjects, installObjects } from '../../deploy/render.ts';
import { DEFAULT_VALUES } from '../../deploy/values.ts';
import { validateRateLimitPolicy } from '../../shared/policy/rate-limit.ts';
import { validateRequestAuthentication } from '../../shared/policy/request-authentication.ts';
import { validatePolicy } from '../../shared/policy/validate.ts';
import { waypointExampleObjects } from '../../deploy/waypoint.ts';
import { configFromEnv as waypointConfigFromEnv } from '../../waypoint/config.ts';
import { collectionPath } from '../../controlplane/kube-writer.ts';
import { ROUTE_KINDS } from '../../controlplane/model/route-status.ts';

const DEPLOY = path.join(import.meta.dirname, '..', '..', 'deploy');

// eslint-disable-next-line @typescript-eslint/no-explicit-any -- manifests are free-form YAML read by assertions
type Doc = Record<string, any>;

async function documents(file: string): Promise<Doc[]> {
  return parseAllDocuments(await readFile(path.join(DEPLOY, file), 'utf8'))
    .map((document) => document.toJS() as Doc | null)
    .filter((document): document is Doc => document !== null);
}

function find(docs: Doc[], kind: string, name: string): Doc {
  const found = docs.find((doc) => doc.kind === kind && doc.metadata?.name === name);
  if (!found) throw new Error(`no ${kind} ${name}`);
  return found;
}

test('the committed manifests and chart are exactly what deploy/generate.ts makes (run `make manifests` after changing deploy/*.ts)', async (t) => {
  for (const [name, content] of generatedFiles()) {
    t.is(await readFile(path.join(DEPLOY, name), 'utf8'), content, `deploy/${name} is stale`);
  }
});

test('every object passes the Kubernetes schemas, and a bad field value is caught', (t) => {
  for (const object of [...crdObjects(), ...installObjects(DEFAULT_VALUES)]) t.notThrows(() => object.validate(), `${object.kind} ${object.metadata?.name}`);
  const [daemonSet] = installObjects({ ...DEFAULT_VALUES, agent: { ...DEFAULT_VALUES.agent } }).filter((object) => object.kind === 'DaemonSet') as unknown as [Doc & { validate(): void }];
  daemonSet.spec.template.spec.containers[0].imagePullPolicy = 'Sometimes';
  t.throws(() => daemonSet.validate(), { message: /imagePullPolicy must be equal to one of the allowed values/ });
});

test('the Helm chart rendered with its values.yaml is the plain manifests', async (t) => {
  const values = parse(await readFile(path.join(DEPLOY, 'helm/ambit/values.yaml'), 'utf8')) as Doc;
  const template = await readFile(path.join(DEPLOY, 'helm/ambit/templates/ambit.yaml'), 'utf8');
  const used = new Set<string>();
  // The templates use only value substitution (no conditionals or loops), so this is exactly what `helm template` does with them.
  const rendered = template.replace(/\{\{ (\.Values\.[\w.]+|\.Release\.Namespace) \}\}/g, (_match, reference: string) => {
    if (reference === '.Release.Namespace') return DEFAULT_VALUES.namespace;
    used.add(reference.slice('.Values.'.length));
    const value = reference
      .slice('.Values.'.length)
      .split('.')
      .reduce<unknown>((node, key) => (node as Doc | undefined)?.[key], values);
    if (typeof value !== 'string') throw new Error(`${reference} is not a string in values.yaml`);
    return value;
  });
  t.notRegex(rendered, /\{\{/, 'every template expression was one the renderer knows');
  const fromChart = parseAllDocuments(rendered).map((document) => document.toJS() as Doc | null).filter((document) => document !== null);
  const plain = (await documents('manifests/ambit.yaml')).filter((doc) => doc.kind !== 'Namespace');
  t.deepEqual(fromChart, plain);
  const leaves = (node: Doc, prefix = ''): string[] => Object.entries(node).flatMap(([key, value]) => (typeof value === 'object' ? leaves(value as Doc, `${prefix}${key}.`) : [`${prefix}${key}`]));
  t.deepEqual(leaves(values).sort(), [...used].sort(), 'every value in values.yaml is used, and only those');
  t.deepEqual(await documents('helm/ambit/crds/security-istio-io.yaml'), await documents('manifests/crds.yaml'));
  t.deepEqual(await documents('helm/ambit/crds/policy-ambit-dev.yaml'), await documents('manifests/crds-ambit.yaml'));
});

test('the agent DaemonSet gives the agent a configuration it accepts, with its files and socket on mounted volumes', async (t) => {
  const docs = await documents('manifests/ambit.yaml');
  const daemonSet = find(docs, 'DaemonSet', 'ambit-agent');
  const pod = daemonSet.spec.template.spec;
  t.true(pod.hostNetwork, 'the agent serves the node: host network');
  const agent = pod.containers.find((container: Doc) => container.name === 'agent');
  // V8 flags sized for a proxy (agent/memory/node-flags.ts) go to node, before the agent's main module.
  t.deepEqual(agent.command, ['node', '--max-semi-space-size=8', '/opt/ambit/agent/main.ts']);
  const env: NodeJS.ProcessEnv = {};
  for (const variable of agent.env as Doc[]) {
    if (variable.valueFrom) {
      t.is(variable.valueFrom.fieldRef.fieldPath, 'spec.nodeName', `${variable.name} comes from the node name`);
      env[variable.name] = 'node-a';
    } else {
      env[variable.name] = variable.value;
    }
  }
  const config = configFromEnv(env);
  t.is(config.nodeName, 'node-a');
  t.is(config.controlPlane?.xdsAddress, `ambit-controlplane.${DEFAULT_VALUES.namespace}.svc:15012`);
  t.truthy(find(docs, 'Service', 'ambit-controlplane').spec.ports.find((port: Doc) => port.port === 15012), 'the Service serves that port');
  const mounts = agent.volumeMounts as Doc[];
  const volumeOf = (file: string) => {
    const mount = mounts.find((candidate) => file.startsWith(`${candidate.mountPath}/`));
    return mount && pod.volumes.find((volume: Doc) => volume.name === mount.name);
  };
  t.is(volumeOf(config.controlPlane!.rootCertFile)?.configMap?.name, ROOT_CONFIGMAP_NAME, 'the mesh root comes from the ConfigMap the control plane publishes');
  t.truthy(volumeOf(config.controlPlane!.tokenFile)?.projected?.sources[0].serviceAccountToken, 'a projected service account token');
  t.is(volumeOf(config.cniSocket)?.hostPath?.path, path.dirname(config.cniSocket), 'the CNI socket is on the host, where the plugin runs');
  t.is(mounts.find((mount) => mount.mountPath === '/var/run/netns')?.mountPropagation, 'HostToContainer', "pods' network namespaces appear in the agent as they are created");
  t.is(agent.readinessProbe.httpGet.path, '/healthz/ready');
  t.is(agent.readinessProbe.httpGet.port, 15021);
  t.deepEqual(pod.tolerations, [{ operator: 'Exists' }], 'every node gets an agent');
});

/**
 * Least privilege: every container the manifests run, and the most it may ask for. Written out here, not taken
 * from deploy/agent.ts, so adding a capability there fails this test until someone says why here too.
 */
const ALLOWED_CAPABILITIES: Record<string, readonly string[]> = {
  // setns (SYS_ADMIN); iptables, ip rule/route, SO_MARK, IP_TRANSPARENT, net sysctls (NET_ADMIN); legacy iptables' raw socket (NET_RAW)
  agent: ['NET_ADMIN', 'SYS_ADMIN', 'NET_RAW'],
  // writes into the host's CNI directories whatever their owner and mode
  'install-cni': ['DAC_OVERRIDE'],
  controlplane: [],
};

test('no container is privileged or asks for a capability beyond its list; every one drops ALL first', async (t) => {
  const docs = await documents('manifests/ambit.yaml');
  const workloads = docs.filter((doc) => doc.spec?.template?.spec !== undefined);
  t.true(workloads.length >= 2, 'the agent DaemonSet and the control plane Deployment');
  let checked = 0;
  for (const workload of workloads) {
    const pod = workload.spec.template.spec;
    t.falsy(pod.hostPID, `${workload.metadata.name}: no host PID namespace`);
    t.falsy(pod.hostIPC, `${workload.metadata.name}: no host IPC namespace`);
    for (const container of [...(pod.initContainers ?? []), ...pod.containers] as Doc[]) {
      const where = `${workload.kind} ${workload.metadata.name} container ${container.name}`;
      const allowed = ALLOWED_CAPABILITIES[container.name];
      if (allowed === undefined) {
        t.fail(`${where} is not in the test's list of containers: add it with the capabilities it needs and why`);
        continue;
      }
      const context = container.securityContext ?? {};
      t.not(context.privileged, true, `${where} must not be privileged`);
      t.deepEqual(context.capabilities?.drop, ['ALL'], `${where} must drop every capability it does not add`);
      const extra = ((context.capabilities?.add ?? []) as string[]).filter((capability) => !allowed.includes(capability.replace(/^CAP_/, '')));
      t.deepEqual(extra, [], `${where} asks for more than ${JSON.stringify(allowed)}`);
      checked++;
    }
  }
  t.is(checked, 3, 'agent, install-cni, controlplane');
  // The agent still has what it needs beside its capabilities: the host's /proc/sys/net, named where it looks.
  const agentPod = find(docs, 'DaemonSet', 'ambit-agent').spec.template.spec;
  const agent = agentPod.containers.find((container: Doc) => container.name === 'agent');
  const procSysNet = (agent.env as Doc[]).find((variable) => variable.name === 'AMBIT_PROC_SYS_NET')?.value;
  const mount = (agent.volumeMounts as Doc[]).find((candidate) => candidate.mountPath === procSysNet);
  t.is(agentPod.volumes.find((volume: Doc) => volume.name === mount?.name)?.hostPath?.path, '/proc/sys/net', 'AMBIT_PROC_SYS_NET is the host\'s /proc/sys/net');
  t.falsy(mount?.readOnly);
});

test('the CNI installer beside the agent accepts its command line and writes where the host finds the plugin', async (t) => {
  const docs = await documents('manifests/ambit.yaml');
  const pod = find(docs, 'DaemonSet', 'ambit-agent').spec.template.spec;
  const installer = pod.containers.find((container: Doc) => container.name === 'install-cni');
  t.deepEqual(installer.command.slice(0, 2), ['node', '/opt/ambit/cni/install.ts']);
  const command = parseInstallArgs(installer.command.slice(2));
  t.true(command.watch, 'it stays to re-add the entry and refresh the token');
  t.false(command.uninstall);
  // Each directory the installer writes is a mounted host directory; the paths it hands the host are the host's.
  const hostPathOf = (containerPath: string) => {
    const mount = (installer.volumeMounts as Doc[]).find((candidate) => containerPath === candidate.mountPath || containerPath.startsWith(`${candidate.mountPath}/`));
    const volume = mount && pod.volumes.find((candidate: Doc) => candidate.name === mount.name);
    return mount && volume?.hostPath?.path && `${volume.hostPath.path}${containerPath.slice(mount.mountPath.length)}`;
  };
  t.is(hostPathOf(command.binDir), DEFAULT_VALUES.cni.binDir);
  t.is(hostPathOf(command.confDir), DEFAULT_VALUES.cni.confDir);
  t.is(command.hostConfDir, DEFAULT_VALUES.cni.confDir);
  t.is(hostPathOf(command.hostRuntime!.dir), command.hostRuntime!.hostPath);
  t.is(command.entry.kubeconfig, `${DEFAULT_VALUES.cni.confDir}/ambit-cni-kubeconfig`, 'the conflist names the kubeconfig by its host path');
  const agent = pod.containers.find((container: Doc) => container.name === 'agent');
  t.is(command.entry.agentSocket, (agent.env as Doc[]).find((variable) => variable.name === 'AMBIT_CNI_SOCKET')?.value, 'the plugin dials the socket the agent serves');
  // The native forwarder's call is run by the agent only if the agent sees the config's pod source (the kubeconfig)
  // at the path the config names (agent/cni-call.ts): the installer's directory, mounted in the agent at the host path.
  const agentMount = (agent.volumeMounts as Doc[]).find((candidate) => command.entry.kubeconfig!.startsWith(`${candidate.mountPath}/`));
  t.truthy(agentMount, 'the agent mounts the directory holding the plugin kubeconfig');
  const agentVolume = pod.volumes.find((candidate: Doc) => candidate.name === agentMount?.name);
  t.is(agentVolume?.hostPath?.path, hostPathOf(command.confDir), 'the same host directory the installer writes it into');
  t.is(agentMount?.mountPath, agentVolume?.hostPath?.path, 'at the host\'s path, the one the config names');
  t.true(agentMount?.readOnly, 'the agent only reads it');
});

test('the control plane Deployment gives the control plane a Kubernetes configuration that trusts the agent service account', async (t) => {
  const docs = await documents('manifests/ambit.yaml');
  const deployment = find(docs, 'Deployment', 'ambit-controlplane');
  const container = deployment.spec.template.spec.containers[0];
  const env: NodeJS.ProcessEnv = {};
  for (const variable of container.env as Doc[]) env[variable.name] = variable.valueFrom ? 'istio-system' : variable.value;
  const config = parseControlPlaneConfig(container.command.slice(2), env);
  t.is(config.source.type, 'kubernetes');
  t.is(config.namespace, DEFAULT_VALUES.namespace);
  t.deepEqual(config.trustedNodeAgents, [`system:serviceaccount:${DEFAULT_VALUES.namespace}:${find(docs, 'DaemonSet', 'ambit-agent').spec.template.spec.serviceAccountName}`]);
  t.is(deployment.spec.template.spec.serviceAccountName, 'ambit-controlplane');
});

test('RBAC: the control plane may list and watch every kind its Kubernetes source watches; the agent may get pods and namespaces', async (t) => {
  const docs = await documents('manifests/ambit.yaml');
  const allows = (role: Doc, group: string, resource: string, verb: string) =>
    (role.rules as Doc[]).some((rule) => rule.apiGroups.includes(group) && rule.resources.includes(resource) && rule.verbs.includes(verb));
  const controlPlane = find(docs, 'ClusterRole', 'ambit-controlplane');
  for (const descriptor of WATCHED_RESOURCES) {
    const group = descriptor.apiVersion.includes('/') ? descriptor.apiVersion.split('/')[0]! : '';
    const resource = descriptor.path.split('/').pop()!;
    for (const verb of ['list', 'watch']) t.true(allows(controlPlane, group, resource, verb), `${verb} ${group}/${resource}`);
  }
  t.true(allows(controlPlane, 'authentication.k8s.io', 'tokenreviews', 'create'));
  for (const [group, resource] of [['security.istio.io', 'authorizationpolicies'], ['security.istio.io', 'requestauthentications'], ['policy.ambit.dev', 'localratelimitpolicies']] as const) {
    t.true(allows(controlPlane, group, `${resource}/status`, 'patch'), `patch ${group}/${resource}/status (the Accepted condition, controlplane/status/)`);
    t.false(allows(controlPlane, group, resource, 'patch'), `but not ${group}/${resource} itself: users own the spec`);
  }
  for (const verb of ['get', 'list', 'watch', 'create', 'update']) t.true(allows(controlPlane, '', 'configmaps', verb), `${verb} configmaps (the mesh root in every namespace, kept as published)`);
  const caRole = find(docs, 'Role', 'ambit-controlplane');
  t.is(caRole.metadata.namespace, DEFAULT_VALUES.namespace, 'the CA secret is reachable only in its own namespace');
  t.false(allows(controlPlane, '', 'secrets', 'get'), 'no cluster-wide secrets');
  const agent = find(docs, 'ClusterRole', 'ambit-agent');
  t.true(allows(agent, '', 'pods', 'get') && allows(agent, '', 'namespaces', 'get'), "the CNI plugin's lookup");
  t.true(allows(agent, '', 'pods', 'patch'), "the agent's redirection annotation");
  for (const binding of ['ClusterRoleBinding', 'RoleBinding']) {
    for (const doc of docs.filter((candidate) => candidate.kind === binding)) {
      t.truthy(find(docs, 'ServiceAccount', doc.subjects[0].name), `${binding} ${doc.metadata.name} binds an account that exists`);
    }
  }
});

test('the waypoint the control plane writes passes the schemas, runs as Istio\'s does, and gets a configuration the waypoint accepts', async (t) => {
  for (const object of waypointExampleObjects(DEFAULT_VALUES)) t.notThrows(() => object.validate(), `${object.kind} ${object.metadata?.name}`);
  const docs = await documents('manifests/waypoint-example.yaml');
  const deployment = find(docs, 'Deployment', 'waypoint');
  const pod = deployment.spec.template.spec;
  t.like(deployment.spec.template.metadata.labels, { 'istio.io/dataplane-mode': 'none', 'gateway.networking.k8s.io/gateway-name': 'waypoint' });
  t.deepEqual(find(docs, 'Service', 'waypoint').spec.selector, deployment.spec.selector.matchLabels, 'the Service selects the waypoint pods');
  t.is(pod.serviceAccountName, find(docs, 'ServiceAccount', 'waypoint').metadata.name);
  const container = pod.containers[0];
  t.like(container.securityContext, { runAsNonRoot: true, runAsUser: 1337, readOnlyRootFilesystem: true, allowPrivilegeEscalation: false, privileged: false });
  t.deepEqual(container.securityContext.capabilities, { drop: ['ALL'] }, 'no capabilities at all');
  t.deepEqual((container.ports as Doc[]).map((port) => port.containerPort).sort(), [15008, 15020, 15021]);
  // The downward API's values, as the kubelet would fill them in; the waypoint's own parser must accept the rest.
  const downward: Record<string, string> = { 'metadata.namespace': 'default', 'metadata.name': 'waypoint-5d8f-x', 'spec.nodeName': 'node-1', 'spec.serviceAccountName': pod.serviceAccountName };
  const env: NodeJS.ProcessEnv = {};
  for (const variable of container.env as Doc[]) env[variable.name] = variable.valueFrom ? downward[variable.valueFrom.fieldRef.fieldPath] : variable.value;
  const config = waypointConfigFromEnv(env);
  t.is(config.gatewayName, 'default/waypoint');
  t.is(config.serviceAccount, 'waypoint');
  // Its files are on mounted volumes: the token projected for an audience the control plane accepts, the root from the published ConfigMap.
  const volumeOf = (file: string) => {
    const mount = (container.volumeMounts as Doc[]).find((candidate) => file.startsWith(`${candidate.mountPath}/`));
    return { mount, volume: pod.volumes.find((candidate: Doc) => candidate.name === mount?.name) as Doc | undefined };
  };
  const token = volumeOf(config.tokenFile);
  const projected = token.volume?.projected?.sources?.[0]?.serviceAccountToken;
  t.is(`${token.mount?.mountPath}/${projected?.path}`, config.tokenFile);
  const controlPlane = find(await documents('manifests/ambit.yaml'), 'Deployment', 'ambit-controlplane').spec.template.spec.containers[0];
  const cpEnv: NodeJS.ProcessEnv = {};
  for (const variable of controlPlane.env as Doc[]) cpEnv[variable.name] = variable.valueFrom ? DEFAULT_VALUES.namespace : variable.value;
  const cpConfig = parseControlPlaneConfig(controlPlane.command.slice(2), cpEnv);
  t.true(cpConfig.tokenAudiences.includes(projected?.audience), `the token is for ${projected?.audience}, which the control plane's TokenReview asks for`);
  t.is(volumeOf(config.rootCertFile).volume?.configMap?.name, ROOT_CONFIGMAP_NAME);
  t.true(config.rootCertFile.endsWith('/root-cert.pem'));
  // The image and address the control plane's controller writes are the ones the manifests give it.
  t.is(container.image, cpConfig.waypoint.image);
  t.is(config.xdsAddress, cpConfig.waypoint.xdsAddress);
  t.is(config.xdsAddress.split('.')[0], find(await documents('manifests/ambit.yaml'), 'Service', 'ambit-controlplane').metadata.name, 'waypoints reach the control plane by its Service');
  t.true(projected?.expirationSeconds >= 600);
});

test('RBAC: the control plane may write every kind its waypoint controller writes, and the status of Gateways and routes', async (t) => {
  const docs = await documents('manifests/ambit.yaml');
  const role = find(docs, 'ClusterRole', 'ambit-controlplane');
  const allows = (group: string, resource: string, verb: string) => (role.rules as Doc[]).some((rule) => rule.apiGroups.includes(group) && rule.resources.includes(resource) && rule.verbs.includes(verb));
  // Group and resource from the writer's own path for each kind, so a kind added there without RBAC fails here.
  const groupAndResource = (kind: string) => {
    const parts = collectionPath(kind, 'ns').split('/');
    return { group: parts[1] === 'api' ? '' : parts[2]!, resource: parts.pop()! };
  };
  for (const object of waypointExampleObjects(DEFAULT_VALUES)) {
    const { group, resource } = groupAndResource(object.kind);
    for (const verb of ['create', 'patch']) t.true(allows(group, resource, verb), `${verb} ${group}/${resource}`);
  }
  for (const kind of ['Gateway', ...ROUTE_KINDS]) {
    const { group, resource } = groupAndResource(kind);
    t.true(allows(group, `${resource}/status`, 'patch'), `patch ${group}/${resource}/status`);
    t.false(allows(group, resource, 'patch'), `${kind}s themselves are the user's: only their status is written`);
  }
});

test('the CRDs are structural and accept what the control plane accepts', async (t) => {
  const crds = [...(await documents('manifests/crds.yaml')), ...(await documents('manifests/crds-ambit.yaml'))];
  t.deepEqual(crds.map((crd) => crd.metadata.name).sort(), [
    'authorizationpolicies.security.istio.io',
    'localratelimitpolicies.policy.ambit.dev',
    'peerauthentications.security.istio.io',
    'requestauthentications.security.istio.io',
  ]);
  const problems: string[] = [];
  const walk = (schema: Doc, at: string) => {
    if (schema.type === undefined && !schema['x-kubernetes-preserve-unknown-fields']) problems.push(`${at}: no type`);
    if (schema.properties && schema.additionalProperties !== undefined) problems.push(`${at}: properties and additionalProperties`);
    for (const [name, property] of Object.entries((schema.properties ?? {}) as Record<string, Doc>)) walk(property, `${at}.${name}`);
    if (schema.items) walk(schema.items as Doc, `${at}[]`);
    if (typeof schema.additionalProperties === 'object') walk(schema.additionalProperties as Doc, `${at}{}`);
  };
  for (const crd of crds) for (const version of crd.spec.versions as Doc[]) walk(version.schema.openAPIV3Schema, `${crd.metadata.name}/${version.name}`);
  t.deepEqual(problems, []);
  t.deepEqual(crds.map((crd) => (crd.spec.versions as Doc[]).filter((version) => version.storage).map((version) => version.name)), [['v1'], ['v1'], ['v1'], ['v1alpha1']]);
  for (const crd of crds) t.deepEqual(crd.spec.versions[0].subresources, { status: {} }, `${crd.metadata.name}: the control plane writes status through the status subresource`);

  const ajv = new Ajv({ strict: false });
  const accepts = (sample: Doc): boolean => {
    if (sample.kind === 'RequestAuthentication') return (validateRequestAuthentication(sample), true);
    if (sample.kind === 'LocalRateLimitPolicy') return (validateRateLimitPolicy(sample), true);
    return validatePolicy(sample).ok;
  };
  const samples: { sample: Doc; bad: Doc }[] = [
    {
      sample: { apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name: 'a', namespace: 'shop' }, spec: { selector: { matchLabels: { app: 'web' } }, action: 'ALLOW', rules: [{ from: [{ source: { principals: ['cluster.local/ns/shop/sa/client'], ipBlocks: ['10.0.0.0/8'] } }], to: [{ operation: { ports: ['8080'] } }], when: [{ key: 'source.namespace', values: ['shop'] }] }] } },
      bad: { action: 'MAYBE' },
    },
    {
      sample: { apiVersion: 'security.istio.io/v1', kind: 'PeerAuthentication', metadata: { name: 'p', namespace: 'shop' }, spec: { selector: { matchLabels: { app: 'web' } }, mtls: { mode: 'STRICT' }, portLevelMtls: { '8080': { mode: 'PERMISSIVE' } } } },
      bad: { mtls: { mode: 'SOMETIMES' } },
    },
    {
      sample: { apiVersion: 'security.istio.io/v1', kind: 'RequestAuthentication', metadata: { name: 'jwt', namespace: 'shop' }, spec: { targetRefs: [{ kind: 'Service', group: '', name: 'web' }], jwtRules: [{ issuer: 'https://issuer.example', jwksUri: 'https://issuer.example/jwks', audiences: ['web'], fromHeaders: [{ name: 'x-jwt', prefix: 'Bearer ' }], outputClaimToHeaders: [{ header: 'x-sub', claim: 'sub' }], forwardOriginalToken: true }] } },
      bad: { jwtRules: [{ jwksUri: 'https://issuer.example/jwks' }] },
    },
    {
      sample: { apiVersion: 'policy.ambit.dev/v1alpha1', kind: 'LocalRateLimitPolicy', metadata: { name: 'rl', namespace: 'shop' }, spec: { targetRefs: [{ kind: 'Service', group: '', name: 'web' }], limits: [{ name: 'orders', requests: 10, unit: 'Second', burst: 20, key: { type: 'Header', header: 'x-user' }, match: { paths: ['/orders*'], methods: ['POST'] } }] } },
      bad: { targetRefs: [{ kind: 'Service', group: '', name: 'web' }], limits: [{ requests: 10, unit: 'Fortnight' }] },
    },
  ];
  for (const { sample, bad } of samples) {
    t.true(accepts(sample), `the control plane accepts the ${sample.kind}`);
    const crd = crds.find((candidate) => candidate.spec.names.kind === sample.kind)!;
    const validate = ajv.compile(crd.spec.versions[0].schema.openAPIV3Schema);
    t.true(validate(sample), `the ${sample.kind} CRD accepts it: ${JSON.stringify(validate.errors)}`);
    t.false(validate({ ...sample, spec: { ...sample.spec, ...bad } }), `and refuses a bad ${sample.kind}`);
  }
});

test('the chart refuses bad values with the value named (values.schema.json, which Helm checks on install)', async (t) => {
  const schema = JSON.parse(await readFile(path.join(DEPLOY, 'helm/ambit/values.schema.json'), 'utf8')) as Doc;
  const values = parse(await readFile(path.join(DEPLOY, 'helm/ambit/values.yaml'), 'utf8')) as Doc;
  const validate = new Ajv({ allErrors: true, strict: false }).compile(schema);
  t.true(validate(values), `the defaults pass: ${JSON.stringify(validate.errors)}`);
  t.true(validate({ ...values, global: { hub: 'x' }, agent: { ...values.agent, workerThreads: '2', memoryLimit: '1.5Gi' } }), 'a parent chart\'s global map and good values pass');
  const refused = (change: Doc, where: RegExp) => {
    t.false(validate({ ...values, ...change }), JSON.stringify(change));
    t.regex(JSON.stringify(validate.errors), where);
  };
  refused({ agent: { ...values.agent, workerThreads: 'lots' } }, /\/agent\/workerThreads/);
  refused({ agent: { ...values.agent, memoryLimit: '1 GB' } }, /\/agent\/memoryLimit/);
  refused({ cni: { ...values.cni, binDir: 'opt/cni/bin' } }, /\/cni\/binDir/);
  refused({ logLevel: 'chatty' }, /\/logLevel/);
  refused({ agnet: { workerThreads: '2' } }, /additionalProperties.*agnet/);
});
