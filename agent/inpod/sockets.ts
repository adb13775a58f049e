/**
 * Typed access to the native socket addon (agent/native/sockets.c).
 *
 * Owns: loading the addon and describing its functions' types. Everything that
 * needs a socket in another network namespace, a mark, SO_REUSEPORT,
 * IP_TRANSPARENT or SO_ORIGINAL_DST goes through here.
 * Must not know about: pods, policy, HBONE.
 */
import { createRequire } from 'node:module';
import { CaptureError } from './errors.ts';

export interface ListenOptions {
  /** Path of the network namespace to create the socket in (e.g. /run/netns/pod-a); current namespace when absent. */
  netns?: string;
  /** A descriptor of that namespace the caller holds (openNetns): used instead of opening `netns` for this socket. */
  netnsFd?: number;
  host: string;
  port: number;
  backlog?: number;
  mark?: number;
  reusePort?: boolean;
  reuseAddress?: boolean;
  transparent?: boolean;
  ipv6Only?: boolean;
  /** TCP_NODELAY on the listening socket: the connections it accepts inherit it. */
  noDelay?: boolean;
}

export interface UdpOptions {
  netns?: string;
  netnsFd?: number;
  host: string;
  port: number;
  mark?: number;
  reusePort?: boolean;
  ipv6Only?: boolean;
}

export interface SocketOptions {
  netns?: string;
  netnsFd?: number;
  family?: 4 | 6;
  mark?: number;
  transparent?: boolean;
  bindHost?: string;
  bindPort?: number;
  noDelay?: boolean;
}

export interface OriginalDestination {
  address: string;
  port: number;
  family: 4 | 6;
}

/** Errors thrown by the addon carry the errno name as `code` (EACCES, ENOENT, ...). */
export interface NativeSocketError extends Error {
  code: string;
  errno: number;
  syscall: string;
}

interface NativeSockets {
  listenTcp(options: ListenOptions): number;
  socketTcp(options: SocketOptions): number;
  /** A bound UDP socket (DNS): wrap with dgram's bind({ fd }). */
  bindUdp(options: UdpOptions): number;
  /** `family`: the socket's own (its listener's), which spares a getsockname; asked of the kernel when absent. */
  originalDst(fd: number, family?: 4 | 6): OriginalDestination;
  /** A descriptor of the network namespace at `path` (refused when it is none), for the options' `netnsFd`; closeFd it. */
  openNetns(path: string): number;
  setMark(fd: number, mark: number): void;
  getMark(fd: number): number;
  /** TCP_NODELAY as the kernel has it on `fd`. */
  tcpNoDelay(fd: number): boolean;
  closeFd(fd: number): void;
  currentNetns(): string;
}

const require = createRequire(import.meta.url);

/** Where the addon is built (npm run install: node-gyp rebuild in agent/native). */
export const NATIVE_SOCKETS_PATH = '../native/build/Release/ambit_sockets.node';

/** Every function this file declares, so an addon built from older C (a stale build) fails at load, not per connection. */
export const NATIVE_SOCKET_FUNCTIONS: readonly (keyof NativeSockets)[] = ['listenTcp', 'socketTcp', 'bindUdp', 'originalDst', 'openNetns', 'setMark', 'getMark', 'tcpNoDelay', 'closeFd', 'currentNetns'];

/**
 * `addon` as the typed interface, once every function this file declares is there; otherwise a CaptureError
 * NATIVE_ADDON_STALE naming the missing ones and saying to rebuild it (the agent then fails at start, not later on
 * every connection that reaches the missing function).
 */
export function checkNativeSockets(addon: unknown): NativeSockets {
  const functions = addon as Record<string, unknown> | null | undefined;
  const missing = NATIVE_SOCKET_FUNCTIONS.filter((name) => typeof functions?.[name] !== 'function');
  if (missing.length > 0) {
    throw new CaptureError('NATIVE_ADDON_STALE', `the native socket addon (agent/native/build/Release/ambit_sockets.node) lacks ${missing.join(', ')}: it was built from older sources; rebuild it (npm run install)`);
  }
  return addon as NativeSockets;
}

export const nativeSockets: NativeSockets = checkNativeSockets(require(NATIVE_SOCKETS_PATH));
