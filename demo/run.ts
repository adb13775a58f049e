/**
 * `make demo`: a two-node ambit mesh on this machine, no Kubernetes, made from a directory of ordinary Kubernetes
 * YAML (demo/cluster/) by `ambitctl local up`, then checked the way a person would check it.
 *
 *   1. `ambitctl local up -f demo/cluster --nodes 2`: two nodes (network namespaces with a bridge each, joined by an
 *      underlay link), the ambit control plane (delta xDS + CA) and an agent per node; the pods through the CNI chain
 *      (Debian's reference plugins, then ambit's plugin). Namespace shop is enrolled (istio.io/dataplane-mode=ambient
 *      in its YAML), legacy is not; a server pod on node 2 behind Service `server`, two client pods on node 1.
 *   2. captures the node-to-node link with tcpdump while each client talks to the server by the Service's name
 *      (`ambitctl local exec` runs the sample client in the pod, with the pod's resolv.conf), then shows the SPIFFE
 *      identities on both ends (the agents' access logs and certificates) and what crossed the link: only TLS on
 *      port 15008 for the mesh client, plaintext for the legacy client.
 *   3. `ambitctl local down`: everything removed, CA key included.
 *
 *   node demo/run.ts [--keep]   (--keep: stay up until Ctrl-C, SIGTERM or SIGHUP, printing ambitctl commands for
 *                                this run)
 *
 * Ctrl-C, SIGTERM and SIGHUP all run `ambitctl local down` (agents, control plane, namespaces, the run's temp
 * directory with the CA's private key) and print what went; a second signal while that runs is ignored.
 *
 * Owns: the demo's story and its checks. Must not know about: agent internals (it reads agents' access logs and
 * admin endpoints like a person would) or how the local runtime builds the mesh (ambitctl local does).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { runLocal } from '../ambitctl/local.ts';
import { run } from '../runtime/exec.ts';
import { NODE_UNDERLAY_IF } from '../runtime/topology.ts';
import { readState, type LocalPodState, type LocalState } from '../runtime/workloads/local-state.ts';

const { values } = parseArgs({ options: { keep: { type: 'boolean', default: false } } });
const CLUSTER_DIR = path.join(import.meta.dirname, 'cluster');
const CLIENT_APP = path.resolve(import.meta.dirname, '..', 'runtime', 'apps', 'client.ts');
/** Two nodes, the control plane and three pods on a loaded 2-core machine. */
const UP_TIMEOUT_S = 150;
/** The Service's port (the server listens on 8080, its targetPort). */
const SERVICE_PORT = 80;
/** The sample client sends this text repeated: if it shows up on the wire, the wire carried plaintext. */
const PLAINTEXT_MARKER = 'ambit-ambit-ambit-';

const bold = (text: string): string => (process.stdout.isTTY ? `\x1b[1m${text}\x1b[0m` : text);
const step = (text: string): void => console.log(`\n${bold('==>')} ${text}`);
const AMBITCTL = path.relative(process.cwd(), path.resolve(import.meta.dirname, '..', 'ambitctl', 'ambitctl')) || 'ambitctl/ambitctl';

/** `ambitctl local ARGS --run-dir RUN` in this process (the same code as the command line); output indented. */
async function ambitctl(runDir: string, args: string[], quiet = false): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = '';
  let stderr = '';
  const io = {
    stdout: (text: string) => {
      stdout += text;
      if (!quiet) process.stdout.write(text.replace(/^(?=.)/gm, '    '));
    },
    stderr: (text: string) => {
      stderr += text;
      if (!quiet) process.stderr.write(text.replace(/^(?=.)/gm, '    '));
    },
  };
  const code = await runLocal(['--run-dir', runDir, ...args], io);
  return { code, stdout, stderr };
}

interface WireReport {
  packets: number;
  ports: Map<number, number>;
  plaintextSeen: boolean;
}

/**
 * Pod traffic on the link. The agents' own connections to the control plane (xDS and CA, TLS to 15012) cross it too,
 * and a push landing in the capture window (after a pod or Service change, later on a loaded machine) is not what
 * the demo's claim is about.
 */
const CAPTURE_FILTER = 'tcp and not port 15012';

