/**
 * Planning a user's directory for `ambitctl local up` (runtime/workloads/manifests.ts, image-map.ts): Deployments
 * expand into hash-named pods with owner and label, the image map and a container's own command combine as in
 * Kubernetes, the downward API is accepted and anything else refused, and each bad document is one problem with
 * file, line and reason while the rest is planned.
 */
import test from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { containerArgv, DEFAULT_IMAGE_MAP, imageName, readImageMap } from '../../runtime/workloads/image-map.ts';
import { planWorkloads, replacementReplica } from '../../runtime/workloads/manifests.ts';

async function plan(files: Record<string, string>) {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ambit-plan-'));
  try {
    for (const [name, text] of Object.entries(files)) await writeFile(path.join(dir, name), text);
    return { dir, plan: await planWorkloads(dir, await readImageMap(DEFAULT_IMAGE_MAP)) };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const deployment = (replicas: number, image = 'ambit/echo-server') => `apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: ${replicas}
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - {name: web, image: ${image}}
`;

test('a Deployment becomes replicas pods named <name>-<hash>-<suffix> with the hash label and a ReplicaSet owner', async (t) => {
  const { plan: result } = await plan({ 'web.yaml': deployment(3) });
  t.deepEqual(result.problems, []);
  t.is(result.pods.length, 3);
  const names = result.pods.map((pod) => pod.object.metadata.name);
  t.is(new Set(names).size, 3);
  const hash = names[0]!.split('-')[1]!;
  for (const pod of result.pods) {
    t.regex(pod.object.metadata.name, new RegExp(`^web-${hash}-[bcdfghjklmnpqrstvwxz2456789]{5}$`));
    t.deepEqual(pod.object.metadata.labels, { app: 'web', 'pod-template-hash': hash });
    t.like((pod.object.metadata as unknown as { ownerReferences: unknown[] }).ownerReferences[0], { kind: 'ReplicaSet', name: `web-${hash}` });
    t.is(pod.object.metadata.namespace, 'shop');
  }
  const changed = await plan({ 'web.yaml': deployment(1, 'busybox') });
  t.not(changed.plan.pods[0]!.object.metadata.name.split('-')[1], hash, 'a new template is a new hash');
});

test('an image with no command and no image-map entry is a problem naming the pod, file and line; the rest is planned', async (t) => {
  const { dir, plan: result } = await plan({
    'a.yaml': `apiVersion: v1\nkind: Pod\nmetadata: {name: ok}\nspec:\n  containers: [{name: c, image: busybox}]\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: nginx, namespace: web}\nspec:\n  containers: [{name: c, image: nginx}]\n`,
    'b.yaml': 'kind: Pod\nmetadata: {name: broken\n',
  });
  t.deepEqual(result.pods.map((pod) => `${pod.object.metadata.namespace}/${pod.object.metadata.name}`), ['default/ok']);
  t.is(result.problems.length, 2, result.problems.join('\n'));
  t.true(result.problems[0]!.startsWith(`${path.join(dir, 'b.yaml')}:`), result.problems[0]);
  t.true(result.problems[1]!.startsWith(`${path.join(dir, 'a.yaml')}:6: pod web/nginx, container c: image "nginx" has no command`), result.problems[1]);
});

test('command and args combine with the image map as Kubernetes combines them with an image', async (t) => {
  const map = await readImageMap(DEFAULT_IMAGE_MAP);
  t.is(imageName('ambit/echo-server:1.2'), 'ambit/echo-server');
  t.is(imageName('registry:5000/busybox@sha256:abc'), 'registry:5000/busybox');
  const echo = containerArgv(map, { image: 'ambit/echo-server:1.2' })!;
  t.is(echo[0], process.execPath);
  t.true(echo[1]!.endsWith('runtime/apps/echo-server.ts'));
  t.deepEqual(echo.slice(2), ['--port', '8080', '--http']);
  t.deepEqual(containerArgv(map, { image: 'ambit/echo-server', args: ['--port', '9'] })!.slice(2), ['--port', '9'], 'args replace the image arguments');
  t.deepEqual(containerArgv(map, { image: 'busybox', command: ['true'] }), ['true'], 'command replaces entrypoint and arguments');
  t.is(containerArgv(map, { image: 'nginx' }), undefined);
});

test('env accepts values and the downward API, and refuses other sources with the reason', async (t) => {
  const pod = (env: string) => `apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    command: [env]\n    env: ${env}\n`;
  const good = await plan({ 'p.yaml': pod('[{name: A, value: 1}, {name: N, valueFrom: {fieldRef: {fieldPath: status.podIP}}}]') });
  t.deepEqual(good.plan.pods[0]!.containers[0]!.env, [['A', { value: '1' }], ['N', { field: 'status.podIP' }]]);
  const bad = await plan({ 'p.yaml': pod('[{name: S, valueFrom: {secretKeyRef: {name: s, key: k}}}]') });
  t.is(bad.plan.pods.length, 0);
  t.regex(bad.plan.problems[0]!, /env S: only valueFrom.fieldRef with metadata.name/);
});

test('pods of the same name in two namespaces get different, short network namespace names', async (t) => {
  const { podNetnsName, runPrefix } = await import('../../runtime/topology.ts');
  const foo = podNetnsName('abc123', 'foo', 'sleep');
  const bar = podNetnsName('abc123', 'bar', 'sleep');
  t.not(foo, bar);
  t.is(foo, podNetnsName('abc123', 'foo', 'sleep'), 'stable for one pod');
  t.true(foo.startsWith(runPrefix('abc123')), 'inside the run prefix, so teardown and the reaper find it');
  t.true(podNetnsName('abc123', 'a-namespace-of-sixty-three-characters-is-allowed-in-kubernetes', 'and-so-is-a-pod-name-of-sixty-three-characters-long-as-this-one').length <= 32);
});

test('a Deployment is checked as the API server checks it: a selector that matches the template, restartPolicy Always', async (t) => {
  const noSelector = await plan({ 'web.yaml': deployment(2).replace('  selector: {matchLabels: {app: web}}\n', '') });
  t.deepEqual(noSelector.plan.pods, []);
  t.regex(noSelector.plan.problems[0]!, /web\.yaml:1: deployment shop\/web: spec\.selector\.matchLabels is missing/);
  const mismatch = await plan({ 'web.yaml': deployment(2).replace('matchLabels: {app: web}', 'matchLabels: {app: api}') });
  t.deepEqual(mismatch.plan.pods, []);
  t.regex(mismatch.plan.problems[0]!, /spec\.selector\.matchLabels app=api does not match the template's labels/);
  const onFailure = await plan({ 'web.yaml': deployment(2).replace('    spec:\n', '    spec:\n      restartPolicy: OnFailure\n') });
  t.deepEqual(onFailure.plan.pods, []);
  t.regex(onFailure.plan.problems[0]!, /restartPolicy must be Always/);
});

test('a deleted replica is replaced by a pod of the same template and plan key under a new name', async (t) => {
  const { plan: result } = await plan({ 'web.yaml': deployment(1) });
  const original = result.pods[0]!;
  const replacement = replacementReplica(original);
  const hash = original.object.metadata.name.split('-')[1]!;
  t.regex(replacement.object.metadata.name, new RegExp(`^web-${hash}-[bcdfghjklmnpqrstvwxz2456789]{5}$`));
  t.not(replacement.object.metadata.name, original.object.metadata.name);
  t.is(replacement.key, original.key, 'the same replica slot: a re-read of the directory keeps it');
  t.deepEqual(replacement.object.metadata.labels, original.object.metadata.labels);
  t.deepEqual(replacement.object.spec, original.object.spec);
  const bare = await plan({ 'p.yaml': 'apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: busybox}]\n' });
  t.throws(() => replacementReplica(bare.plan.pods[0]!), { message: /pod default\/p is not a Deployment's replica/ });
});

test('a readiness probe is repeated at its periodSeconds once Ready (Kubernetes default 10 s)', async (t) => {
  const pod = (probe: string) => `apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - name: c\n    image: busybox\n    ${probe}\n`;
  t.is((await plan({ 'p.yaml': pod('ports: [{containerPort: 80}]') })).plan.pods[0]!.containers[0]!.probePeriodMs, 10_000);
  t.is((await plan({ 'p.yaml': pod('readinessProbe: {tcpSocket: {port: 80}, periodSeconds: 3}') })).plan.pods[0]!.containers[0]!.probePeriodMs, 3_000);
  t.regex((await plan({ 'p.yaml': pod('readinessProbe: {tcpSocket: {port: 80}, periodSeconds: 0}') })).plan.problems[0]!, /periodSeconds must be a number of at least 1/);
});

test("a Pod's labels and annotations are not part of its plan key (updated in place); any other change is (made again)", async (t) => {
  const web = (labels: string, annotations: string, image: string) => `apiVersion: v1
kind: Pod
metadata: {name: web, namespace: shop, labels: {${labels}}, annotations: {${annotations}}}
spec:
  containers:
  - {name: web, image: ${image}}
`;
  const key = async (text: string) => (await plan({ 'web.yaml': text })).plan.pods[0]!.key;
  const first = await key(web('app: web', '', 'ambit/echo-server'));
  t.is(await key(web('app: web, istio.io/dataplane-mode: none', 'note: x', 'ambit/echo-server')), first);
  t.not(await key(web('app: web', '', 'busybox')), first, 'a new image is a new pod');
});
