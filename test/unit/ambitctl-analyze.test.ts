// `ambitctl analyze`: each finding (controlplane/analysis/analyzer.ts) on a configuration that has exactly that
// problem, and gone once the problem is fixed the way a user would fix it; then the command itself on a cluster
// directory (istioctl's line format with file:line, exit 1 on errors, 0 and the ✔ line when clean, JSON) and on
// an API server through a kubeconfig (the stand-in API server, test/helpers/kube-api-server.ts).
import test from 'ava';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { stringify } from 'yaml';
import { analyze } from '../../controlplane/analysis/analyzer.ts';
import { runAmbitctl } from '../../ambitctl/main.ts';
import type { K8sObject } from '../../shared/k8s/objects.ts';
import { FakeKubeApiServer } from '../helpers/kube-api-server.ts';

type Objects = K8sObject[];
const NS = 'shop';

const namespace = (name: string, labels: Record<string, string> = {}): K8sObject => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels } });
const service = (name: string, labels: Record<string, string> = {}, ns = NS): K8sObject => ({ apiVersion: 'v1', kind: 'Service', metadata: { name, namespace: ns, labels }, spec: { selector: { app: name }, ports: [{ port: 80 }] } });
const gateway = (name: string, gatewayClassName = 'istio-waypoint'): K8sObject => ({ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'Gateway', metadata: { name, namespace: NS }, spec: { gatewayClassName, listeners: [{ name: 'mesh', port: 15008, protocol: 'HBONE' }] } });
const serviceRef = (name: string) => ({ group: '', kind: 'Service', name });
const gatewayRef = (name: string) => ({ group: 'gateway.networking.k8s.io', kind: 'Gateway', name });
const authz = (spec: Record<string, unknown>, name = 'allow-get'): K8sObject => ({ apiVersion: 'security.istio.io/v1', kind: 'AuthorizationPolicy', metadata: { name, namespace: NS }, spec });
const rateLimit = (spec: Record<string, unknown>): K8sObject => ({ apiVersion: 'policy.ambit.dev/v1alpha1', kind: 'LocalRateLimitPolicy', metadata: { name: 'per-client', namespace: NS }, spec });
const route = (parentRefs: unknown[] | undefined, name = 'web'): K8sObject => ({ apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name, namespace: NS }, spec: { ...(parentRefs ? { parentRefs } : {}), rules: [{ backendRefs: [{ name: 'web', port: 80 }] }] } });
const destinationRule = (subsets: string[]): K8sObject => ({ apiVersion: 'networking.istio.io/v1', kind: 'DestinationRule', metadata: { name: 'web', namespace: NS }, spec: { host: 'web', subsets: subsets.map((name) => ({ name, labels: { version: name } })) } });
const virtualService = (subsets: string[]): K8sObject => ({ apiVersion: 'networking.istio.io/v1', kind: 'VirtualService', metadata: { name: 'web', namespace: NS }, spec: { hosts: ['web'], http: [{ route: subsets.map((subset) => ({ destination: { host: `web.${NS}.svc.cluster.local`, subset } })) }] } });

/** A configuration with nothing to report: every policy, route and subset in use, the waypoint bound. */
function clean(): Objects {
  return [
    namespace(NS, { 'istio.io/dataplane-mode': 'ambient' }),
    gateway('waypoint'),
    service('web', { 'istio.io/use-waypoint': 'waypoint' }),
    authz({ targetRefs: [serviceRef('web')], action: 'ALLOW', rules: [{ to: [{ operation: { methods: ['GET'] } }] }] }),
    { apiVersion: 'security.istio.io/v1', kind: 'RequestAuthentication', metadata: { name: 'jwt', namespace: NS }, spec: { targetRefs: [gatewayRef('waypoint')], jwtRules: [{ issuer: 'https://issuer.example', jwksUri: 'https://issuer.example/jwks' }] } },
    rateLimit({ targetRefs: [serviceRef('web')], limits: [{ requests: 10, unit: 'Second' }] }),
    route([serviceRef('web')]),
    destinationRule(['v1', 'v2']),
    virtualService(['v1', 'v2']),
  ];
}

