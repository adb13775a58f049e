/**
 * Turning a TCP socket descriptor the addon made (in a pod's namespace, marked, maybe bound) into a net.Socket,
 * without Node guessing what the descriptor is.
 *
 * `new net.Socket({ fd })` first asks libuv what kind of descriptor it was given (`guessHandleType`: an fstat, a
 * getsockname and a getsockopt(SO_TYPE)), then makes the TCP handle. The factory knows it made a TCP socket, so it
 * makes the handle itself (Node's `tcp_wrap` binding, the class Node's own net.Socket uses) and hands it over with
 * `{ handle }`, as Node's server does for an accepted connection: three syscalls and a few microseconds less per
 * socket (the server agent makes one per tunnel it delivers). Where the binding cannot be reached (a Node without
 * `process.binding`, or with a different `tcp_wrap`), the documented `{ fd }` form is used, with the same result.
 *
 * Owns: that choice. Must not know about: namespaces, marks, pods.
 */
import net from 'node:net';

interface TcpHandle {
  open(fd: number): number;
  close(): void;
}

type TcpHandleClass = new (type: number) => TcpHandle;

/** Node's TCP handle class and its "client socket" type, or undefined when this Node does not offer them. */
function nodeTcpHandle(): { Tcp: TcpHandleClass; socketType: number } | undefined {
  try {
    const binding = (process as unknown as { binding(name: string): unknown }).binding('tcp_wrap') as { TCP?: unknown; constants?: { SOCKET?: unknown } };
    if (typeof binding.TCP !== 'function' || typeof binding.constants?.SOCKET !== 'number') return undefined;
    return { Tcp: binding.TCP as TcpHandleClass, socketType: binding.constants.SOCKET };
  } catch {
    return undefined;
  }
}

const tcpHandle = process.env.AMBIT_ADOPT_SOCKET_BY_FD === '1' ? undefined : nodeTcpHandle();

/** Which way sockets are adopted in this process: 'handle' (no type guess) or 'fd' (Node's documented form). */
export const adoptionMode: 'handle' | 'fd' = tcpHandle ? 'handle' : 'fd';

/**
 * A net.Socket owning `fd`, a TCP socket not yet connected (the caller connects it); half-open allowed, TCP_NODELAY set
 * by Node once connected when `noDelay`. Throws as `new net.Socket({ fd })` does when the descriptor cannot be adopted.
 */
export function adoptTcpSocket(fd: number, noDelay: boolean): net.Socket {
  if (tcpHandle === undefined) return new net.Socket({ fd, allowHalfOpen: true, noDelay });
  const handle = new tcpHandle.Tcp(tcpHandle.socketType);
  const status = handle.open(fd);
  if (status !== 0) {
    handle.close();
    return new net.Socket({ fd, allowHalfOpen: true, noDelay });
  }
  // Typed as a BoundSocket in @types/node; any handle of the native TCP class is what Node accepts here.
  return new net.Socket({ handle, allowHalfOpen: true, noDelay } as unknown as net.SocketConstructorOpts);
}
