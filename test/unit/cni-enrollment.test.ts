// Unit tests: Istio ambient's enrollment rule (shared/k8s/enrollment.ts), one case per rule.
import test from 'ava';
import { captureDecision } from '../../shared/k8s/enrollment.ts';
import type { NamespaceObject, PodObject } from '../../shared/k8s/objects.ts';

function pod(overrides: { labels?: Record<string, string>; annotations?: Record<string, string>; hostNetwork?: boolean; containers?: string[] } = {}): PodObject {
  return {
    kind: 'Pod',
    metadata: { name: 'web-0', namespace: 'shop', labels: overrides.labels ?? {}, annotations: overrides.annotations ?? {} },
    spec: { hostNetwork: overrides.hostNetwork ?? false, containers: (overrides.containers ?? ['app']).map((name) => ({ name })) },
  };
}

function namespace(labels: Record<string, string> = {}): NamespaceObject {
  return { kind: 'Namespace', metadata: { name: 'shop', labels } };
}

const AMBIENT = { 'istio.io/dataplane-mode': 'ambient' };
const NONE = { 'istio.io/dataplane-mode': 'none' };

test('namespace label ambient enrolls', (t) => {
  const decision = captureDecision(pod(), namespace(AMBIENT));
  t.true(decision.capture);
  t.regex(decision.reason, /namespace label/);
});

test('pod label ambient enrolls even in an unlabelled or missing namespace', (t) => {
  t.true(captureDecision(pod({ labels: AMBIENT }), namespace()).capture);
  t.true(captureDecision(pod({ labels: AMBIENT }), undefined).capture);
});

test('pod label none opts out of an enrolled namespace', (t) => {
  const decision = captureDecision(pod({ labels: NONE }), namespace(AMBIENT));
  t.false(decision.capture);
  t.regex(decision.reason, /opts out/);
});

test('no label anywhere: not captured', (t) => {
  t.false(captureDecision(pod(), namespace()).capture);
  t.false(captureDecision(pod(), undefined).capture);
  t.false(captureDecision(pod(), namespace({ 'istio.io/dataplane-mode': 'sidecar' })).capture);
});

test('host-network pods are never captured', (t) => {
  const decision = captureDecision(pod({ hostNetwork: true, labels: AMBIENT }), namespace(AMBIENT));
  t.false(decision.capture);
  t.regex(decision.reason, /host network/);
});

test('pods with an istio-proxy container are never captured', (t) => {
  const decision = captureDecision(pod({ containers: ['app', 'istio-proxy'], labels: AMBIENT }), namespace(AMBIENT));
  t.false(decision.capture);
  t.regex(decision.reason, /sidecar/);
});

test('pods with the sidecar status annotation are never captured', (t) => {
  const decision = captureDecision(pod({ annotations: { 'sidecar.istio.io/status': '{}' } }), namespace(AMBIENT));
  t.false(decision.capture);
  t.regex(decision.reason, /sidecar\.istio\.io\/status/);
});