function replace(objects: Objects, kind: string, name: string, next: K8sObject | undefined): Objects {
  const index = objects.findIndex((object) => object.kind === kind && object.metadata?.name === name);
  const copy = [...objects];
  if (index < 0) {
    if (next) copy.push(next);
  } else if (next) {
    copy[index] = next;
  } else {
    copy.splice(index, 1);
  }
  return copy;
}

const summary = (objects: Objects) => analyze(objects).map((message) => `${message.level} [${message.code}] (${message.resource.kind} ${message.resource.namespace ? `${message.resource.namespace}/` : ''}${message.resource.name}) ${message.message}`);

test('a clean configuration has no findings', (t) => {
  t.deepEqual(summary(clean()), []);
});

interface Case {
  title: string;
  broken: (objects: Objects) => Objects;
  finding: RegExp;
  fixed: (objects: Objects) => Objects;
}

const CASES: Case[] = [
  {
    title: 'an AuthorizationPolicy targeting a Service that does not exist (fixed by creating it, bound to the waypoint)',
    broken: (objects) => replace(objects, 'AuthorizationPolicy', 'allow-get', authz({ targetRefs: [serviceRef('api')], rules: [{}] })),
    finding: /^Error \[IST0101\] \(AuthorizationPolicy shop\/allow-get\) Referenced Service not found: "shop\/api"$/,
    fixed: (objects) => [...objects, service('api', { 'istio.io/use-waypoint': 'waypoint' })],
  },
  {
    title: 'a RequestAuthentication targeting a Gateway that does not exist (fixed by targeting the waypoint)',
    broken: (objects) => objects.map((object) => (object.kind === 'RequestAuthentication' ? { ...object, spec: { ...(object.spec as object), targetRefs: [gatewayRef('waypoint-2')] } } : object)),
    finding: /^Error \[IST0101\] \(RequestAuthentication shop\/jwt\) Referenced Gateway not found: "shop\/waypoint-2"$/,
    fixed: (objects) => objects.map((object) => (object.kind === 'RequestAuthentication' ? { ...object, spec: { ...(object.spec as object), targetRefs: [gatewayRef('waypoint')] } } : object)),
  },
  {
    title: 'a LocalRateLimitPolicy on a Service no waypoint serves (fixed by labelling the Service)',
    broken: (objects) => [...replace(objects, 'LocalRateLimitPolicy', 'per-client', rateLimit({ targetRefs: [serviceRef('db')], limits: [{ requests: 1, unit: 'Minute' }] })), service('db')],
    finding: /^Warning \[AMB0004\] \(LocalRateLimitPolicy shop\/per-client\) Service shop\/db is bound to no waypoint .*not enforced$/,
    fixed: (objects) => replace(objects, 'Service', 'db', service('db', { 'istio.io/use-waypoint': 'waypoint' })),
  },
  {
    title: 'an HTTPRoute with no parentRefs (fixed by attaching it to the Service)',
    broken: (objects) => replace(objects, 'HTTPRoute', 'web', route(undefined)),
    finding: /^Warning \[AMB0005\] \(HTTPRoute shop\/web\) the route has no parentRefs: it is attached to nothing$/,
    fixed: (objects) => replace(objects, 'HTTPRoute', 'web', route([serviceRef('web')])),
  },
  {
    title: 'an HTTPRoute whose parent Service does not exist (fixed by creating it)',
    broken: (objects) => replace(objects, 'HTTPRoute', 'web', route([serviceRef('web'), serviceRef('web-canary')])),
    finding: /^Error \[IST0101\] \(HTTPRoute shop\/web\) Referenced Service not found: "shop\/web-canary"$/,
    fixed: (objects) => [...objects, service('web-canary', { 'istio.io/use-waypoint': 'waypoint' })],
  },
  {
    title: 'a DestinationRule subset no route uses (fixed by routing to it)',
    broken: (objects) => replace(objects, 'DestinationRule', 'web', destinationRule(['v1', 'v2', 'v3'])),
    finding: /^Warning \[AMB0002\] \(DestinationRule shop\/web\) subset "v3" \(spec\.subsets\[2\]\) of host web\.shop\.svc\.cluster\.local is used by no route$/,
    fixed: (objects) => replace(objects, 'VirtualService', 'web', virtualService(['v1', 'v2', 'v3'])),
  },
  {
    title: 'a VirtualService routing to a subset no DestinationRule defines (fixed by defining it)',
    broken: (objects) => replace(objects, 'VirtualService', 'web', virtualService(['v1', 'v2', 'v9'])),
    finding: /^Error \[IST0101\] \(VirtualService shop\/web\) Referenced host\+subset in destinationrule not found: "web\.shop\.svc\.cluster\.local\+v9"$/,
    fixed: (objects) => replace(objects, 'DestinationRule', 'web', destinationRule(['v1', 'v2', 'v9'])),
  },
  {
    title: 'a waypoint nothing is bound to (fixed by binding a Service to it)',
    broken: (objects) => [...objects, gateway('idle')],
    finding: /^Warning \[AMB0001\] \(Gateway shop\/idle\) waypoint shop\/idle is used by nothing: no Namespace, Service or Pod has istio\.io\/use-waypoint: idle/,
    fixed: (objects) => [...objects, service('batch', { 'istio.io/use-waypoint': 'idle' })],
  },
  {
    title: 'a Service bound to a waypoint that does not exist (fixed by creating the waypoint)',
    broken: (objects) => [...objects, service('cart', { 'istio.io/use-waypoint': 'cart-waypoint' })],
    finding: /^Error \[IST0101\] \(Service shop\/cart\) Referenced waypoint not found: "shop\/cart-waypoint"/,
    fixed: (objects) => [...objects, gateway('cart-waypoint')],
  },
  {
    title: 'a Namespace bound to a waypoint that does not exist (fixed by creating the waypoint)',
    broken: (objects) => replace(objects, 'Namespace', NS, namespace(NS, { 'istio.io/use-waypoint': 'ns-waypoint' })),
    finding: /^Error \[IST0101\] \(Namespace shop\) Referenced waypoint not found: "shop\/ns-waypoint"/,
    fixed: (objects) => [...objects, gateway('ns-waypoint')],
  },
  {
    title: 'use-waypoint naming a Gateway that is not a waypoint (fixed by its class)',
    broken: (objects) => [...objects, gateway('ingress', 'istio'), service('front', { 'istio.io/use-waypoint': 'ingress' })],
    finding: /^Error \[AMB0007\] \(Service shop\/front\) istio\.io\/use-waypoint names Gateway shop\/ingress, whose gatewayClassName is not istio-waypoint/,
    fixed: (objects) => replace(objects, 'Gateway', 'ingress', gateway('ingress')),
  },
  {
    title: 'an AuthorizationPolicy with action CUSTOM (fixed by DENY)',
    broken: (objects) => [...objects, authz({ targetRefs: [serviceRef('web')], action: 'CUSTOM', provider: { name: 'opa' }, rules: [{ to: [{ operation: { paths: ['/admin*'] } }] }] }, 'ext-authz')],
    finding: /^Error \[AMB0003\] \(AuthorizationPolicy shop\/ext-authz\) action CUSTOM \(provider opa\) is not supported: .*the waypoint denies every request its rules match$/,
    fixed: (objects) => replace(objects, 'AuthorizationPolicy', 'ext-authz', authz({ targetRefs: [serviceRef('web')], action: 'DENY', rules: [{ to: [{ operation: { paths: ['/admin*'] } }] }] }, 'ext-authz')),
  },
  {
    title: 'an invalid LocalRateLimitPolicy, reported with the field path (fixed by a valid unit)',
    broken: (objects) => replace(objects, 'LocalRateLimitPolicy', 'per-client', rateLimit({ targetRefs: [serviceRef('web')], limits: [{ requests: 10, unit: 'Fortnight' }] })),
    finding: /^Error \[IST0106\] \(LocalRateLimitPolicy shop\/per-client\) Schema validation error: spec\.limits\[0\]\.unit: /,
    fixed: (objects) => replace(objects, 'LocalRateLimitPolicy', 'per-client', rateLimit({ targetRefs: [serviceRef('web')], limits: [{ requests: 10, unit: 'Second' }] })),
  },
  {
    title: 'an invalid AuthorizationPolicy, reported with the field path (fixed by the field name)',
    broken: (objects) => replace(objects, 'AuthorizationPolicy', 'allow-get', authz({ targetRefs: [serviceRef('web')], rules: [{ to: [{ operation: { methodz: ['GET'] } }] }] })),
    finding: /^Error \[IST0106\] \(AuthorizationPolicy shop\/allow-get\) Schema validation error: spec\.rules\[0\]\.to\[0\]\.operation.*methodz/,
    fixed: (objects) => replace(objects, 'AuthorizationPolicy', 'allow-get', authz({ targetRefs: [serviceRef('web')], rules: [{ to: [{ operation: { methods: ['GET'] } }] }] })),
  },
  {
    title: 'an invalid PeerAuthentication, reported with the field path (fixed by a valid mode)',
    broken: (objects) => [...objects, { apiVersion: 'security.istio.io/v1', kind: 'PeerAuthentication', metadata: { name: 'strict', namespace: NS }, spec: { mtls: { mode: 'STRICTEST' } } }],
    finding: /^Error \[IST0106\] \(PeerAuthentication shop\/strict\) Schema validation error: spec\.mtls\.mode: /,
    fixed: (objects) => replace(objects, 'PeerAuthentication', 'strict', { apiVersion: 'security.istio.io/v1', kind: 'PeerAuthentication', metadata: { name: 'strict', namespace: NS }, spec: { mtls: { mode: 'STRICT' } } }),
  },
  {
    title: 'a misspelt field on a Service (fixed by its spelling)',
    broken: (objects) => replace(objects, 'Service', 'web', { ...service('web', { 'istio.io/use-waypoint': 'waypoint' }), spec: { selectr: { app: 'web' }, ports: [{ port: 80 }] } }),
    finding: /^Error \[IST0106\] \(Service shop\/web\) Schema validation error: unknown field "spec\.selectr" in Service$/,
    fixed: (objects) => replace(objects, 'Service', 'web', service('web', { 'istio.io/use-waypoint': 'waypoint' })),
  },
  {
    title: 'a policy target in another namespace, ignored (fixed by a target in its own)',
    broken: (objects) => replace(objects, 'AuthorizationPolicy', 'allow-get', authz({ targetRefs: [{ ...serviceRef('web'), namespace: 'other' }], rules: [{}] })),
    finding: /^Warning \[AMB0006\] \(AuthorizationPolicy shop\/allow-get\) .*targets must be in the policy's own namespace shop, not other; ignored$/,
    fixed: (objects) => replace(objects, 'AuthorizationPolicy', 'allow-get', authz({ targetRefs: [serviceRef('web')], rules: [{}] })),
  },
];

