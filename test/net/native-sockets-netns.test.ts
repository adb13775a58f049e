// Net test: the native addon's sockets in another network namespace (agent/native/sockets.c), made from the main
// thread and from a worker thread: each socket is in the namespace asked for, the thread is back in its own
// namespace after every one, and no descriptor is left behind per socket (the addon keeps its own namespace open
// once for the process, and only that). An in-pod socket factory holds the pod's namespace open while the pod is
// captured, and lets it go when told (the pod released).
import test from 'ava';
import { readdirSync, statSync } from 'node:fs';
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

/** Descriptors of this process that refer to the namespace at `path` (the same namespace inode). */
function descriptorsOf(path: string): number {
  const { ino, dev } = statSync(path);
  let count = 0;
  for (const entry of readdirSync('/proc/self/fd')) {
    try {
      const info = statSync(`/proc/self/fd/${entry}`);
      if (info.ino === ino && info.dev === dev) count++;
    } catch {
      // closed meanwhile (the readdir's own descriptor)
    }
  }
  return count;
}

test.serial('an in-pod factory holds the pod namespace once while in use, its sockets are in it, and close() lets it go', async (t) => {
  const server = await listenIn(topology.peer.path, topology.peer.ip, 7103, (socket) => socket.end('from peer'));
  t.teardown(() => closeServer(server));
  const factory = inPodSocketFactory(topology.pod.path);
  t.teardown(() => factory.close?.());
  t.is(descriptorsOf(topology.pod.path), 0, 'nothing held before the first socket');
  for (let index = 0; index < 3; index++) {
    t.is(await exchange(factory.connect({ host: topology.peer.ip, port: 7103 }), 'hi'), 'from peer', 'the factory\'s socket is in the pod namespace');
  }
  t.is(descriptorsOf(topology.pod.path), 1, 'one descriptor of the pod namespace, whatever the number of sockets');
  factory.close?.();
  t.is(descriptorsOf(topology.pod.path), 0, 'released: the namespace is no longer held by the agent');
  // A socket asked for after the release is still made in the pod namespace (opened by path, for that socket).
  t.is(await exchange(factory.connect({ host: topology.peer.ip, port: 7103 }), 'hi'), 'from peer');
  t.is(descriptorsOf(topology.pod.path), 0);
});

test.serial('openNetns refuses a file that is not a network namespace', (t) => {
  const error = t.throws(() => nativeSockets.openNetns('/proc/self/ns/uts'));
  t.is((error as NodeJS.ErrnoException).code, 'EINVAL');
  t.is(descriptorsOf(topology.pod.path), 0);
});
