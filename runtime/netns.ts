/**
 * Network namespace plumbing through iproute2: named namespaces under /run/netns, veths between them, and
 * commands run inside them. Nothing here touches the root namespace's links, routes or rules.
 *
 * Owns: `ip netns` and `ip -n` invocations.
 * Must not know about: clusters, pods or CNI.
 */
import { run, runOk } from './exec.ts';

/** Where `ip netns add` mounts namespaces; the agent and CNI plugins open them by this path. */
export const NETNS_DIR = '/run/netns';

export function netnsPath(name: string): string {
  return `${NETNS_DIR}/${name}`;
}

/**
 * `loopbackUp: false` for a pod's sandbox: the CNI chain's loopback plugin brings its `lo` up, as a container
 * runtime's does, and one process less per pod is what a pod start through the local runtime costs less.
 */
export async function addNetns(name: string, options: { loopbackUp?: boolean } = {}): Promise<void> {
  await runOk('ip', ['netns', 'add', name]);
  if (options.loopbackUp ?? true) await runOk('ip', ['-n', name, 'link', 'set', 'lo', 'up']);
}

export async function listNetns(): Promise<string[]> {
  const output = await runOk('ip', ['netns', 'list']);
  return output
    .split('\n')
    .map((line) => line.split(' ')[0] ?? '')
    .filter((name) => name !== '');
}

/** Kills every process inside the namespace, then deletes it. Missing namespaces are fine (idempotent). */
export async function deleteNetns(name: string): Promise<void> {
  const pids = await run('ip', ['netns', 'pids', name]);
  if (pids.code === 0) {
    for (const pid of pids.stdout.split('\n').filter((line) => line !== '')) {
      try {
        process.kill(Number(pid), 'SIGKILL');
      } catch {
        // already gone
      }
    }
  }
  const result = await run('ip', ['netns', 'del', name]);
  if (result.code !== 0 && !/No such file|Cannot remove namespace file/.test(result.stderr)) {
    await runOk('ip', ['netns', 'del', name]); // surfaces the real error
  }
}

/** `ip -n <ns> ...` */
export function ipIn(netns: string, args: string[]): Promise<string> {
  return runOk('ip', ['-n', netns, ...args]);
}

/** `sysctl -w` inside a namespace (ip netns exec gives the namespace its own /proc/sys/net view). */
export function sysctlIn(netns: string, key: string, value: string): Promise<string> {
  return runOk('ip', ['netns', 'exec', netns, 'sysctl', '-qw', `${key}=${value}`]);
}

/** A veth whose ends are created directly inside two namespaces (never in the root namespace). */
export async function addVethBetween(a: { netns: string; name: string }, b: { netns: string; name: string }): Promise<void> {
  await ipIn(a.netns, ['link', 'add', a.name, 'type', 'veth', 'peer', 'name', b.name, 'netns', b.netns]);
}