async function captureLink(netns: string, file: string, during: () => Promise<void>): Promise<WireReport> {
  const tcpdump: ChildProcess = spawn('ip', ['netns', 'exec', netns, 'tcpdump', '-Z', 'root', '--immediate-mode', '-i', NODE_UNDERLAY_IF, '-U', '-s', '0', '-w', file, CAPTURE_FILTER], { stdio: ['ignore', 'ignore', 'pipe'] });
  // tcpdump says "listening on" once the capture is live.
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('tcpdump did not start')), 10_000);
    tcpdump.stderr!.on('data', (chunk: Buffer) => {
      if (chunk.toString().includes('listening on')) {
        clearTimeout(timer);
        resolve();
      }
    });
    tcpdump.on('exit', (code) => reject(new Error(`tcpdump exited with ${code}`)));
  });
  // "listening on" is printed as the capture opens; give the kernel a moment to attach the filter.
  await new Promise((resolve) => setTimeout(resolve, 300));
  try {
    await during();
    await new Promise((resolve) => setTimeout(resolve, 300));
  } finally {
    tcpdump.kill('SIGINT');
    await new Promise((resolve) => tcpdump.once('exit', resolve));
  }
  const summary = await run('tcpdump', ['-r', file, '-nn', '-q', '-t']);
  const ports = new Map<number, number>();
  let packets = 0;
  for (const line of summary.stdout.split('\n')) {
    const match = /^IP \S+\.(\d+) > \S+\.(\d+):/.exec(line);
    if (!match) continue;
    packets++;
    const port = Math.min(Number(match[1]), Number(match[2]));
    ports.set(port, (ports.get(port) ?? 0) + 1);
  }
  const payloads = await run('tcpdump', ['-r', file, '-nn', '-A']);
  return { packets, ports, plaintextSeen: payloads.stdout.includes(PLAINTEXT_MARKER) };
}

