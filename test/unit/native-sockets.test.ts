import test from 'ava';
import net from 'node:net';
import { nativeSockets } from '../../agent/inpod/sockets.ts';

test('a listener made by the addon accepts connections through Node', async (t) => {
  const fd = nativeSockets.listenTcp({ host: '127.0.0.1', port: 0, reusePort: true, mark: 0x539 });
  const server = net.createServer((socket) => socket.end('hello'));
  await new Promise<void>((resolve) => server.listen({ fd }, resolve));
  t.is(nativeSockets.getMark(fd), 0x539);
  const { port } = server.address() as net.AddressInfo;
  const reply = await new Promise<string>((resolve, reject) => {
    const client = net.connect(port, '127.0.0.1');
    let data = '';
    client.on('data', (chunk) => (data += chunk));
    client.on('end', () => resolve(data));
    client.on('error', reject);
  });
  t.is(reply, 'hello');
  await new Promise((resolve) => server.close(resolve));
});

test('errors carry the errno name as code', (t) => {
  const error = t.throws(() => nativeSockets.listenTcp({ netns: '/nonexistent/netns', host: '127.0.0.1', port: 0 }));
  t.is((error as NodeJS.ErrnoException).code, 'ENOENT');
  t.is((error as NodeJS.ErrnoException).syscall, 'open');
});
