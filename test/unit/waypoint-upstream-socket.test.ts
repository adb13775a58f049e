/**
 * The waypoint's upstream socket face of an HBONE stream (waypoint/upstream-connections.ts HboneStreamSocket) under
 * Node's keep-alive HTTP client, as the waypoint uses it: many requests on one kept-alive stream leave no listener
 * behind per request. Real node:http2 on loopback carries the stream; an HTTP/1.1 server answers on its far end.
 */
import test from 'ava';
import http from 'node:http';
import http2 from 'node:http2';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { Http2StreamDuplex } from '../../waypoint/stream-adapter.ts';
import { HboneStreamSocket } from '../../waypoint/upstream-connections.ts';

test('a kept-alive stream carries 200 requests and keeps a constant number of timeout listeners', async (t) => {
  const backend = http.createServer({ keepAlive: true }, (request, response) => {
    request.resume();
    request.on('end', () => response.end('ok'));
  });
  const h2 = http2.createServer();
  h2.on('stream', (stream) => {
    stream.respond({ ':status': 200 });
    backend.emit('connection', new Http2StreamDuplex(stream));
  });
  await new Promise<void>((resolve) => h2.listen(0, '127.0.0.1', resolve));
  const session = http2.connect(`http://127.0.0.1:${(h2.address() as AddressInfo).port}`);
  t.teardown(() => {
    session.destroy();
    h2.close();
  });
  const sockets: HboneStreamSocket[] = [];
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1, timeout: 15_000 });
  agent.createConnection = ((_options: unknown, callback: (error: Error | null, socket?: Duplex) => void): undefined => {
    const stream = session.request({ ':method': 'CONNECT', ':authority': 'backend:80' });
    stream.once('response', () => {
      const socket = new HboneStreamSocket(stream);
      sockets.push(socket);
      callback(null, socket);
    });
    return undefined;
  }) as unknown as http.Agent['createConnection'];
  const counts: number[] = [];
  for (let index = 0; index < 200; index++) {
    const body = await new Promise<string>((resolve, reject) => {
      const request = http.request({ host: 'backend', port: 80, path: `/${index}`, agent }, (response) => {
        let text = '';
        response.on('data', (chunk: Buffer) => (text += chunk.toString()));
        response.on('end', () => resolve(text));
      });
      request.on('error', reject);
      request.end();
    });
    t.is(body, 'ok');
    counts.push(sockets[0]!.listenerCount('timeout'));
  }
  t.is(sockets.length, 1, 'every request went over the one kept-alive stream');
  t.true(counts.at(-1)! <= counts[0]!, `timeout listeners after the 1st request ${counts[0]}, after the 200th ${counts.at(-1)}`);
  agent.destroy();
});
