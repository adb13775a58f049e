/**
 * agent/inpod/inherited-no-delay.ts with the addon's listeners: a connection accepted on a listener the socket factory
 * made has TCP_NODELAY in the kernel (inherited from the listening socket, no setsockopt of its own), and Node knows it,
 * so `setNoDelay(true)` (the splice's) makes no second call. Without the option on the listener, the accepted socket
 * would run with Nagle on while Node believed it off: the kernel's value is what this checks.
 */
import test from 'ava';
import net from 'node:net';
import { markedSocketFactory } from '../../agent/inpod/socket-factory.ts';
import { noDelayInheritable, passesNoDelay } from '../../agent/inpod/inherited-no-delay.ts';
import { nativeSockets } from '../../agent/inpod/sockets.ts';

function fdOf(socket: net.Socket): number {
  return (socket as unknown as { _handle: { fd: number } })._handle.fd;
}

test('a connection accepted on the factory\'s listener has TCP_NODELAY from the kernel, and Node does not set it again', async (t) => {
  t.true(noDelayInheritable, 'this Node offers the per-socket flag');
  const server = await markedSocketFactory().listen({ host: '127.0.0.1', port: 0 });
  t.true(passesNoDelay(server));
  const accepted = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
  const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
  const socket = await accepted;
  t.true(nativeSockets.tcpNoDelay(fdOf(socket)), 'the accepted socket inherited TCP_NODELAY');
  // What the pod listeners do for each connection; setNoDelay(true) then leaves the handle alone.
  const { markNoDelaySet } = await import('../../agent/inpod/inherited-no-delay.ts');
  markNoDelaySet(socket);
  let handleCalls = 0;
  const handle = (socket as unknown as { _handle: { setNoDelay(enable: boolean): number } })._handle;
  const original = handle.setNoDelay.bind(handle);
  handle.setNoDelay = (enable: boolean): number => {
    handleCalls++;
    return original(enable);
  };
  socket.setNoDelay(true);
  t.is(handleCalls, 0);
  socket.setNoDelay(false);
  t.is(handleCalls, 1, 'turning it off still reaches the socket');
  t.false(nativeSockets.tcpNoDelay(fdOf(socket)));
  client.destroy();
  socket.destroy();
  await new Promise((resolve) => server.close(resolve));
});