for (const { title, broken, finding, fixed } of CASES) {
  test(`finding: ${title}`, (t) => {
    const before = summary(broken(clean()));
    t.true(before.some((line) => finding.test(line)), `expected ${finding} in:\n${before.join('\n')}`);
    t.deepEqual(summary(fixed(broken(clean()))), [], 'gone once fixed');
  });
}

function io() {
  const out: string[] = [];
  const err: string[] = [];
  return { out, err, io: { stdout: (text: string) => void out.push(text), stderr: (text: string) => void err.push(text) } };
}

async function clusterDir(t: { teardown(fn: () => Promise<void>): void }, files: Record<string, Objects>): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), 'ambit-analyze-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  for (const [name, objects] of Object.entries(files)) await writeFile(path.join(dir, name), objects.map((object) => stringify(object)).join('---\n'));
  return dir;
}

test('ambitctl analyze --cluster-dir: istioctl lines with file:line, exit 1 on an error; clean is exit 0 with the ✔ line', async (t) => {
  const broken = [...clean(), authz({ targetRefs: [serviceRef('api')], rules: [{}] }, 'api-policy')];
  const dir = await clusterDir(t, { 'mesh.yaml': clean(), 'policies.yaml': [broken.at(-1)!] });
  const run = io();
  t.is(await runAmbitctl(['analyze', '--cluster-dir', dir], run.io, {}), 1);
  t.deepEqual(run.out.join('').split('\n'), [
    `Error [IST0101] (AuthorizationPolicy shop/api-policy ${path.join(dir, 'policies.yaml')}:1) Referenced Service not found: "shop/api"`,
    'Error: Analyzers found issues when analyzing all namespaces.',
    '',
  ]);
  const json = io();
  t.is(await runAmbitctl(['analyze', '--cluster-dir', dir, '-o', 'json'], json.io, {}), 1);
  t.like(JSON.parse(json.out.join('')), [{ code: 'IST0101', level: 'Error', origin: 'AuthorizationPolicy shop/api-policy', reference: `${path.join(dir, 'policies.yaml')}:1` }]);
  const other = io();
  t.is(await runAmbitctl(['analyze', '--cluster-dir', dir, '-n', 'elsewhere'], other.io, {}), 0, 'another namespace has nothing');
  t.is(other.out.join(''), '✔ No validation issues found when analyzing namespace: elsewhere.\n');

  const cleanDir = await clusterDir(t, { 'mesh.yaml': clean() });
  const ok = io();
  t.is(await runAmbitctl(['analyze', '--cluster-dir', cleanDir], ok.io, {}), 0);
  t.is(ok.out.join(''), '✔ No validation issues found when analyzing all namespaces.\n');

  const warnOnly = await clusterDir(t, { 'mesh.yaml': [...clean(), gateway('idle')] });
  const warned = io();
  t.is(await runAmbitctl(['analyze', '--cluster-dir', warnOnly], warned.io, {}), 0, 'warnings alone exit 0');
  t.regex(warned.out.join(''), /^Warning \[AMB0001\] \(Gateway shop\/idle .*mesh\.yaml:\d+\) waypoint shop\/idle is used by nothing/);
});