async function accessLogLines(logFile: string, ip: string): Promise<Array<Record<string, unknown>>> {
  const text = await readFile(logFile, 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter((line) => line.includes('"connection closed"'))
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((entry) => JSON.stringify(entry).includes(ip));
}

/** The certificates an agent holds, read from its admin endpoint (localhost:15000 inside the node namespace). */
async function agentCertificates(nodeNetns: string): Promise<Array<{ identity: string; notAfter: string }>> {
  const script = "fetch('http://127.0.0.1:15000/config_dump').then((r) => r.json()).then((d) => console.log(JSON.stringify(d.certificates)))";
  const result = await run('ip', ['netns', 'exec', nodeNetns, process.execPath, '-e', script]);
  try {
    return JSON.parse(result.stdout) as Array<{ identity: string; notAfter: string }>;
  } catch {
    return [];
  }
}

interface ClientResult {
  ok: boolean;
  connections: number;
  succeeded: number;
}

/** The sample client in a pod, through `ambitctl local exec` (so with the pod's resolv.conf: names resolve as in the pod). */
async function runClient(runDir: string, pod: LocalPodState, host: string, count: number): Promise<ClientResult> {
  const args = [CLIENT_APP, '--host', host, '--port', String(SERVICE_PORT), '--count', String(count), '--size', '4096', '--timeout', '10000'];
  const result = await ambitctl(runDir, ['exec', pod.name, '-n', pod.namespace, '--', process.execPath, ...args], true);
  try {
    return JSON.parse(result.stdout) as ClientResult;
  } catch {
    throw new Error(`the client in ${pod.namespace}/${pod.name} printed no result (exit ${result.code}): ${result.stderr.trim()}`);
  }
}

function describePorts(report: WireReport): string {
  return [...report.ports.entries()].sort((a, b) => b[1] - a[1]).map(([port, count]) => `port ${port}: ${count} packets`).join(', ');
}

/** The run directory of the mesh being shown, once `up` started; `down` on exit, Ctrl-C, SIGTERM or SIGHUP. */
let runDir: string | undefined;
let tearingDown: Promise<void> | undefined;

function tearDown(why: string): Promise<void> {
  tearingDown ??= (async () => {
    if (runDir === undefined) return;
    step(`Tearing down (${why}): ${AMBITCTL} local down`);
    await ambitctl(runDir, ['down']);
  })();
  return tearingDown;
}

const SIGNAL_EXIT_CODES = { SIGINT: 130, SIGTERM: 143, SIGHUP: 129 } as const;
for (const signal of Object.keys(SIGNAL_EXIT_CODES) as Array<keyof typeof SIGNAL_EXIT_CODES>) {
  process.on(signal, () => {
    if (tearingDown !== undefined) {
      console.log(`    (${signal} ignored: already tearing down)`);
      return;
    }
    void tearDown(signal).finally(() => process.exit(SIGNAL_EXIT_CODES[signal]));
  });
}

function podOf(state: LocalState, namespace: string, name: string): LocalPodState {
  const pod = state.pods.find((candidate) => candidate.namespace === namespace && candidate.name === name);
  if (pod === undefined || !pod.ready) throw new Error(`pod ${namespace}/${name} is not running (see ${AMBITCTL} local get pods)`);
  return pod;
}

async function main(): Promise<void> {
  runDir = await mkdtemp('/run/ambit-demo-');
  step(`${AMBITCTL} local up -f ${path.relative(process.cwd(), CLUSTER_DIR) || CLUSTER_DIR} --nodes 2: nodes (network namespaces, Debian CNI plugins + ambit-cni), the control plane, an agent per node, the pods`);
  const up = await ambitctl(runDir, ['up', '-f', CLUSTER_DIR, '--nodes', '2', '--timeout', String(UP_TIMEOUT_S)]);
  if (up.code !== 0) throw new Error(`ambitctl local up failed (exit ${up.code}); its supervisor's log: ${path.join(runDir, 'supervisor.log')}`);
  // Ready pods become the Service's endpoints a moment later (the runtime's Services and the control plane read
  // the pods' status): wait until `get svc` shows the endpoint, as a user would.
  let state = (await readState(runDir))!;
  for (const deadline = Date.now() + 30_000; (state.services.find((service) => service.name === 'server')?.endpoints ?? 0) < 1; ) {
    if (Date.now() > deadline) throw new Error('Service shop/server got no endpoint in 30 s (see ambitctl local get svc)');
    await new Promise((resolve) => setTimeout(resolve, 250));
    state = (await readState(runDir)) ?? state;
  }
  const [node1, node2] = state.nodes;
  if (node1 === undefined || node2 === undefined) throw new Error('the mesh has fewer than 2 nodes');
  await ambitctl(runDir, ['get', 'pods']);
  await ambitctl(runDir, ['get', 'svc']);
  const server = podOf(state, 'shop', 'server');
  const client = podOf(state, 'shop', 'client');
  const legacy = podOf(state, 'legacy', 'legacy-client');
  const clusterIp = state.services.find((service) => service.namespace === 'shop' && service.name === 'server')?.clusterIP;
  console.log(`    namespace shop is enrolled (istio.io/dataplane-mode=ambient in ${path.join(path.relative(process.cwd(), CLUSTER_DIR), '00-namespaces.yaml')}); legacy is not`);
  console.log(`    control plane: delta xDS + CA, reading ${state.clusterDir}`);
  const resolved = (await ambitctl(runDir, ['exec', 'legacy-client', '-n', 'legacy', '--', 'getent', 'hosts', 'server.shop'], true)).stdout.trim().split(/\s+/)[0] ?? '';
  console.log(`    from legacy/legacy-client, server.shop resolves to ${resolved || '(nothing)'} (the cluster DNS: a dnsmasq per node)`);

  step(`shop/client -> server:${SERVICE_PORT} (by the Service's name), 20 connections of 4 KiB, capturing the node-to-node link`);
  let meshResult: ClientResult | undefined;
  const meshWire = await captureLink(node1.netns, path.join(runDir, 'mesh.pcap'), async () => {
    meshResult = await runClient(runDir!, client, 'server', 20);
  });
  console.log(`    client: ${meshResult!.succeeded}/${meshResult!.connections} connections echoed correctly`);
  const outbound = (await accessLogLines(node1.agentLog, server.ip)).filter((entry) => entry.direction === 'outbound');
  const inbound = (await accessLogLines(node2.agentLog, client.ip)).filter((entry) => entry.direction === 'inbound');
  const inboundSrc = inbound[0]?.src as { principal?: string } | undefined;
  console.log(`    ${node1.name} agent (outbound): ${outbound.length} connections tunnelled, mtls=${String(outbound[0]?.mtls)}, as spiffe://cluster.local/ns/shop/sa/client`);
  console.log(`    ${node2.name} agent (inbound):  ${inbound.length} connections accepted from peer identity ${inboundSrc?.principal ?? '(none)'}, presenting spiffe://cluster.local/ns/shop/sa/server`);
  console.log(`    on the wire: ${meshWire.packets} packets; ${describePorts(meshWire)}; plaintext payload seen: ${meshWire.plaintextSeen ? 'YES' : 'no'}`);
  for (const node of [node1, node2]) {
    for (const certificate of await agentCertificates(node.netns)) {
      console.log(`    ${node.name} holds ${certificate.identity} (issued by the control plane's CA, expires ${certificate.notAfter})`);
    }
  }

  step(`legacy/legacy-client -> server.shop:${SERVICE_PORT} (not enrolled; by the Service's name), capturing the same link`);
  let legacyResult: ClientResult | undefined;
  const legacyWire = await captureLink(node1.netns, path.join(runDir, 'legacy.pcap'), async () => {
    legacyResult = await runClient(runDir!, legacy, 'server.shop', 5);
  });
  console.log(`    client: ${legacyResult!.succeeded}/${legacyResult!.connections} connections echoed correctly`);
  console.log(`    on the wire: ${legacyWire.packets} packets; ${describePorts(legacyWire)}; plaintext payload seen: ${legacyWire.plaintextSeen ? 'yes' : 'NO'}`);

  const onlyHbone = meshWire.packets > 0 && [...meshWire.ports.keys()].every((port) => port === 15008) && !meshWire.plaintextSeen;
  const serviceResolved = clusterIp !== undefined && resolved === clusterIp;
  const ok = meshResult!.ok && legacyResult!.ok && onlyHbone && inboundSrc?.principal === 'spiffe://cluster.local/ns/shop/sa/client' && legacyWire.plaintextSeen && serviceResolved;
  step('Summary');
  console.log(`    mesh client reached the server through HBONE (mutual TLS 1.3, port 15008): ${meshResult!.ok && onlyHbone ? 'yes' : 'NO'}`);
  console.log(`    identities: client spiffe://cluster.local/ns/shop/sa/client -> server spiffe://cluster.local/ns/shop/sa/server`);
  console.log(`    only TLS crossed between the nodes for mesh traffic: ${onlyHbone ? 'yes' : 'NO'}`);
  console.log(`    un-enrolled client still reached the server, in plaintext: ${legacyResult!.ok && legacyWire.plaintextSeen ? 'yes' : 'NO'}`);
  console.log(`    ... by the Service's name, through the node's kube-proxy stand-in: ${legacyResult!.ok && serviceResolved ? 'yes' : 'NO'}`);
  if (values.keep) {
    const ctl = `${AMBITCTL} local --run-dir ${runDir}`;
    step('Staying up (Ctrl-C, SIGTERM or SIGHUP to tear down). Try:');
    console.log(`    ${ctl} get pods`);
    console.log(`    ${ctl} exec client -n shop -- socat -t 1 - TCP:server:80 <<< hello   # through the mesh (bash)`);
    console.log(`    ${ctl} logs server -n shop`);
    console.log(`    ${ctl} status                 # where the CA, logs and cluster state are`);
    console.log(`    ${AMBITCTL} workloads --node ${node1.netns}          # what the agent of ${node1.name} knows`);
    console.log(`    ${AMBITCTL} certs --node ${node2.netns}              # the certificates the agent of ${node2.name} holds`);
    console.log(`    ${AMBITCTL} authz check shop/client shop/server 8080 --node ${node2.netns}   # asks the destination's agent`);
    console.log(`    edit ${CLUSTER_DIR} while it runs: the supervisor applies each change (${ctl} status says if one was rejected)`);
    // Until a signal tears it down (a pending promise alone does not keep Node running: a timer does).
    await new Promise(() => setInterval(() => {}, 1 << 30));
  }
  process.exitCode = ok ? 0 : 1;
}

main()
  .catch((error: Error) => {
    console.error(`demo failed: ${error.stack ?? error.message}`);
    process.exitCode = 1;
  })
  .finally(async () => {
    if (!values.keep || process.exitCode === 1) await tearDown('done');
  });
