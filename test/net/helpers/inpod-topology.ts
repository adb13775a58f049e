/**
 * Test helper: a tiny two-namespace topology for in-pod capture tests, plus sockets inside namespaces.
 *
 *   [pod ns]  veth0 10.77.0.1/24  <---->  veth0 10.77.0.2/24  [peer ns]
 *             fd77::1/64 (dual stack)         fd77::2/64
 *
 * Owns: creating and deleting the namespaces (unique `ambit-t<random>-` names so test files run in
 * parallel), and making listeners and client sockets inside them from the test process (the addon enters
 * the namespace per socket, so no helper processes and nothing in the root namespace).
 * Never imported by production code.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { promisify } from 'node:util';
import { nativeSockets } from '../../../agent/inpod/sockets.ts';

const exec = promisify(execFile);

export interface Netns {
  name: string;
  path: string;
  ip: string;
  /** The IPv6 address, in a dual-stack topology. */
  ip6?: string;
}

export interface PodTopology {
  pod: Netns;
  peer: Netns;
  destroy(): Promise<void>;
}

async function ip(...args: string[]): Promise<void> {
  await exec('ip', args);
}

export function uniquePrefix(): string {
  return `ambit-t${randomBytes(4).toString('hex')}-`;
}

/** Creates pod and peer namespaces joined by a veth pair, lo up in both; IPv6 addresses too with `dualStack`. */
export async function createPodTopology(prefix = uniquePrefix(), options: { dualStack?: boolean } = {}): Promise<PodTopology> {
  const pod: Netns = { name: `${prefix}pod`, path: `/run/netns/${prefix}pod`, ip: '10.77.0.1', ...(options.dualStack ? { ip6: 'fd77::1' } : {}) };
  const peer: Netns = { name: `${prefix}peer`, path: `/run/netns/${prefix}peer`, ip: '10.77.0.2', ...(options.dualStack ? { ip6: 'fd77::2' } : {}) };
  const destroy = async (): Promise<void> => {
    for (const ns of [pod, peer]) await exec('ip', ['netns', 'del', ns.name]).catch(() => undefined);
  };
  try {
    await ip('netns', 'add', pod.name);
    await ip('netns', 'add', peer.name);
    await ip('-n', pod.name, 'link', 'add', 'veth0', 'type', 'veth', 'peer', 'name', 'veth0', 'netns', peer.name);
    for (const ns of [pod, peer]) {
      await ip('-n', ns.name, 'addr', 'add', `${ns.ip}/24`, 'dev', 'veth0');
      // nodad: usable at once, not after duplicate address detection's second or two.
      if (ns.ip6) await ip('-n', ns.name, 'addr', 'add', `${ns.ip6}/64`, 'dev', 'veth0', 'nodad');
      await ip('-n', ns.name, 'link', 'set', 'veth0', 'up');
      await ip('-n', ns.name, 'link', 'set', 'lo', 'up');
    }
  } catch (error) {
    await destroy();
    throw error;
  }
  return { pod, peer, destroy };
}

/** A plain (unmarked, no SO_REUSEPORT) TCP server inside a namespace. */
export async function listenIn(
  netns: string, host: string, port: number, onConnection: (socket: net.Socket) => void,
): Promise<net.Server> {
  const fd = nativeSockets.listenTcp({ netns, host, port, reuseAddress: true });
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ allowHalfOpen: false }, (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    onConnection(socket);
  });
  openSockets.set(server, sockets);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ fd } as net.ListenOptions, () => resolve());
  });
  return server;
}

/** An application's connection from inside a namespace: unmarked, so the pod's rules apply to it. */
export function connectFrom(netns: string, host: string, port: number): net.Socket {
  const fd = nativeSockets.socketTcp({ netns, family: net.isIPv6(host) ? 6 : 4 });
  return new net.Socket({ fd }).connect({ host, port });
}

/**
 * Sends `message`, half-closes, and resolves with everything the other side sent before closing. The timeout is
 * for a connection that never ends: generous, as a loaded machine (load 30-40 with other tests' namespaces) took
 * more than 3-5 s to end echoes that had already arrived (a lost connection is reset or refused, not slow).
 */
export const EXCHANGE_TIMEOUT_MS = 15_000;
export function exchange(socket: net.Socket, message: string, timeoutMs = EXCHANGE_TIMEOUT_MS): Promise<string> {
  return new Promise((resolve, reject) => {
    let reply = '';
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error(`no reply within ${timeoutMs} ms (got ${JSON.stringify(reply)})`));
    }, timeoutMs);
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => (reply += chunk));
    socket.on('error', (error) => {
      clearTimeout(timer);
      reject(error);
    });
    socket.on('end', () => {
      clearTimeout(timer);
      resolve(reply);
    });
    socket.end(message);
  });
}

const openSockets = new WeakMap<net.Server, Set<net.Socket>>();

/** Closes a server made by listenIn and destroys its open connections. */
export function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    for (const socket of openSockets.get(server) ?? []) socket.destroy();
  });
}
