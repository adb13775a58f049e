/**
 * The cluster DNS of the local runtime (kube-dns's role): a real dnsmasq in every node namespace answering
 * `<svc>.<ns>.svc.cluster.local` from a hosts file written from the Services (a Service's cluster IPs; a headless
 * Service's ready endpoint addresses), NXDOMAIN for every other name under cluster.local, and other names forwarded
 * to the upstream servers the cluster is given (none by default: the box has no upstream the nodes may reach, so
 * they are REFUSED; a test can run one in a namespace of its own and set it). Pods reach it at the cluster DNS
 * address (10.240.0.10), which every node holds on its loopback, as NodeLocal DNSCache does, so a pod's query goes
 * to its own node's dnsmasq without NAT. (DNAT, as kube-proxy does for kube-dns, lets glibc's A and AAAA queries,
 * sent at once from one socket, race in conntrack: one is dropped now and then and the lookup stalls 5 s, seen
 * here.) Every pod gets the resolv.conf a kubelet writes (`/etc/netns/<netns>/resolv.conf`, which `ip netns exec`
 * mounts over /etc/resolv.conf).
 *
 * Owns: the hosts file format, the upstream list, the dnsmasq command line and process per node, and the pods'
 * resolv.conf files.
 * Must not know about: where Services come from (services.ts) or how Service VIPs are routed (kube-proxy.ts).
 */
