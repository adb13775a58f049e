// Net test: a socket the native addon binds to an address with port 0 (how the agent delivers a tunnel to the
// application with the client's own address) gets its port at connect(), from the whole 4-tuple. Bound at bind()
// instead, every such socket needs a port no other socket bound to that address holds, TIME-WAIT ones included: a
// connection storm's TIME-WAITs then make every bind a long search and finally exhaust the range (EADDRINUSE)
// although the same port to another destination would do. Two namespaces joined by a veth pair.
import test from 'ava';
import type net from 'node:net';
import { run } from '../../runtime/exec.ts';
import { nativeSockets } from '../../agent/inpod/sockets.ts';
import { closeServer, createPodTopology, listenIn, type PodTopology } from './helpers/inpod-topology.ts';

let topology: PodTopology;
test.before(async () => {
  topology = await createPodTopology();
});
test.after.always(async () => {
  await topology?.destroy();
});

/** Four applications on the peer: four destinations, so four connections from one address need only one port. */
const PEER_PORTS = [7201, 7202, 7203, 7204];

test.serial('connections bound to an address with port 0 share the ephemeral ports across destinations (two ports, four destinations)', async (t) => {
  // Two ephemeral ports in the pod namespace: with ports taken at bind(), the third socket would find none.
  const range = await run('ip', ['netns', 'exec', topology.pod.name, 'sysctl', '-qw', 'net.ipv4.ip_local_port_range=40000 40001']);
  t.is(range.code, 0, range.stderr);
  const servers = await Promise.all(PEER_PORTS.map((port) => listenIn(topology.peer.path, topology.peer.ip, port, (socket) => socket.end(`from ${port}`))));
  t.teardown(() => Promise.all(servers.map(closeServer)));
  const { Socket } = await import('node:net');
  const sockets: net.Socket[] = [];
  t.teardown(() => {
    for (const socket of sockets) socket.destroy();
  });
  const replies: string[] = [];
  for (const port of PEER_PORTS) {
    // Throws EADDRINUSE at bind() when the port is chosen there.
    const fd = nativeSockets.socketTcp({ netns: topology.pod.path, family: 4, bindHost: topology.pod.ip });
    const socket = new Socket({ fd, allowHalfOpen: true }).connect({ host: topology.peer.ip, port });
    sockets.push(socket);
    replies.push(
      await new Promise<string>((resolve, reject) => {
        let text = '';
        socket.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
        socket.once('end', () => resolve(text));
        socket.once('error', reject);
      }),
    );
  }
  t.deepEqual(replies, PEER_PORTS.map((port) => `from ${port}`));
  const localPorts = new Set(sockets.map((socket) => socket.localPort));
  t.true([...localPorts].every((port) => port === 40000 || port === 40001), `local ports ${[...localPorts].join(', ')}`);
});
