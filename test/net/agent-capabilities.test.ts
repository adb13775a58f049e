/**
 * The agent with exactly the capabilities its DaemonSet gives it (deploy/agent.ts AGENT_CAPABILITIES) and a
 * container's read-only /proc/sys, on the real path: a 2-node local mesh whose agents run under
 * `unshare -m --propagation slave` (a mount namespace of its own that still sees new network namespaces, as the
 * DaemonSet's HostToContainer mount does; /proc/sys remounted read-only as a container runtime does for a
 * container that is not privileged, the host's /proc/sys/net bound elsewhere as the DaemonSet's hostPath volume
 * is) and `setpriv` (bounding, inheritable and ambient sets reduced to the list, uid 0 as in the container).
 * Capture (on nodes marked as legacy-iptables nodes, the backend the agent must detect), HBONE with both
 * identities, the client's address delivered to the server (IP_TRANSPARENT), and the pod's tcp_migrate_req still
 * work.
 */
import test from 'ava';
import { chmod, chown, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { AGENT_CAPABILITIES, installerCommand, INSTALLER_CAPABILITIES } from '../../deploy/agent.ts';
import { DEFAULT_VALUES } from '../../deploy/values.ts';
import { createLocalMesh, type LocalMesh } from '../../runtime/local-mesh.ts';
import { runClient, startEchoServer } from '../../runtime/index.ts';
import { run } from '../../runtime/exec.ts';

const ENROLLED = { 'istio.io/dataplane-mode': 'ambient' };
/** Bit numbers from linux/capability.h. */
const CAPABILITY_BITS: Record<string, number> = { NET_ADMIN: 12, NET_RAW: 13, SYS_ADMIN: 21 };

/** What a container runtime does for a container that is not privileged, then exec the command with only `capabilities`. */
function confineScript(capabilities: readonly string[]): string {
  const set = capabilitySet(capabilities);
  return [
    '#!/bin/sh',
    "# Run by `unshare -m --propagation slave`: these mounts are the agent's alone; new network namespaces still reach it.",
    'set -e',
    'mount --bind /proc/sys/net "$AMBIT_PROC_SYS_NET"',
    'mount --bind /proc/sys /proc/sys',
    'mount -o remount,bind,ro /proc/sys',
    `exec setpriv --bounding-set=${set} --inh-caps=${set} --ambient-caps=${set} -- "$@"`,
    '',
  ].join('\n');
}

function capabilitySet(capabilities: readonly string[]): string {
  return ['-all', ...capabilities.map((capability) => `+${capability.toLowerCase()}`)].join(',');
}

function mask(capabilities: readonly string[]): bigint {
  return capabilities.reduce((bits, capability) => bits | (1n << BigInt(CAPABILITY_BITS[capability]!)), 0n);
}

async function capabilitySets(pid: number): Promise<Record<string, bigint>> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const sets: Record<string, bigint> = {};
  for (const match of status.matchAll(/^(Cap\w+):\s+([0-9a-f]+)$/gm)) sets[match[1]!] = BigInt(`0x${match[2]}`);
  return sets;
}

let mesh: LocalMesh | undefined;
let workDir: string;

test.before(async () => {
  workDir = await mkdtemp(path.join(os.tmpdir(), 'ambit-caps-test-'));
  const script = path.join(workDir, 'confine-agent.sh');
  await writeFile(script, confineScript(AGENT_CAPABILITIES));
  await chmod(script, 0o755);
  const procSysNet = path.join(workDir, 'host-proc-sys-net');
  await mkdir(procSysNet);
  mesh = await createLocalMesh({
    nodes: 2,
    name: 'capstest',
    agentCommandPrefix: ['unshare', '-m', '--propagation', 'slave', script],
    agentEnv: { AMBIT_PROC_SYS_NET: procSysNet },
  });
});

test.after.always(async () => {
  await mesh?.destroy();
  await rm(workDir, { recursive: true, force: true });
});

test.serial('agents run with exactly the DaemonSet\'s capabilities and a read-only /proc/sys', async (t) => {
  for (const node of mesh!.cluster.nodes) {
    const pid = node.agent!.pid!;
    t.regex(await readFile(`/proc/${pid}/cmdline`, 'utf8'), /agent\/main\.ts/, 'the process the runtime started became the agent (exec all the way)');
    const sets = await capabilitySets(pid);
    for (const name of ['CapEff', 'CapPrm', 'CapBnd']) {
      t.is(sets[name], mask(AGENT_CAPABILITIES), `${node.name} ${name}: ${AGENT_CAPABILITIES.join(', ')} and nothing else`);
    }
    const mounts = await readFile(`/proc/${pid}/mountinfo`, 'utf8');
    t.regex(mounts, /^\S+ \S+ \S+ \S+ \/proc\/sys ro,/m, `${node.name}: /proc/sys is read-only for the agent, as in a container`);
  }
});

