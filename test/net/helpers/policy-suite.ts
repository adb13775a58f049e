/**
 * The L4 policy suite, registered by test/net/policy.test.ts (agents read the cluster directory themselves) and
 * test/net/policy-xds.test.ts (the control plane reads it and pushes policies over delta xDS).
 *
 * L4 authorization and PeerAuthentication end to end on a real 2-node local mesh: the server pod runs on node 1,
 * clients with different identities on node 0 (HBONE across nodes) and a plaintext client outside the mesh.
 * Each test writes its policies as YAML into the cluster directory (as `kubectl apply` would), waits until the
 * destination agent enforces them by polling the behaviour, and removes them afterwards (waiting until the agent
 * holds no policy, so tests never see each other's policies).
 */
import test from 'ava';
import { once } from 'node:events';
import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { createLocalMesh, type LocalMesh } from '../../../runtime/local-mesh.ts';
import { runClient, startEchoServer, type ClusterNode, type Pod } from '../../../runtime/index.ts';
import { parsePrometheusText, sumOf } from '../../helpers/prometheus-text.ts';
import { runAmbitctl } from '../../../ambitctl/main.ts';
import { parse as parseYaml } from 'yaml';
import { podFile, writePod } from '../../../runtime/cluster-store.ts';
import type { PodObject } from '../../../shared/k8s/objects.ts';

const ENROLLED = { 'istio.io/dataplane-mode': 'ambient' };
const PORT = 8080;
const OTHER_PORT = 9090;
const WAIT_MS = 15_000;

export interface PolicySuiteOptions {
  /** Cluster name (distinct per test file, so files can run side by side). */
  name: string;
  /** Run the control plane (policies over xDS) or let each agent read the cluster directory. */
  controlPlane: boolean;
  /** Extra environment for the agents (AMBIT_WORKER_THREADS, ...). */
  agentEnv?: Record<string, string>;
}

