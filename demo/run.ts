/**
 * `make demo`: a two-node ambit mesh on this machine, no Kubernetes.
 *
 *   1. builds two nodes (network namespaces with a bridge each, joined by an underlay link), starts the ambit
 *      control plane on the underlay (delta xDS + CA, reading a directory of Kubernetes YAML) and an ambit agent in
 *      each node; the CNI chain is Debian's reference plugins followed by ambit's plugin;
 *   2. enrolls namespace `shop` by labelling it (istio.io/dataplane-mode=ambient) in its YAML file while the mesh
 *      runs, starts a server pod on node 2 and a client pod on node 1 in it, plus a client pod in the un-enrolled
 *      namespace `legacy`; the agents get the pods' certificates from the control plane's CA;
 *   3. publishes Service `server` in `shop` before the pods (the runtime gives it a cluster IP, its kube-proxy
 *      stand-in routes the cluster IP to the server pod, its cluster DNS answers `server.shop`);
 *   4. captures the node-to-node link with tcpdump while each client talks to the server, then shows the SPIFFE
 *      identities on both ends and what crossed the link: only TLS on port 15008 for the mesh client, plaintext
 *      for the legacy client, which reaches the server by the Service's name.
 *
 *   node demo/run.ts [--keep]   (--keep: stay up until Ctrl-C, SIGTERM or SIGHUP, printing how to reach the pods
 *                                and ambitctl commands for this run)
 *
 * Ctrl-C, SIGTERM and SIGHUP all tear the mesh down (agents, control plane, namespaces, the run's temp directory
 * with the CA's private key) and print what went; a second signal while that runs is ignored.
 *
 * Owns: the demo's story. Must not know about: agent internals (it reads agents' access logs like a person would).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { createLocalMesh, type LocalMesh } from '../runtime/local-mesh.ts';
import { runClient, startEchoServer, type ClusterNode, type Pod, type TeardownReport } from '../runtime/index.ts';
import { NODE_UNDERLAY_IF } from '../runtime/topology.ts';
import { run } from '../runtime/exec.ts';

const { values } = parseArgs({ options: { keep: { type: 'boolean', default: false } } });
const ENROLLED = { 'istio.io/dataplane-mode': 'ambient' };
const APP_PORT = 8080;
/** The Service's port (the pods listen on APP_PORT, its targetPort). */
const SERVICE_PORT = 80;
/**
 * The mesh client dials the Service by name too: its agent answers the name from the mesh state (DNS proxy) and
 * carries the connection to the cluster IP over HBONE to the endpoint it picks. false: it dials the pod's IP.
 */
const MESH_CLIENT_USES_SERVICE_NAME = true;
/** The sample client sends this text repeated: if it shows up on the wire, the wire carried plaintext. */
const PLAINTEXT_MARKER = 'ambit-ambit-ambit-';

const bold = (text: string): string => (process.stdout.isTTY ? `\x1b[1m${text}\x1b[0m` : text);
const step = (text: string): void => console.log(`\n${bold('==>')} ${text}`);

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

async function accessLogLines(logFile: string, pod: Pod): Promise<Array<Record<string, unknown>>> {
  const text = await readFile(logFile, 'utf8').catch(() => '');
  return text
    .split('\n')
    .filter((line) => line.includes('"connection closed"'))
    .map((line) => JSON.parse(line) as Record<string, unknown>)
    .filter((entry) => JSON.stringify(entry).includes(pod.ip));
}

/** The certificates an agent holds, read from its admin endpoint (localhost:15000 inside the node namespace). */
async function agentCertificates(node: ClusterNode): Promise<Array<{ identity: string; notAfter: string }>> {
  const script = "fetch('http://127.0.0.1:15000/config_dump').then((r) => r.json()).then((d) => console.log(JSON.stringify(d.certificates)))";
  const result = await node.exec(process.execPath, ['-e', script]);
  try {
    return JSON.parse(result.stdout) as Array<{ identity: string; notAfter: string }>;
  } catch {
    return [];
  }
}

function describePorts(report: WireReport): string {
  return [...report.ports.entries()].sort((a, b) => b[1] - a[1]).map(([port, count]) => `port ${port}: ${count} packets`).join(', ');
}

const AMBITCTL = path.relative(process.cwd(), path.resolve(import.meta.dirname, '..', 'ambitctl', 'ambitctl')) || 'ambitctl/ambitctl';

function describeTeardown(report: TeardownReport, caDir: string): string[] {
  return [
    `    ${report.pods.length} pods deleted through the CNI chain${report.pods.length ? ` (${report.pods.join(', ')})` : ''}`,
    `    ${report.processes} process groups stopped (agents, control plane, pod apps)`,
    `    ${report.namespaces.length} network namespaces deleted${report.namespaces.length ? ` (${report.namespaces.join(', ')})` : ''}`,
    `    ${report.tmpDir} removed: cluster directory, logs, and the CA's root and private key (${caDir})`,
  ];
}