test.serial('with only those, capture and HBONE work: identities on both ends, the client address kept, tcp_migrate_req set', async (t) => {
  const cluster = mesh!.cluster;
  // The nodes look like nodes whose Kubernetes uses legacy iptables: the agent must see that (the legacy tools
  // open a raw socket: NET_RAW) and install legacy rules in the pods, as Istio does.
  for (const node of cluster.nodes) await node.exec('iptables-legacy', ['-t', 'mangle', '-N', 'KUBE-IPTABLES-HINT']);
  const server = await cluster.createPod({ node: 1, namespace: 'shop', name: 'server', serviceAccount: 'server', namespaceLabels: ENROLLED });
  const client = await cluster.createPod({ node: 0, namespace: 'shop', name: 'client', serviceAccount: 'client' });
  await startEchoServer(server, { port: 8080 });
  await startEchoServer(server, { port: 8081, http: true });

  const result = await runClient(client, { host: server.ip, port: 8080, count: 5, size: 16 * 1024 });
  t.true(result.ok, result.errors.join('; '));
  const log = (await readFile(cluster.node(1).agentLogFile, 'utf8')).split('\n').filter((line) => line.includes('"connection closed"')).map((line) => JSON.parse(line) as { direction: string; mtls: boolean; src: { address: string; principal?: string } });
  const inbound = log.filter((entry) => entry.direction === 'inbound' && entry.src.address === client.ip);
  t.true(inbound.length >= 5, 'the server node agent delivered the connections');
  t.true(inbound.every((entry) => entry.mtls && entry.src.principal === 'spiffe://cluster.local/ns/shop/sa/client'), 'HBONE with the client identity verified');

  // IP_TRANSPARENT: the server application sees the client pod's own address.
  const http = await runClient(client, { host: server.ip, port: 8081, http: true });
  t.true(http.ok, http.errors.join('; '));
  t.is((http.response?.body as { peer: string }).peer, client.ip);

  // Written through the host's /proc/sys/net mount from inside each pod's namespace.
  for (const pod of [server, client]) {
    const value = await run('ip', ['netns', 'exec', pod.netnsName, 'cat', '/proc/sys/net/ipv4/tcp_migrate_req']);
    t.is(value.stdout.trim(), '1', `${pod.name}: tcp_migrate_req on`);
  }
  const legacyRules = await run('ip', ['netns', 'exec', server.netnsName, 'iptables-legacy-save', '-t', 'mangle']);
  t.regex(legacyRules.stdout, /ISTIO_PRERT/, 'the node\'s backend (legacy) was detected and used');
  const nodeValue = await run('ip', ['netns', 'exec', cluster.node(1).netnsName, 'cat', '/proc/sys/net/ipv4/tcp_migrate_req']);
  t.is(nodeValue.stdout.trim(), '0', 'the node namespace, where the mount was made, is left alone');
});

/**
 * The installer container's command line (deploy/agent.ts) on a host layout in a temp dir, as uid 0 with `capabilities` only,
 * the host directories owned by `owner`. Resolves with the exit code and output.
 */
async function runInstaller(capabilities: readonly string[], owner: number): Promise<{ code: number; output: string }> {
  const host = await mkdtemp(path.join(os.tmpdir(), 'ambit-installer-caps-'));
  try {
    const hostDir = (dir: string): string => path.join(host, dir);
    for (const dir of [DEFAULT_VALUES.cni.binDir, DEFAULT_VALUES.cni.confDir, DEFAULT_VALUES.cni.runtimeDir]) {
      await mkdir(hostDir(dir), { recursive: true, mode: 0o755 });
    }
    await writeFile(path.join(hostDir(DEFAULT_VALUES.cni.confDir), '10-bridge.conflist'), JSON.stringify({ cniVersion: '1.0.0', name: 'k8s-pod-network', plugins: [{ type: 'bridge' }] }));
    for (const dir of [DEFAULT_VALUES.cni.binDir, DEFAULT_VALUES.cni.confDir, DEFAULT_VALUES.cni.runtimeDir]) {
      await chown(hostDir(dir), owner, owner);
      await chown(path.join(hostDir(dir), '..'), owner, owner).catch(() => undefined);
    }
    await chown(path.join(hostDir(DEFAULT_VALUES.cni.confDir), '10-bridge.conflist'), owner, owner);
    const kubeconfig = path.join(host, 'kubeconfig');
    await writeFile(kubeconfig, '{}');
    // The DaemonSet's command, with the host mount (/host) pointing at the temp layout and a kubeconfig file instead
    // of the service account (which only exists in a pod).
    const command = installerCommand(DEFAULT_VALUES)
      .slice(1)
      .map((arg) => (arg.startsWith('/host/') ? path.join(host, arg.slice('/host/'.length)) : arg))
      .map((arg) => (arg.startsWith('/opt/ambit/') ? path.resolve(import.meta.dirname, '..', '..', arg.slice('/opt/ambit/'.length)) : arg))
      .map((arg) => (arg === '--kubeconfig-from-service-account' ? `--kubeconfig=${kubeconfig}` : arg))
      .filter((arg) => arg !== '--watch');
    const set = capabilitySet(capabilities);
    const result = await run('setpriv', [`--bounding-set=${set}`, `--inh-caps=${set}`, `--ambient-caps=${set}`, '--', process.execPath, ...command]);
    return { code: result.code, output: result.stdout + result.stderr };
  } finally {
    await rm(host, { recursive: true, force: true });
  }
}

test('the CNI installer needs no capability on root-owned host dirs, and only DAC_OVERRIDE when another user owns them', async (t) => {
  const OTHER_USER = 4242;
  const rootOwned = await runInstaller([], 0);
  t.is(rootOwned.code, 0, rootOwned.output);
  t.regex(rootOwned.output, /ambit-cni installed: .*plugin runtime/s);
  const otherOwnedWithout = await runInstaller([], OTHER_USER);
  t.not(otherOwnedWithout.code, 0, 'without DAC_OVERRIDE, uid 0 cannot write into a directory another user owns');
  t.regex(otherOwnedWithout.output, /EACCES|permission denied/i);
  const otherOwnedWith = await runInstaller(INSTALLER_CAPABILITIES, OTHER_USER);
  t.is(otherOwnedWith.code, 0, otherOwnedWith.output);
});