test('ambitctl analyze --kubeconfig reads the API server: a RequestAuthentication there targeting a missing Service is an error', async (t) => {
  const api = await FakeKubeApiServer.start();
  t.teardown(() => api.close());
  for (const object of clean().filter((candidate) => ['Namespace', 'Service', 'Gateway', 'AuthorizationPolicy', 'RequestAuthentication', 'LocalRateLimitPolicy'].includes(candidate.kind!))) api.apply(object);
  const dir = await mkdtemp(path.join(tmpdir(), 'ambit-analyze-kube-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const kubeconfig = path.join(dir, 'kubeconfig');
  await writeFile(kubeconfig, api.kubeConfigYaml());
  const ok = io();
  t.is(await runAmbitctl(['analyze', '--kubeconfig', kubeconfig], ok.io, {}), 0, ok.out.join('') + ok.err.join(''));
  t.regex(ok.out.join(''), /^✔ No validation issues found when analyzing all namespaces\.\n\(not served by the API server, not analyzed: /);

  api.apply({ apiVersion: 'security.istio.io/v1', kind: 'RequestAuthentication', metadata: { name: 'jwt-api', namespace: NS }, spec: { targetRefs: [serviceRef('api')], jwtRules: [{ issuer: 'https://issuer.example', jwksUri: 'https://issuer.example/jwks' }] } });
  const broken = io();
  t.is(await runAmbitctl(['analyze', '--kubeconfig', kubeconfig], broken.io, {}), 1);
  t.regex(broken.out.join(''), /^Error \[IST0101\] \(RequestAuthentication shop\/jwt-api\) Referenced Service not found: "shop\/api"\n/);
});
