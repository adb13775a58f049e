// Net test: the native addon's sockets in another network namespace (agent/native/sockets.c), made from the main
// thread and from a worker thread: each socket is in the namespace asked for, the thread is back in its own
// namespace after every one, and no descriptor is left behind per socket (the addon keeps its own namespace open
// once for the process, and only that).
import test from 'ava';
import { readdirSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import { nativeSockets } from '../../agent/inpod/sockets.ts';
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
