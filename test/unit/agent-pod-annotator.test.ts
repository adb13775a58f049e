// The agent's mark on captured pods (ambient.istio.io/redirection), in both places it goes: the API server (a merge
// patch, against the stand-in API server: no Kubernetes runs here) and a local cluster directory's Pod file.
import test from 'ava';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { parse } from 'yaml';
import { apiServerAnnotator, clusterDirAnnotator, REDIRECTION_ANNOTATION } from '../../agent/pod-annotator.ts';
import { FakeKubeApiServer } from '../helpers/kube-api-server.ts';

const pod = { namespace: 'shop', name: 'web-1' };

test('in a cluster: a merge patch sets the annotation, keeps the others, removes it again; a pod already gone is fine', async (t) => {
  const api = await FakeKubeApiServer.start();
  t.teardown(() => api.close());
  api.apply({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web-1', namespace: 'shop', annotations: { team: 'payments' } } });
  const annotator = apiServerAnnotator({ server: api.url, ca: Buffer.from(api.caPem), insecureSkipTlsVerify: false, token: api.clientToken });
  const annotations = () => (api.get('Pod', 'shop', 'web-1')?.metadata?.annotations ?? {}) as Record<string, string>;
  await annotator.mark(pod, true);
  t.deepEqual(annotations(), { team: 'payments', [REDIRECTION_ANNOTATION]: 'enabled' });
  t.true(api.requests.includes('PATCH /api/v1/namespaces/shop/pods/web-1'));
  await annotator.mark(pod, false);
  t.deepEqual(annotations(), { team: 'payments' });
  await t.notThrowsAsync(annotator.mark({ namespace: 'shop', name: 'gone' }, true), '404: nothing to mark');
  const refused = apiServerAnnotator({ server: api.url, ca: Buffer.from(api.caPem), insecureSkipTlsVerify: false, token: 'wrong' });
  await t.throwsAsync(refused.mark(pod, true), { message: /answered 401 to the annotation patch of pod shop\/web-1/ });
});

test('local mode: the pod file gets the annotation (the rest of the file kept), loses it again; other files are refused or skipped', async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ambit-annotate-test-'));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, 'web.yaml');
  await writeFile(file, '# the web pod\napiVersion: v1\nkind: Pod\nmetadata:\n  name: web-1\n  namespace: shop\nstatus:\n  podIP: 10.0.0.1\n');
  const annotator = clusterDirAnnotator(dir);
  await annotator.mark(pod, true);
  const text = await readFile(file, 'utf8');
  t.true(text.startsWith('# the web pod'), 'comments survive');
  const object = parse(text) as { metadata: { annotations: Record<string, string> }; status: { podIP: string } };
  t.is(object.metadata.annotations[REDIRECTION_ANNOTATION], 'enabled');
  t.is(object.status.podIP, '10.0.0.1');
  await annotator.mark(pod, false);
  t.is((parse(await readFile(file, 'utf8')) as { metadata: { annotations?: Record<string, string> } }).metadata.annotations?.[REDIRECTION_ANNOTATION], undefined);

  await writeFile(path.join(dir, 'many.yaml'), 'apiVersion: v1\nkind: Pod\nmetadata: {name: a, namespace: shop}\n---\napiVersion: v1\nkind: Pod\nmetadata: {name: b, namespace: shop}\n');
  await t.throwsAsync(annotator.mark({ namespace: 'shop', name: 'a' }, true), { message: /with other documents: not annotated there/ });
  await t.notThrowsAsync(annotator.mark({ namespace: 'shop', name: 'missing' }, true));
});