import type { ChildProcess } from 'node:child_process';
import { open, readdir, readFile, mkdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { readdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { RuntimeError } from './errors.ts';
import { CLUSTER_DOMAIN, type ServiceTable } from './services.ts';

/** Where `ip netns exec <name>` finds files to bind-mount over /etc (iproute2). */
export const NETNS_ETC_DIR = '/etc/netns';
/** Kubernetes' ndots: a name with fewer dots is tried with the search domains first. */
const NDOTS = 5;
/** TTL of the answers (kube-dns: 30 s for services; short here so tests and users see changes soon). */
const ANSWER_TTL_SECONDS = 5;
const DNSMASQ_START_TIMEOUT_MS = 10_000;
export const DNS_PORT = 53;
/** Debian's dnsmasq-base. */
const DNSMASQ = '/usr/sbin/dnsmasq';
/** dnsmasq logs this once its sockets are bound. */
const DNSMASQ_STARTED = 'started, version';
/** How long a hosts file change may take to be read (inotify: milliseconds); past it the change is logged as late. */
const DNSMASQ_RELOAD_TIMEOUT_MS = 5_000;

/** The hosts file: one line per address and name; a headless Service lists each ready endpoint's address. */
export function renderHostsFile(table: ServiceTable, domain = CLUSTER_DOMAIN): string {
  const lines: string[] = ['# written by the ambit local runtime from the cluster directory\'s Services'];
  for (const service of table.services) {
    const name = `${service.name}.${service.namespace}.svc.${domain}`;
    for (const ip of service.headless ? service.endpointIps : service.clusterIPs) lines.push(`${ip} ${name}`);
  }
  return `${lines.join('\n')}\n`;
}

/** The resolv.conf a kubelet writes for a pod with dnsPolicy ClusterFirst. */
export function renderResolvConf(namespace: string, nameservers: string[], domain = CLUSTER_DOMAIN): string {
  return [
    `search ${namespace}.svc.${domain} svc.${domain} ${domain}`,
    ...nameservers.map((server) => `nameserver ${server}`),
    `options ndots:${NDOTS}`,
    '',
  ].join('\n');
}

export function podEtcDir(netnsName: string): string {
  return path.join(NETNS_ETC_DIR, netnsName);
}

export async function writePodResolvConf(netnsName: string, namespace: string, nameservers: string[]): Promise<void> {
  const dir = podEtcDir(netnsName);
  await mkdir(dir, { recursive: true });
  await writeFile(path.join(dir, 'resolv.conf'), renderResolvConf(namespace, nameservers));
}

export async function removePodResolvConf(netnsName: string): Promise<void> {
  await rm(podEtcDir(netnsName), { recursive: true, force: true });
}

/** Removes every `/etc/netns/<prefix>*` directory (a run's pods), as destroy and the reaper of crashed runs do. */
export async function removeResolvConfsWithPrefix(prefix: string): Promise<void> {
  const names = await readdir(NETNS_ETC_DIR).catch(() => [] as string[]);
  await Promise.all(names.filter((name) => name.startsWith(prefix)).map((name) => rm(path.join(NETNS_ETC_DIR, name), { recursive: true, force: true })));
}

/** The synchronous form, for the exit hook. */
export function removeResolvConfsWithPrefixSync(prefix: string): void {
  let names: string[];
  try {
    names = readdirSync(NETNS_ETC_DIR);
  } catch {
    return;
  }
  for (const name of names) if (name.startsWith(prefix)) rmSync(path.join(NETNS_ETC_DIR, name), { recursive: true, force: true });
}

export interface NodeDnsOptions {
  /** The node's directory: the hosts directory and dnsmasq's log go there. */
  dir: string;
  /** Addresses of the node dnsmasq binds (the node's own, where its kube-proxy sends the cluster DNS address). */
  listenAddresses: string[];
  /** Starts a process in the node namespace (ClusterNode.spawn: tracked, killed on destroy). */
  spawn: (cmd: string, args: string[], options: { stdio: ['ignore', 'ignore', 'pipe'] }) => ChildProcess;
}

/** One node's dnsmasq and its hosts file. */
export class NodeDns {
  readonly hostsDir: string;
  readonly logFile: string;
  /** dnsmasq's resolv-file: the upstream servers (`nameserver` lines), re-read when it changes (inotify). */
  readonly upstreamFile: string;
  readonly #options: NodeDnsOptions;
  #process: ChildProcess | undefined;
  /** The hosts file as last written: an endpoint change of a Service with a cluster IP leaves it as it is. */
  #hostsText: string | undefined;

  constructor(options: NodeDnsOptions) {
    this.#options = options;
    this.hostsDir = path.join(options.dir, 'dns-hosts');
    this.logFile = path.join(options.dir, 'dnsmasq.log');
    this.upstreamFile = path.join(options.dir, 'dns-upstream', 'resolv.conf');
  }

  get process(): ChildProcess | undefined {
    return this.#process;
  }

  /** Writes the first hosts file and starts dnsmasq; resolves once it has bound its sockets. */
  async start(table: ServiceTable): Promise<void> {
    await mkdir(this.hostsDir, { recursive: true });
    await mkdir(path.dirname(this.upstreamFile), { recursive: true });
    await writeFile(this.upstreamFile, '');
    await this.apply(table);
    const args = [
      '--keep-in-foreground',
      '--conf-file=/dev/null', // nothing from /etc/dnsmasq.conf or /etc/dnsmasq.d
      `--resolv-file=${this.upstreamFile}`, // empty: no upstream, names outside cluster.local are refused
      '--no-hosts', // not the root's /etc/hosts
      '--user=root', // stays able to read the run's private directory
      '--pid-file=',
      '--bind-interfaces',
      ...this.#options.listenAddresses.map((address) => `--listen-address=${address}`),
      `--port=${DNS_PORT}`,
      `--hostsdir=${this.hostsDir}`, // re-read on change (inotify)
      `--local=/${CLUSTER_DOMAIN}/`, // answered from the hosts file only: NXDOMAIN for unknown cluster names
      `--local-ttl=${ANSWER_TTL_SECONDS}`,
      `--log-facility=${this.logFile}`,
    ];
    const child = this.#options.spawn(DNSMASQ, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    this.#process = child;
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const deadline = Date.now() + DNSMASQ_START_TIMEOUT_MS;
    while (Date.now() < deadline) {
      if (child.exitCode !== null || child.signalCode !== null) {
        throw new RuntimeError('CLUSTER_DNS_NOT_READY', `dnsmasq exited (${child.exitCode ?? child.signalCode}): ${stderr.trim()} (see ${this.logFile})`);
      }
      if ((await readFile(this.logFile, 'utf8').catch(() => '')).includes(DNSMASQ_STARTED)) return;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    throw new RuntimeError('CLUSTER_DNS_NOT_READY', `dnsmasq did not start in ${DNSMASQ_START_TIMEOUT_MS} ms: ${stderr.trim()} (see ${this.logFile})`);
  }

  /**
   * Replaces the hosts file (a rename into the watched directory: dnsmasq reads it whole, never half-written) and,
   * once dnsmasq runs, waits until it logs having read it, so that whoever awaits this can query the new names.
   */
  async apply(table: ServiceTable): Promise<void> {
    const temp = path.join(this.#options.dir, `.dns-hosts.${process.pid}.tmp`);
    const hostsFile = path.join(this.hostsDir, 'services');
    const text = renderHostsFile(table);
    if (text === this.#hostsText) return;
    await writeFile(temp, text);
    const running = this.#process !== undefined && this.#process.exitCode === null && this.#process.signalCode === null;
    const logOffset = running ? await stat(this.logFile).then((info) => info.size, () => 0) : 0;
    await rename(temp, hostsFile);
    this.#hostsText = text;
    if (running) await waitForLog(this.logFile, logOffset, `read ${hostsFile}`, `read ${hostsFile}`);
  }

  /**
   * Where names outside cluster.local go (IP addresses the node namespace can reach); empty: nowhere (REFUSED).
   * Resolves once dnsmasq uses the new list.
   */
  async setUpstream(servers: string[]): Promise<void> {
    const logOffset = await stat(this.logFile).then((info) => info.size, () => 0);
    const temp = path.join(this.#options.dir, `.dns-upstream.${process.pid}.tmp`);
    await writeFile(temp, servers.map((server) => `nameserver ${server}\n`).join(''));
    await rename(temp, this.upstreamFile);
    await waitForLog(this.logFile, logOffset, servers.length > 0 ? `using nameserver ${servers.at(-1)}#` : `reading ${this.upstreamFile}`, `take its new upstream servers`);
  }
}

/** Waits until `logFile` shows `text` after byte `offset`. */
async function waitForLog(logFile: string, offset: number, text: string, what: string): Promise<void> {
  const deadline = Date.now() + DNSMASQ_RELOAD_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if ((await readFrom(logFile, offset)).includes(text)) return;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  throw new RuntimeError('CLUSTER_DNS_NOT_READY', `dnsmasq did not ${what} within ${DNSMASQ_RELOAD_TIMEOUT_MS} ms (see ${logFile})`);
}

/** The text of `file` from byte `offset` on ('' when it cannot be read). */
async function readFrom(file: string, offset: number): Promise<string> {
  let handle;
  try {
    handle = await open(file, 'r');
    const { size } = await handle.stat();
    if (size <= offset) return '';
    const buffer = Buffer.alloc(size - offset);
    await handle.read(buffer, 0, buffer.length, offset);
    return buffer.toString('utf8');
  } catch {
    return '';
  } finally {
    await handle?.close();
  }
}
