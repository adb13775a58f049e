// Net test: the native addon's sockets in another network namespace (agent/native/sockets.c), made from the main
// thread and from a worker thread: each socket is in the namespace asked for, the thread is back in its own
// namespace after every one, and no descriptor is left behind per socket (the addon keeps its own namespace open
// once for the process, and only that).
import test from 'ava';
import { readdirSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { nativeSockets } from '../../agent/inpod/sockets.ts';
import { inPodSocketFactory } from '../../agent/inpod/socket-factory.ts';
import { closeServer, connectFrom, createPodTopology, exchange, listenIn, type PodTopology } from './helpers/inpod-topology.ts';

let topology: PodTopology;
test.before(async () => {
  topology = await createPodTopology();
});
test.after.always(async () => {
  await topology?.destroy();
});

const SOCKETS = 300;

function openDescriptors(): number {
  return readdirSync('/proc/self/fd').length;
}

test.serial('sockets made in a pod namespace are in it, the thread stays home, and no descriptor is left per socket', async (t) => {
  const home = nativeSockets.currentNetns();
  // The peer is reachable only from the pod namespace (the veth pair joins the two, nothing else does).
  const server = await listenIn(topology.peer.path, topology.peer.ip, 7101, (socket) => socket.end('from peer'));
  t.teardown(() => closeServer(server));
  t.is(await exchange(connectFrom(topology.pod.path, topology.peer.ip, 7101), 'hi'), 'from peer', 'a socket of the pod namespace reaches the peer');
  const before = openDescriptors();
  for (let index = 0; index < SOCKETS; index++) {
    const fd = nativeSockets.socketTcp({ netns: topology.pod.path, family: 4 });
    nativeSockets.closeFd(fd);
    t.is(nativeSockets.currentNetns(), home);
  }
  t.true(openDescriptors() - before <= 2, `descriptors before ${before}, after ${SOCKETS} sockets ${openDescriptors()}`);
  // A socket made without a namespace is the thread's own: the peer's address is unreachable from here.
  const local = nativeSockets.socketTcp({ family: 4 });
  nativeSockets.closeFd(local);
  t.is(nativeSockets.currentNetns(), home);
});

test.serial('a worker thread makes sockets in the pod namespace too and stays in its own namespace', async (t) => {
  const server = await listenIn(topology.peer.path, topology.peer.ip, 7102, (socket) => socket.end('from peer'));
  t.teardown(() => closeServer(server));
  const module = new URL('../../agent/inpod/sockets.ts', import.meta.url).href;
  const helpers = new URL('./helpers/inpod-topology.ts', import.meta.url).href;
  const worker = new Worker(
    `import { nativeSockets } from ${JSON.stringify(module)};
     import { connectFrom, exchange } from ${JSON.stringify(helpers)};
     import { parentPort, workerData } from 'node:worker_threads';
     const home = nativeSockets.currentNetns();
     let stayed = true;
     for (let index = 0; index < ${SOCKETS}; index++) {
       nativeSockets.closeFd(nativeSockets.socketTcp({ netns: workerData.pod, family: 4 }));
       if (nativeSockets.currentNetns() !== home) stayed = false;
     }
     const reply = await exchange(connectFrom(workerData.pod, workerData.peerIp, 7102), 'hi');
     parentPort.postMessage({ home, stayed, reply });`,
    { eval: true, workerData: { pod: topology.pod.path, peerIp: topology.peer.ip } },
  );
  const [result] = (await new Promise((resolve, reject) => {
    worker.once('message', (message) => resolve([message]));
    worker.once('error', reject);
  })) as [{ home: string; stayed: boolean; reply: string }];
  await worker.terminate();
  t.is(result.home, nativeSockets.currentNetns(), 'the worker thread started in the process namespace');
  t.true(result.stayed, 'and was back in it after every socket');
  t.is(result.reply, 'from peer');
});

test.serial('a burst of connects in one turn through the in-pod factory: every socket in the pod namespace, a few trips into it, spares closed the next turn', async (t) => {
  const home = nativeSockets.currentNetns();
  let accepted = 0;
  const server = await listenIn(topology.peer.path, topology.peer.ip, 7103, (socket) => {
    accepted++;
    socket.end('from peer');
  });
  t.teardown(() => closeServer(server));
  const factory = inPodSocketFactory(topology.pod.path);
  const BURST = 40;
  // One turn, as the tunnel server connects the streams of one read: every socket must be of the pod's namespace
  // (only it reaches the peer), and batches make far fewer namespace trips than sockets.
  const sockets = Array.from({ length: BURST }, () => factory.connect({ host: topology.peer.ip, port: 7103 }));
  t.is(nativeSockets.currentNetns(), home, 'the thread is home after the burst');
  const replies = await Promise.all(sockets.map((socket) => exchange(socket, 'hi')));
  t.deepEqual(new Set(replies), new Set(['from peer']), 'every connection reached the peer from the pod namespace');
  t.is(accepted, BURST);
  // A second burst a turn later starts from what the first used; then a lone connect.
  const second = Array.from({ length: BURST }, () => factory.connect({ host: topology.peer.ip, port: 7103 }));
  t.deepEqual(new Set(await Promise.all(second.map((socket) => exchange(socket, 'hi')))), new Set(['from peer']));
  t.is(await exchange(factory.connect({ host: topology.peer.ip, port: 7103 }), 'hi'), 'from peer');
  // Spares made and not used are closed in the next turn's check phase: once a turn passed, every socket made was
  // either connected or closed.
  await new Promise((resolve) => setImmediate(resolve));
  await new Promise((resolve) => setImmediate(resolve));
  const stats = (factory as unknown as { batchStats(): { batches: number; socketsMade: number; sparesClosed: number } }).batchStats();
  t.true(stats.batches <= 16, `namespace trips for ${2 * BURST + 1} sockets: ${stats.batches}`);
  t.is(stats.socketsMade - stats.sparesClosed, 2 * BURST + 1, `every socket made was used or closed: ${JSON.stringify(stats)}`);
});
