// A running pod's labels and annotations changed in place in the cluster state directory (runtime/cluster-store.ts):
// the owner's new labels and annotations, the agent's redirection annotation and the kubelet's status kept.
import test from 'ava';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parse } from 'yaml';
import { podFile, updatePodMetadata, updatePodStatus, writePod } from '../../runtime/cluster-store.ts';
import type { PodObject } from '../../shared/k8s/objects.ts';

test("updating a pod's metadata keeps what others wrote and drops what its owner took out", async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ambit-cluster-store-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const pod: PodObject = { apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web', namespace: 'shop', labels: { app: 'web' }, annotations: { owner: 'a', gone: 'b' } }, spec: { containers: [{ name: 'web' }] } };
  await writePod(dir, pod);
  await updatePodStatus(dir, pod, { phase: 'Running', podIP: '10.0.0.5' });
  // The agent marks the pod captured in its file (agent/pod-annotator.ts), as it does after CNI ADD.
  const marked = parse(await readFile(podFile(dir, 'shop', 'web'), 'utf8')) as PodObject;
  marked.metadata.annotations = { ...marked.metadata.annotations, 'ambient.istio.io/redirection': 'enabled' };
  await writePod(dir, marked);
  await updatePodMetadata(dir, pod, { labels: { app: 'web', locked: 'true' }, annotations: { owner: 'c' }, previousAnnotations: { owner: 'a', gone: 'b' } });
  const now = parse(await readFile(podFile(dir, 'shop', 'web'), 'utf8')) as PodObject;
  t.deepEqual(now.metadata.labels, { app: 'web', locked: 'true' });
  t.deepEqual(now.metadata.annotations, { 'ambient.istio.io/redirection': 'enabled', owner: 'c' });
  t.like(now.status, { phase: 'Running', podIP: '10.0.0.5' });
  t.deepEqual(now.spec, pod.spec);
});