/** The mesh being shown, once built; torn down on exit, Ctrl-C, SIGTERM or SIGHUP. */
let mesh: LocalMesh | undefined;
let tearingDown: Promise<void> | undefined;

function tearDown(why: string): Promise<void> {
  tearingDown ??= (async () => {
    if (mesh === undefined) return;
    step(`Tearing down (${why})`);
    for (const line of describeTeardown(await mesh.destroy(), mesh.caDir)) console.log(line);
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
    // Before the mesh exists, exiting runs the runtime's exit hook, which removes a half-built cluster at once.
    void tearDown(signal).finally(() => process.exit(SIGNAL_EXIT_CODES[signal]));
  });
}

async function main(): Promise<void> {
  step('Building a 2-node local cluster (network namespaces, Debian CNI plugins + ambit-cni), the control plane and an agent per node');
  const built = await createLocalMesh({ nodes: 2, name: 'demo' });
  mesh = built;
  try {
    const cluster = built.cluster;
    const [node1, node2] = [cluster.node(0), cluster.node(1)];
    console.log(`    nodes: ${node1.name} (pods ${node1.podCidr}), ${node2.name} (pods ${node2.podCidr})`);
    console.log(`    control plane: delta xDS + CA at ${built.controlPlaneAddress}, watching ${cluster.clusterDir}`);

    step(`Enrolling namespace "shop": writing istio.io/dataplane-mode=ambient into ${path.join(cluster.clusterDir, 'namespaces', 'shop.yaml')}`);
    await cluster.setNamespaceLabels('shop', ENROLLED);
    console.log(`    ${(await readFile(path.join(cluster.clusterDir, 'namespaces', 'shop.yaml'), 'utf8')).trim().split('\n').join('\n    ')}`);

    // Published before the pods, so the control plane's push of it is long done when the link is captured.
    step('Publishing Service shop/server (port 80 -> the pods labelled app=server, port 8080)');
    const service = await cluster.services!.applyService({
      apiVersion: 'v1',
      kind: 'Service',
      metadata: { name: 'server', namespace: 'shop' },
      spec: { selector: { app: 'server' }, ports: [{ name: 'tcp', port: SERVICE_PORT, targetPort: APP_PORT }] },
    });
    console.log(`    cluster IP ${service.spec!.clusterIP} (written back to ${path.join(cluster.clusterDir, 'services', 'shop.server.yaml')})`);

    step('Starting pods');
    const server = await cluster.createPod({ node: node2, namespace: 'shop', name: 'server', serviceAccount: 'server', labels: { app: 'server' } });
    const client = await cluster.createPod({ node: node1, namespace: 'shop', name: 'client', serviceAccount: 'client' });
    const legacy = await cluster.createPod({ node: node1, namespace: 'legacy', name: 'legacy-client', serviceAccount: 'legacy' });
    await startEchoServer(server, { port: APP_PORT });
    console.log(`    shop/server         ${server.ip}  on ${node2.name}  (enrolled: captured by the agent)`);
    console.log(`    shop/client         ${client.ip}  on ${node1.name}  (enrolled: captured by the agent)`);
    console.log(`    legacy/legacy-client ${legacy.ip}  on ${node1.name}  (not enrolled: plain networking)`);
    const resolved = (await legacy.exec('getent', ['hosts', 'server.shop'])).stdout.trim().split(/\s+/)[0] ?? '';
    console.log(`    from legacy/legacy-client, server.shop resolves to ${resolved || '(nothing)'} (the cluster DNS: a dnsmasq per node)`);

    const [meshHost, meshPort] = MESH_CLIENT_USES_SERVICE_NAME ? ['server', SERVICE_PORT] : [server.ip, APP_PORT];

    const pcapDir = cluster.tmpDir;
    step(`shop/client -> ${meshHost}:${meshPort}, 20 connections of 4 KiB, capturing the node-to-node link`);
    let meshResult: Awaited<ReturnType<typeof runClient>> | undefined;
    const meshWire = await captureLink(node1.netnsName, path.join(pcapDir, 'mesh.pcap'), async () => {
      meshResult = await runClient(client, { host: meshHost, port: meshPort, count: 20, size: 4096 });
    });
    console.log(`    client: ${meshResult!.succeeded}/${meshResult!.connections} connections echoed correctly`);
    const outbound = (await accessLogLines(node1.agentLogFile, server)).filter((entry) => entry.direction === 'outbound');
    const inbound = (await accessLogLines(node2.agentLogFile, client)).filter((entry) => entry.direction === 'inbound');
    const inboundSrc = inbound[0]?.src as { principal?: string } | undefined;
    console.log(`    ${node1.name} agent (outbound): ${outbound.length} connections tunnelled, mtls=${String(outbound[0]?.mtls)}, as spiffe://cluster.local/ns/shop/sa/client`);
    console.log(`    ${node2.name} agent (inbound):  ${inbound.length} connections accepted from peer identity ${inboundSrc?.principal ?? '(none)'}, presenting spiffe://cluster.local/ns/shop/sa/server`);
    console.log(`    on the wire: ${meshWire.packets} packets; ${describePorts(meshWire)}; plaintext payload seen: ${meshWire.plaintextSeen ? 'YES' : 'no'}`);
    for (const node of [node1, node2]) {
      for (const certificate of await agentCertificates(node)) {
        console.log(`    ${node.name} holds ${certificate.identity} (issued by the control plane's CA, expires ${certificate.notAfter})`);
      }
    }

    step(`legacy/legacy-client -> server.shop:${SERVICE_PORT} (not enrolled; by the Service's name), capturing the same link`);
    let legacyResult: Awaited<ReturnType<typeof runClient>> | undefined;
    const legacyWire = await captureLink(node1.netnsName, path.join(pcapDir, 'legacy.pcap'), async () => {
      legacyResult = await runClient(legacy, { host: 'server.shop', port: SERVICE_PORT, count: 5, size: 4096 });
    });
    console.log(`    client: ${legacyResult!.succeeded}/${legacyResult!.connections} connections echoed correctly`);
    console.log(`    on the wire: ${legacyWire.packets} packets; ${describePorts(legacyWire)}; plaintext payload seen: ${legacyWire.plaintextSeen ? 'yes' : 'NO'}`);

    const onlyHbone = meshWire.packets > 0 && [...meshWire.ports.keys()].every((port) => port === 15008) && !meshWire.plaintextSeen;
    const serviceResolved = resolved === service.spec!.clusterIP;
    const ok = meshResult!.ok && legacyResult!.ok && onlyHbone && inboundSrc?.principal === 'spiffe://cluster.local/ns/shop/sa/client' && legacyWire.plaintextSeen && serviceResolved;
    step('Summary');
    console.log(`    mesh client reached the server through HBONE (mutual TLS 1.3, port 15008): ${meshResult!.ok && onlyHbone ? 'yes' : 'NO'}`);
    console.log(`    identities: client spiffe://cluster.local/ns/shop/sa/client -> server spiffe://cluster.local/ns/shop/sa/server`);
    console.log(`    only TLS crossed between the nodes for mesh traffic: ${onlyHbone ? 'yes' : 'NO'}`);
    console.log(`    un-enrolled client still reached the server, in plaintext: ${legacyResult!.ok && legacyWire.plaintextSeen ? 'yes' : 'NO'}`);
    console.log(`    ... by the Service's name, through the node's kube-proxy stand-in: ${legacyResult!.ok && serviceResolved ? 'yes' : 'NO'}`);
    if (values.keep) {
      step(`Staying up (Ctrl-C, SIGTERM or SIGHUP to tear down). Run ${cluster.runId}: every namespace of it starts with ${node1.netnsName.slice(0, -2)}. Try:`);
      console.log(`    ip netns exec ${client.netnsName} ${process.execPath} runtime/apps/client.ts --host ${server.ip} --port ${APP_PORT}`);
      console.log(`    ${AMBITCTL} workloads --node ${node1.netnsName}          # what the agent of ${node1.name} knows`);
      console.log(`    ${AMBITCTL} certs --node ${node2.netnsName}              # the certificates the agent of ${node2.name} holds`);
      console.log(`    ${AMBITCTL} authz check shop/client shop/server ${APP_PORT} --node ${node2.netnsName}   # asks the destination's agent`);
      console.log(`    ${AMBITCTL} authz check legacy/legacy-client shop/server ${APP_PORT} --cluster-dir ${cluster.clusterDir}`);
      console.log(`    ip netns exec ${legacy.netnsName} getent hosts server.shop   # the cluster DNS`);
      console.log(`    ip netns exec ${node1.netnsName} nft list table ip kube-proxy   # the kube-proxy stand-in`);
      console.log(`    agent logs: ${node1.agentLogFile} ${node2.agentLogFile}`);
      console.log(`    cluster state (edit labels here): ${cluster.clusterDir}`);
      console.log(`    CA root and private key (removed at teardown): ${built.caDir}`);
      await new Promise(() => {});
    }
    process.exitCode = ok ? 0 : 1;
  } finally {
    if (!values.keep) await tearDown('done');
  }
}

main().catch((error: Error) => {
  console.error(`demo failed: ${error.stack ?? error.message}`);
  process.exit(1);
});
