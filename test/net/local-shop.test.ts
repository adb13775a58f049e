/**
 * The shop example (examples/shop/) as a user runs it: `ambitctl local up -f examples/shop` brings up three services
 * calling each other by Service name (frontend -> catalog and cart, cart -> catalog, catalog in versions v1 and v2)
 * across 2 nodes in an ambient namespace; a call from the sleep pod to the frontend by name comes back with the whole
 * chain answered, every hop carried over HBONE with the caller's SPIFFE identity (the destination agents' access logs
 * say so), and both catalog versions answer behind the one Service. It runs the control plane with the directory
 * source (`--control-plane-source dir`), the option beside the default Kubernetes source the other local tests use.
 */
import test from 'ava';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { run } from '../../runtime/exec.ts';
import { reapDeadRuns } from '../../runtime/run-registry.ts';
import type { LocalState } from '../../runtime/workloads/local-state.ts';

const REPO = path.resolve(import.meta.dirname, '..', '..');
const AMBITCTL = path.join(REPO, 'ambitctl', 'ambitctl');
const SHOP = path.join(REPO, 'examples', 'shop');
/** Two nodes, the control plane and eight pods (seven Node.js servers) on a loaded 2-core box. */
const UP_TIMEOUT_S = 300;

interface Answer {
  service: string;
  version?: string;
  pod: string;
  upstreams: { url: string; status?: number; error?: string; body?: Answer }[];
}

test('examples/shop: three services call each other by name over HBONE, both catalog versions answer', async (t) => {
  t.timeout((UP_TIMEOUT_S + 180) * 1000);
  const runDir = await mkdtemp(path.join(os.tmpdir(), 'ambit-shop-test-'));
  const ctl = (...args: string[]) => run(AMBITCTL, ['local', ...args], { env: { ...process.env, AMBIT_LOCAL_RUN_DIR: runDir }, timeoutMs: (UP_TIMEOUT_S + 30) * 1000 });
  t.teardown(async () => {
    await ctl('down');
    await reapDeadRuns();
    await rm(runDir, { recursive: true, force: true });
  });

  const up = await ctl('up', '-f', SHOP, '--nodes', '2', '--timeout', String(UP_TIMEOUT_S), '--control-plane-source', 'dir');
  t.is(up.code, 0, `${up.stdout}\n${up.stderr}`);
  t.regex(up.stdout, /local mesh up: 2 nodes, 8 pods ready\n/);
  // Ready pods become endpoints a moment after `up` returns (the runtime's Services read the pods' status).
  const wanted = { frontend: 2, cart: 2, catalog: 3, 'catalog-v1': 2, 'catalog-v2': 1 } as const;
  const readState = async () => JSON.parse(await readFile(path.join(runDir, 'state.json'), 'utf8')) as LocalState;
  const { controlPlaneLog } = await readState();
  t.regex(await readFile(controlPlaneLog!, 'utf8'), /"source":\{"type":"dir","dir":"[^"]+"\}/, 'the control plane reads the cluster state directory');
  t.regex((await ctl('status')).stdout, /control plane:\s+reads the cluster state directory/);
  for (const deadline = Date.now() + 60_000; ; ) {
    const services = (await readState()).services;
    if (Object.entries(wanted).every(([name, count]) => services.find((service) => service.name === name)?.endpoints === count)) break;
    if (Date.now() > deadline) throw new Error(`endpoints never matched: ${JSON.stringify(services)}`);
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  const svc = await ctl('get', 'svc', '-n', 'shop');
  for (const [name, endpoints] of Object.entries(wanted)) {
    t.regex(svc.stdout, new RegExp(`^shop\\s+${name}\\s+10\\.240\\.\\d+\\.\\d+\\s+8080->http/TCP\\s+\\S+\\s+${endpoints}$`, 'm'), svc.stdout);
  }

  const versions = new Set<string>();
  for (let call = 0; call < 8 && versions.size < 2; call++) {
    const reply = await ctl('exec', 'sleep', '-n', 'shop', '--', 'curl', '-s', '--max-time', '20', 'http://frontend:8080/');
    t.is(reply.code, 0, reply.stderr);
    const answer = JSON.parse(reply.stdout) as Answer;
    t.is(answer.service, 'frontend');
    const [catalog, cart] = answer.upstreams;
    t.like(catalog, { url: 'http://catalog:8080/', status: 200, body: { service: 'catalog' } }, reply.stdout);
    t.like(cart, { url: 'http://cart:8080/', status: 200, body: { service: 'cart' } }, reply.stdout);
    t.like(cart!.body!.upstreams[0], { status: 200, body: { service: 'catalog' } }, reply.stdout);
    versions.add(catalog!.body!.version!);
    versions.add(cart!.body!.upstreams[0]!.body!.version!);
  }
  t.deepEqual([...versions].sort(), ['v1', 'v2'], 'both catalog versions answer behind the catalog Service');

  // Every hop went over HBONE: the destination agents logged the callers' identities. A connection is logged when it
  // closes, and the apps keep theirs alive for a few seconds after the last call: read the logs until every hop is
  // there (or 30 s).
  const state = await readState();
  // (sleep runs as service account default)
  const hops = [['default', 'frontend'], ['frontend', 'catalog'], ['frontend', 'cart'], ['cart', 'catalog']] as const;
  const seen = (inbound: string[], caller: string, callee: string): boolean => {
    const from = new RegExp(`"src":\\{[^}]*"principal":"spiffe://cluster\\.local/ns/shop/sa/${caller}"`);
    const to = new RegExp(`"dst":\\{[^}]*"workload":"${callee}[-"]`);
    return inbound.some((line) => from.test(line) && to.test(line));
  };
  let inbound: string[] = [];
  for (const deadline = Date.now() + 30_000; ; ) {
    inbound = (await Promise.all(state.nodes.map((node) => readFile(node.agentLog, 'utf8'))))
      .join('\n')
      .split('\n')
      .filter((line) => line.includes('"connection closed"') && line.includes('"inbound"'));
    if (hops.every(([caller, callee]) => seen(inbound, caller, callee)) || Date.now() > deadline) break;
    await new Promise((resolve) => setTimeout(resolve, 500));
  }
  for (const [caller, callee] of hops) t.true(seen(inbound, caller, callee), `${caller} -> ${callee} arrived over HBONE with ${caller}'s identity`);
});
