/**
 * kubectl against `ambitctl local`: the real kubectl (v1.32, /usr/bin/kubectl) drives a local cluster brought up from
 * fixtures/local-kubectl/ (namespaces shop and ops, a Deployment behind a Service, an AuthorizationPolicy, a pod) with
 * the kubeconfig `up` prints; the control plane runs with its Kubernetes source against the same API (the
 * default), as in a cluster. It lists pods across namespaces with IPs and nodes, Services, AuthorizationPolicies;
 * labelling namespace shop ambient captures its pods (the agent's redirection annotation appears) and is written into
 * the user's Namespace file, the one source of truth, and reaches the agents through the control plane's informers
 * (sleep's call to the echo Service then goes over mTLS with both identities); a Pod applied from stdin lands as a file, runs (Ready, its own
 * log line) and `delete` removes it with its network namespace; a Pod the runtime cannot run and a policy with an
 * unknown field are refused with the reason and leave the directory as it was; a wrong token is refused.
 */
import test from 'ava';
import { existsSync } from 'node:fs';
import { cp, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { run } from '../../runtime/exec.ts';
import { listNetns } from '../../runtime/netns.ts';
import { reapDeadRuns } from '../../runtime/run-registry.ts';
import type { LocalState } from '../../runtime/workloads/local-state.ts';

const REPO = path.resolve(import.meta.dirname, '..', '..');
const AMBITCTL = path.join(REPO, 'ambitctl', 'ambitctl');
const KUBECTL = '/usr/bin/kubectl';
const FIXTURE = path.join(import.meta.dirname, 'fixtures', 'local-kubectl');
const UP_TIMEOUT_S = 240;
const WAIT_MS = 120_000;

const WEB_POD = `apiVersion: v1
kind: Pod
metadata: {name: web, namespace: ops, labels: {app: web}}
spec:
  containers:
  - name: web
    image: busybox
    command: [sh, -c, 'echo "web says hello from $MY_NS"; exec sleep infinity']
    env: [{name: MY_NS, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}]
`;

test('kubectl drives a local cluster: get, label, apply, logs, delete, and what it writes lands in the directory', async (t) => {
  t.timeout((UP_TIMEOUT_S + 300) * 1000);
  const runDir = await mkdtemp(path.join(os.tmpdir(), 'ambit-kubectl-run-'));
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ambit-kubectl-manifests-'));
  const cacheDir = await mkdtemp(path.join(os.tmpdir(), 'ambit-kubectl-cache-'));
  await cp(FIXTURE, dir, { recursive: true });
  const ctl = (...args: string[]) => run(AMBITCTL, ['local', ...args], { env: { ...process.env, AMBIT_LOCAL_RUN_DIR: runDir }, timeoutMs: (UP_TIMEOUT_S + 30) * 1000 });
  t.teardown(async () => {
    await ctl('down');
    await reapDeadRuns();
    for (const made of [runDir, dir, cacheDir]) await rm(made, { recursive: true, force: true });
  });

  const up = await ctl('up', '-f', dir, '--nodes', '2', '--timeout', String(UP_TIMEOUT_S));
  t.log(up.stdout);
  t.is(up.code, 0, up.stderr);
  const kubeconfig = /^export KUBECONFIG=(.+)$/m.exec(up.stdout)?.[1];
  t.is(kubeconfig, path.join(runDir, 'kubeconfig'), 'up prints the export line for the run directory kubeconfig');
  t.is((await stat(kubeconfig!)).mode & 0o777, 0o600, 'the kubeconfig holds a token: owner only');
  t.regex((await ctl('status')).stdout, new RegExp(`kubeconfig:\\s+${kubeconfig}`));
  const state = JSON.parse(await readFile(path.join(runDir, 'state.json'), 'utf8')) as LocalState;
  t.regex(await readFile(state.controlPlaneLog!, 'utf8'), /"source":\{"type":"kubernetes","kubeconfig":"[^"]+kubeconfig-controlplane"\}/, 'the control plane reads the cluster through the API');

  // As the user would: the exported KUBECONFIG, kubectl's own cache out of the way of root's home.
  const kubectl = (args: string[], input?: string) =>
    run(KUBECTL, ['--cache-dir', cacheDir, '--request-timeout', '60s', ...args], { env: { ...process.env, KUBECONFIG: kubeconfig! }, timeoutMs: WAIT_MS, ...(input !== undefined ? { input } : {}) });
  const ok = async (args: string[], input?: string): Promise<string> => {
    const result = await kubectl(args, input);
    t.is(result.code, 0, `kubectl ${args.join(' ')}: ${result.stderr}`);
    return result.stdout;
  };
  const waitFor = async (what: string, done: () => Promise<boolean>): Promise<void> => {
    const deadline = Date.now() + WAIT_MS;
    while (!(await done())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
  };

  // get pods -A -o wide: both pods Running and Ready, with the IPs and nodes the runtime gave them.
  const wide = (await ok(['get', 'pods', '-A', '-o', 'wide'])).trim().split('\n');
  t.regex(wide[0]!, /^NAMESPACE\s+NAME\s+READY\s+STATUS\s+RESTARTS\s+AGE\s+IP\s+NODE\b/);
  t.is(wide.length, 3, wide.join('\n'));
  for (const pod of state.pods) {
    const row = wide.find((line) => line.startsWith(`${pod.namespace} `) && line.split(/\s+/)[1] === pod.name);
    t.truthy(row, `${pod.namespace}/${pod.name} is listed`);
    t.regex(row!, new RegExp(`^${pod.namespace}\\s+${pod.name}\\s+1/1\\s+Running\\s+0\\s+\\S+\\s+${pod.ip.replaceAll('.', '\\.')}\\s+${pod.node}\\s`));
  }
  t.truthy(state.pods.find((pod) => /^echo-[a-z0-9]{10}-[a-z0-9]{5}$/.test(pod.name)), 'the Deployment made its pod');

  const svc = await ok(['get', 'svc', '-n', 'shop']);
  t.regex(svc, /^echo\s+ClusterIP\s+10\.240\.\d+\.\d+\s+<none>\s+80\/TCP\s/m, svc);
  t.regex(await ok(['get', 'deployments', '-n', 'shop']), /^echo\s+1\/1\s+1\s+1\s/m);
  const policies = await ok(['get', 'authorizationpolicies', '-A']);
  t.regex(policies, /^shop\s+echo-from-shop\s/m, policies);
  t.regex(await ok(['get', 'nodes']), /^ambit-node1\s+Ready\s/m);

  // label namespace: the user's Namespace document is edited (its comment kept), and shop's pods are captured.
  const redirection = async (): Promise<string> => (await kubectl(['get', 'pod', 'sleep', '-n', 'shop', '-o', 'jsonpath={.metadata.annotations.ambient\\.istio\\.io/redirection}'])).stdout;
  t.is(await redirection(), '', 'shop is not enrolled yet');
  t.regex(await ok(['label', 'namespace', 'shop', 'istio.io/dataplane-mode=ambient']), /namespace\/shop labeled/);
  const namespaces = await readFile(path.join(dir, 'namespaces.yaml'), 'utf8');
  t.regex(namespaces, /^# Two namespaces, neither enrolled/, 'the file keeps its comment');
  t.regex(namespaces, /name: shop\n\s+labels:\n\s+istio\.io\/dataplane-mode: ambient/, namespaces);
  await waitFor('shop/sleep captured', async () => (await redirection()) === 'enabled');
  t.regex(await ok(['get', 'namespace', 'shop', '--show-labels']), /istio\.io\/dataplane-mode=ambient/);
  // The label reached the agents through the control plane's Kubernetes source: both shop pods are HBONE workloads.
  const sleepState = state.pods.find((pod) => pod.name === 'sleep')!;
  await waitFor('the agents see shop enrolled', async () => {
    const workloads = await run(AMBITCTL, ['workloads', '-n', 'shop', '--node', state.nodes.find((node) => node.name === sleepState.node)!.netns]);
    return (workloads.stdout.match(/\sHBONE\s/g)?.length ?? 0) === 2;
  });
  const call = await ctl('exec', 'sleep', '-n', 'shop', '--', 'curl', '-s', '--max-time', '10', 'http://echo.shop/through-the-mesh');
  t.is(call.code, 0, call.stderr);
  t.like(JSON.parse(call.stdout), { peer: sleepState.ip, url: '/through-the-mesh' });
  const sleepAgentLog = await readFile(state.nodes.find((node) => node.name === sleepState.node)!.agentLog, 'utf8');
  t.regex(sleepAgentLog, /"direction":"outbound","src":\{[^}]*"workload":"sleep","namespace":"shop","principal":"spiffe:\/\/cluster\.local\/ns\/shop\/sa\/default"\}.*"service":"echo\.shop\.svc\.cluster\.local".*"mtls":true/);

  // apply a new Pod: it lands as a file of the directory, runs, logs; delete removes it and its network namespace.
  t.regex(await ok(['apply', '-f', '-'], WEB_POD), /pod\/web created/);
  t.true(existsSync(path.join(dir, 'ops.pod.web.yaml')), 'the applied Pod is a file of the directory');
  t.regex(await ok(['wait', '--for=condition=Ready', 'pod/web', '-n', 'ops', '--timeout=90s']), /pod\/web condition met/);
  const webState = (JSON.parse(await readFile(path.join(runDir, 'state.json'), 'utf8')) as LocalState).pods.find((pod) => pod.name === 'web')!;
  t.regex(await ok(['get', 'pod', 'web', '-n', 'ops', '-o', 'wide']), new RegExp(`web\\s+1/1\\s+Running\\s+0\\s+\\S+\\s+${webState.ip.replaceAll('.', '\\.')}\\s`));
  t.true((await listNetns()).includes(webState.netns));
  await waitFor('web logged', async () => (await kubectl(['logs', 'web', '-n', 'ops'])).stdout.includes('web says hello from ops'));
  t.is(await ok(['logs', 'sleep', '-n', 'shop']), 'sleep sleep up in shop\n');
  t.regex(await ok(['apply', '-f', '-'], WEB_POD), /pod\/web unchanged/);

  t.regex(await ok(['delete', 'pod', 'web', '-n', 'ops']), /pod "web" deleted/);
  t.false(existsSync(path.join(dir, 'ops.pod.web.yaml')));
  t.regex((await kubectl(['get', 'pods', '-n', 'ops'])).stderr, /No resources found in ops namespace/);
  t.false((await listNetns()).includes(webState.netns), 'the pod network namespace is gone');

  // delete pod on a Deployment's replica: the Deployment makes a new one under a new name, as in a cluster.
  const replica = state.pods.find((pod) => /^echo-[a-z0-9]{10}-[a-z0-9]{5}$/.test(pod.name))!;
  t.regex(await ok(['delete', 'pod', replica.name, '-n', 'shop']), new RegExp(`pod "${replica.name}" deleted`));
  await waitFor('a new echo replica', async () => {
    const names = (await ok(['get', 'pods', '-n', 'shop', '-o', 'jsonpath={.items[*].metadata.name}'])).split(' ');
    return !names.includes(replica.name) && names.some((name) => name.startsWith(replica.name.slice(0, 'echo-'.length + 10)));
  });

  // Refused writes leave the directory as it was, and say why.
  const before = (await readdir(dir)).sort();
  const noCommand = await kubectl(['apply', '-f', '-'], 'apiVersion: v1\nkind: Pod\nmetadata: {name: nocmd, namespace: ops}\nspec:\n  containers: [{name: app, image: nginx}]\n');
  t.is(noCommand.code, 1);
  t.regex(noCommand.stderr, /pod ops\/nocmd, container app: image "nginx" has no command/);
  const badPolicy = await kubectl(['apply', '-f', '-'], 'apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: typo, namespace: shop}\nspec:\n  action: DENY\n  rules: [{from: [{source: {principal: [x]}}]}]\n');
  t.is(badPolicy.code, 1);
  t.regex(badPolicy.stderr, /denied the request: .*principal/);
  t.deepEqual((await readdir(dir)).sort(), before, 'nothing refused is left in the directory');
  t.regex((await kubectl(['get', 'pod', 'nocmd', '-n', 'ops'])).stderr, /NotFound/);

  // The token is what lets a client in.
  const stranger = path.join(cacheDir, 'stranger.kubeconfig');
  await writeFile(stranger, (await readFile(kubeconfig!, 'utf8')).replace(/token: \S+/, 'token: not-the-token'));
  const refused = await run(KUBECTL, ['--kubeconfig', stranger, '--cache-dir', cacheDir, 'get', 'pods', '-A'], { timeoutMs: WAIT_MS });
  t.is(refused.code, 1);
  t.regex(refused.stderr, /Unauthorized/);

  const down = await ctl('down');
  t.is(down.code, 0, down.stderr);
  t.false(existsSync(kubeconfig!), 'down removes the kubeconfig with the run directory');
});