export function policySuite(options: PolicySuiteOptions): void {
  let mesh: LocalMesh;
  let server: Pod;
  /** shop/client: the identity most policies allow. */
  let client: Pod;
  /** shop/other: another service account in the same namespace. */
  let other: Pod;
  /** web/web: an enrolled pod in another namespace. */
  let foreign: Pod;
  /** legacy/legacy: not in the mesh, so it talks plaintext (to port 15006 of the server pod). */
  let legacy: Pod;
  let policyDir: string;

  test.before(async () => {
    mesh = await createLocalMesh({ nodes: 2, name: options.name, controlPlane: options.controlPlane, ...(options.agentEnv ? { agentEnv: options.agentEnv } : {}) });
    server = await mesh.cluster.createPod({ node: 1, namespace: 'shop', name: 'server', serviceAccount: 'server', labels: { app: 'server' }, namespaceLabels: ENROLLED });
    client = await mesh.cluster.createPod({ node: 0, namespace: 'shop', name: 'client', serviceAccount: 'client' });
    other = await mesh.cluster.createPod({ node: 0, namespace: 'shop', name: 'other', serviceAccount: 'other' });
    foreign = await mesh.cluster.createPod({ node: 0, namespace: 'web', name: 'foreign', serviceAccount: 'web', namespaceLabels: ENROLLED });
    legacy = await mesh.cluster.createPod({ node: 0, namespace: 'legacy', name: 'legacy', serviceAccount: 'legacy' });
    await startEchoServer(server, { port: PORT });
    await startEchoServer(server, { port: OTHER_PORT });
    policyDir = path.join(mesh.cluster.clusterDir, 'policies');
    await mkdir(policyDir, { recursive: true });
  });

  test.after.always(async () => {
    await mesh?.destroy();
  });

  test.afterEach.always(async () => {
    if (!policyDir) return;
    await rm(policyDir, { recursive: true, force: true });
    await mkdir(policyDir, { recursive: true });
    await waitFor(async () => (await configDumpPolicies(mesh.cluster.node(1))) === 0, 'the agent dropped the policies');
  });

  async function applyPolicy(name: string, yaml: string): Promise<void> {
    // Written under a dot-name then renamed, as kubectl-like writers do: the agent never reads half a file.
    const file = path.join(policyDir, `${name}.yaml`);
    await writeFile(path.join(policyDir, `.${name}.tmp`), yaml);
    await rename(path.join(policyDir, `.${name}.tmp`), file);
  }

  async function waitFor(condition: () => Promise<boolean>, what: string): Promise<void> {
    const deadline = Date.now() + WAIT_MS;
    while (!(await condition())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting until ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 200));
    }
  }

  async function connects(from: Pod, port = PORT): Promise<boolean> {
    return (await runClient(from, { host: server.ip, port, timeoutMs: 3000 })).ok;
  }

  const allowed = (from: Pod, port = PORT) => () => connects(from, port);
  const denied = (from: Pod, port = PORT) => async () => !(await connects(from, port));

  async function configDumpPolicies(node: ClusterNode): Promise<number> {
    const result = await node.exec(process.execPath, ['-e', "fetch('http://127.0.0.1:15000/config_dump').then((r) => r.json()).then((d) => console.log(d.policies.length))"]);
    return Number(result.stdout.trim());
  }

  // eslint-disable-next-line @typescript-eslint/no-explicit-any -- log lines are free-form JSON read by assertions
  async function agentLog(node: ClusterNode): Promise<Array<Record<string, any>>> {
    const text = await readFile(node.agentLogFile, 'utf8');
    return text
      .split('\n')
      .filter((line) => line.startsWith('{'))
      .map((line) => JSON.parse(line) as Record<string, unknown>);
  }

  const accessLog = async (node: ClusterNode) => (await agentLog(node)).filter((line) => line.msg === 'connection closed');

  function authorizationPolicy(name: string, spec: string, extraMetadata = ''): string {
    return `apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: ${name}
  namespace: shop
${extraMetadata}spec:
${spec}`;
  }

  test.serial('ALLOW by principal lets the client in across nodes and denies another service account; the denial is counted and logged', async (t) => {
    await applyPolicy(
      'allow-client',
      authorizationPolicy(
        'allow-client',
        `  selector: {matchLabels: {app: server}}
  action: ALLOW
  rules:
  - from: [{source: {principals: ["cluster.local/ns/shop/sa/client"]}}]
`,
      ),
    );
    await waitFor(denied(other), 'shop/other is denied');
    t.true(await connects(client), 'the allowed principal gets in');
    t.false(await connects(foreign), 'a principal the policy does not name is denied');

    // `ambitctl authz check` asking the destination's agent (no cluster directory: how it works in Kubernetes)
    // gives the enforcer's own answer.
    const node = mesh.cluster.node(1);
    const ask = async (source: string) => {
      let stdout = '';
      let stderr = '';
      const code = await runAmbitctl(['authz', 'check', source, 'shop/server', String(PORT), '--node', node.netnsName, '-o', 'json'], { stdout: (text) => (stdout += text), stderr: (text) => (stderr += text) }, {});
      if (code === 2) throw new Error(`ambitctl authz check failed: ${stderr}`);
      const verdict = JSON.parse(stdout) as { allowed: boolean; decidingPolicy?: string; decidedBy?: string };
      t.is(code, verdict.allowed ? 0 : 1, 'exit 0 when allowed, 1 when denied');
      return verdict;
    };
    const verdictClient = await ask('shop/client');
    t.true(verdictClient.allowed);
    t.is(verdictClient.decidingPolicy, 'shop/allow-client');
    t.is(verdictClient.decidedBy, `agent on ${node.name}`);
    t.false((await ask('shop/other')).allowed, 'the agent says other is denied, as it enforces');

    // A connection of shop/other that was open when the policy arrived is closed with 'policy changed: ...' (also
    // DENY); the attempts after it are refused at connect time with 'policy rejection: ...'. Both are logged.
    const deniedOther = async () => (await accessLog(mesh.cluster.node(1))).filter((line) => line.direction === 'inbound' && line.src.principal === 'spiffe://cluster.local/ns/shop/sa/other' && line.response_flags === 'DENY');
    await waitFor(async () => (await deniedOther()).some((line) => /^policy rejection: /.test(String(line.error))), 'the refused stream is in the access log');
    const lines = await deniedOther();
    t.true(lines.length > 0, 'the denied stream is in the destination access log with response_flags DENY');
    t.true(lines.every((line) => /^policy (rejection|changed): /.test(String(line.error))), 'each denial says why');

    const metrics = await mesh.cluster.node(1).exec(process.execPath, ['-e', "fetch('http://127.0.0.1:15020/metrics').then((r) => r.text()).then((t) => process.stdout.write(t))"]);
    const failed = sumOf(parsePrometheusText(metrics.stdout), 'istio_tcp_connections_failed_total', {
      reporter: 'destination',
      response_flags: 'DENY',
      source_principal: 'spiffe://cluster.local/ns/shop/sa/other',
      destination_workload: 'server',
    });
    t.true(failed >= 1, `istio_tcp_connections_failed_total{response_flags="DENY"} counts the denial (${failed})`);
  });

  test.serial('DENY by namespace', async (t) => {
    await applyPolicy('deny-web', authorizationPolicy('deny-web', `  action: DENY\n  rules:\n  - from: [{source: {namespaces: ["web"]}}]\n`));
    await waitFor(denied(foreign), 'the web namespace is denied');
    t.true(await connects(client));
    t.true(await connects(other));
  });

  test.serial('notPrincipals', async (t) => {
    await applyPolicy('deny-not-client', authorizationPolicy('deny-not-client', `  action: DENY\n  rules:\n  - from: [{source: {notPrincipals: ["cluster.local/ns/shop/sa/client"]}}]\n`));
    await waitFor(denied(other), 'everyone but shop/client is denied');
    t.true(await connects(client));
    t.false(await connects(foreign));
  });

  test.serial('ports and notPorts', async (t) => {
    await applyPolicy('allow-9090', authorizationPolicy('allow-9090', `  action: ALLOW\n  rules:\n  - to: [{operation: {ports: ["${OTHER_PORT}"]}}]\n`));
    await waitFor(denied(client, PORT), `port ${PORT} is denied`);
    t.true(await connects(client, OTHER_PORT), `port ${OTHER_PORT} is allowed`);
    await rm(path.join(policyDir, 'allow-9090.yaml'));
    await applyPolicy('deny-not-8080', authorizationPolicy('deny-not-8080', `  action: DENY\n  rules:\n  - to: [{operation: {notPorts: ["${PORT}"]}}]\n`));
    await waitFor(denied(client, OTHER_PORT), `every port but ${PORT} is denied`);
    t.true(await connects(client, PORT));
  });

  test.serial('ipBlocks with the client pod\'s IP', async (t) => {
    await applyPolicy('deny-ip', authorizationPolicy('deny-ip', `  action: DENY\n  rules:\n  - from: [{source: {ipBlocks: ["${other.ip}/32"]}}]\n`));
    await waitFor(denied(other), `${other.ip} is denied`);
    t.true(await connects(client), 'another address of the same node and namespace gets in');
  });

  test.serial('when source.namespace', async (t) => {
    await applyPolicy('allow-from-web', authorizationPolicy('allow-from-web', `  action: ALLOW\n  rules:\n  - when: [{key: source.namespace, values: ["web"]}]\n`));
    await waitFor(denied(client), 'shop is no longer allowed');
    t.true(await connects(foreign), 'the web namespace is allowed');
  });

  test.serial('DENY beats ALLOW', async (t) => {
    await applyPolicy(
      'both',
      `${authorizationPolicy('allow-client', `  action: ALLOW\n  rules:\n  - from: [{source: {principals: ["cluster.local/ns/shop/sa/client", "cluster.local/ns/shop/sa/other"]}}]\n`)}---
${authorizationPolicy('deny-client', `  action: DENY\n  rules:\n  - from: [{source: {serviceAccounts: ["client"]}}]\n`)}`,
    );
    await waitFor(denied(client), 'the client is denied although an ALLOW policy matches it');
    t.true(await connects(other), 'the ALLOW policy is in force: it lets in the identity the DENY does not name');
    t.false(await connects(foreign), 'and the others are not allowed by any ALLOW policy');
  });

  test.serial('PeerAuthentication STRICT blocks a plaintext client, PERMISSIVE lets it in', async (t) => {
    t.true(await connects(legacy), 'PERMISSIVE by default');
    const peer = (mode: string) => `apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: shop, namespace: shop}\nspec: {mtls: {mode: ${mode}}}\n`;
    await applyPolicy('peer', peer('STRICT'));
    await waitFor(denied(legacy), 'plaintext is rejected');
    t.true(await connects(client), 'mTLS clients are unaffected');
    const lines = (await accessLog(mesh.cluster.node(1))).filter((line) => line.src.address === legacy.ip && line.response_flags === 'DENY');
    t.true(lines.length > 0 && lines.every((line) => line.mtls === false), 'the reset plaintext connection is logged with DENY');
    await applyPolicy('peer', peer('PERMISSIVE'));
    await waitFor(allowed(legacy), 'plaintext is accepted again');
  });

  test.serial('PeerAuthentication port-level override', async (t) => {
    await applyPolicy(
      'peer-ports',
      `apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: server, namespace: shop}
spec:
  selector: {matchLabels: {app: server}}
  mtls: {mode: STRICT}
  portLevelMtls:
    "${OTHER_PORT}": {mode: PERMISSIVE}
`,
    );
    await waitFor(denied(legacy, PORT), `plaintext to ${PORT} is rejected`);
    t.true(await connects(legacy, OTHER_PORT), `plaintext to ${OTHER_PORT} is accepted`);
    t.true(await connects(client, PORT));
  });

  test.serial('a dry-run policy is logged but not enforced', async (t) => {
    await applyPolicy('dry', authorizationPolicy('dry-deny-all', `  action: DENY\n  rules:\n  - {}\n`, `  annotations: {"istio.io/dry-run": "true"}\n`));
    await waitFor(async () => (await configDumpPolicies(mesh.cluster.node(1))) === 1, 'the agent holds the dry-run policy');
    t.true(await connects(client), 'allowed although the dry-run policy denies everything');
    await waitFor(
      async () => (await agentLog(mesh.cluster.node(1))).some((line) => line.msg === 'dry-run policy evaluated' && line.dry_run_result === 'deny' && line.src?.principal === 'spiffe://cluster.local/ns/shop/sa/client'),
      'the dry-run result is logged',
    );
    t.pass();
  });

  /** Opens a connection from `from` to the server and keeps it open; resolves once it carried data. */
  async function holdConnection(from: Pod): Promise<{ output: () => string; exited: Promise<number>; stop: () => void }> {
    const holder = from.spawn(
      process.execPath,
      [
        '-e',
        `
    const s = require('net').connect(${PORT}, '${server.ip}', () => { s.write('x'); });
    s.once('data', () => console.log('connected'));
    s.on('error', (e) => console.log('ended ' + e.code));
    s.on('close', () => { console.log('closed'); process.exit(0); });
    setTimeout(() => { console.log('still-open'); process.exit(1); }, ${WAIT_MS});
  `,
      ],
      { stdio: ['ignore', 'pipe', 'inherit'] },
    );
    const exited = once(holder, 'exit').then(([code]) => code as number);
    let output = '';
    holder.stdout!.on('data', (chunk: Buffer) => (output += chunk));
    while (!output.includes('connected')) {
      if (holder.exitCode !== null) throw new Error(`the holder exited: ${output}`);
      await once(holder.stdout!, 'data');
    }
    return { output: () => output, exited, stop: () => holder.kill() };
  }

  test.serial('late enforcement: adding a DENY policy closes open connections it denies (HBONE and plaintext)', async (t) => {
    const hbone = await holdConnection(other);
    const plaintext = await holdConnection(legacy);
    const kept = await holdConnection(client);
    t.teardown(() => kept.stop());
    await applyPolicy(
      'late',
      `${authorizationPolicy('deny-other', `  action: DENY\n  rules:\n  - from: [{source: {principals: ["cluster.local/ns/shop/sa/other"]}}]\n`)}---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: shop, namespace: shop}
spec: {mtls: {mode: STRICT}}
`,
    );
    t.is(await hbone.exited, 0, `the denied HBONE connection was closed: ${hbone.output()}`);
    t.is(await plaintext.exited, 0, `the plaintext connection was closed: ${plaintext.output()}`);
    t.false(kept.output().includes('closed'), 'the allowed connection stays open');
    await waitFor(async () => {
      const lines = (await accessLog(mesh.cluster.node(1))).filter((line) => /^policy changed: /.test(line.error ?? ''));
      return lines.some((line) => line.src.address === other.ip) && lines.some((line) => line.src.address === legacy.ip);
    }, 'both closures are in the access log with "policy changed"');
    t.true((await agentLog(mesh.cluster.node(1))).some((line) => line.msg?.startsWith('policy changed') && line.policy === 'shop/deny-other'));
    t.false(kept.output().includes('closed'));
  });

  /** Replaces the server pod's labels in its published Pod object (as `kubectl label` would). */
  async function setServerLabels(labels: Record<string, string>): Promise<void> {
    const file = podFile(mesh.cluster.clusterDir, server.namespace, server.name);
    const object = parseYaml(await readFile(file, 'utf8')) as PodObject;
    object.metadata.labels = labels;
    await writePod(mesh.cluster.clusterDir, object);
  }

  test.serial('late enforcement: relabelling a pod into a selector policy closes its open connections the policy denies', async (t) => {
    await applyPolicy('locked', authorizationPolicy('deny-other-locked', `  selector: {matchLabels: {lock: "on"}}\n  action: DENY\n  rules:\n  - from: [{source: {principals: ["cluster.local/ns/shop/sa/other"]}}]\n`));
    await waitFor(async () => (await configDumpPolicies(mesh.cluster.node(1))) === 1, 'the agent holds the selector policy');
    t.true(await connects(other), 'the policy selects no pod yet');
    const denying = await holdConnection(other);
    const kept = await holdConnection(client);
    t.teardown(() => kept.stop());
    t.teardown(() => setServerLabels({ app: 'server' }));
    // No policy changed: only the pod's labels, so only the re-check on the pod's update can close the connection.
    await setServerLabels({ app: 'server', lock: 'on' });
    t.is(await denying.exited, 0, `the open connection the relabelled pod's policy now denies was closed: ${denying.output()}`);
    t.false(kept.output().includes('closed'), 'the allowed connection stays open');
    await waitFor(async () => (await accessLog(mesh.cluster.node(1))).some((line) => line.src.address === other.ip && /^policy changed: /.test(line.error ?? '')), 'the closure is in the access log');
    t.true((await agentLog(mesh.cluster.node(1))).some((line) => line.msg?.startsWith('policy changed') && line.policy === 'shop/deny-other-locked'));
    t.false(await connects(other), 'new connections are denied too');
    t.false(kept.output().includes('closed'));
  });

  test.serial('after an agent restart, policies are in force from the first connection', async (t) => {
    await applyPolicy('deny-other', authorizationPolicy('deny-other', `  action: DENY\n  rules:\n  - from: [{source: {principals: ["cluster.local/ns/shop/sa/other"]}}]\n`));
    await waitFor(denied(other), 'the policy is enforced');
    await mesh.cluster.node(1).restartAgent();
    t.false(await connects(other), 'the restarted agent denies at once: it loads policies before it re-captures pods');
    t.true(await connects(client));
  });

  test.serial(`a bad policy is reported in the ${options.controlPlane ? "control plane's" : "agent's"} log and the other policies stay in force`, async (t) => {
    await applyPolicy('good', authorizationPolicy('deny-other', `  action: DENY\n  rules:\n  - from: [{source: {principals: ["cluster.local/ns/shop/sa/other"]}}]\n`));
    await waitFor(denied(other), 'the good policy is enforced');
    await applyPolicy('bad', authorizationPolicy('typo', `  action: DENY\n  rules:\n  - from: [{source: {principal: ["cluster.local/ns/shop/sa/client"]}}]\n`));
    const badFile = path.join(policyDir, 'bad.yaml');
    await waitFor(async () => {
      if (options.controlPlane) {
        // With a control plane, it validates and compiles policies (as istiod does); the agents never see a bad one.
        const text = await readFile(mesh.controlPlaneLogFile!, 'utf8');
        return text.split('\n').some((line) => line.includes('shop/typo') && /unknown field/.test(line));
      }
      return (await agentLog(mesh.cluster.node(1))).some((line) => line.level >= 50 && String(line.file ?? '').startsWith(badFile) && /unknown field/.test(line.msg));
    }, 'the bad policy is reported');
    t.true(await connects(client), 'the bad policy (a DENY for the client) is not in force');
    t.false(await connects(other), 'the good policy still is');
  });
}
