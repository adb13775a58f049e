// Unit tests: rejections in telemetry. agent/telemetry/rejection-log.ts (one warning per rejection, at most N per
// reason per window, what was held back said in the next line) and AgentMetrics.connectionRejected (Istio's
// opened/closed counters with response_flags, and ambit_connections_rejected_total by reason).
import test from 'ava';
import { RejectionLog, REJECTION_LOG_MESSAGE } from '../../agent/telemetry/rejection-log.ts';
import { AgentMetrics } from '../../agent/telemetry/metrics.ts';
import type { ConnectionRecord } from '../../agent/proxy/report.ts';
import type { Workload } from '../../shared/mesh/workload.ts';
import { HboneError } from '../../shared/hbone/errors.ts';
import { parsePrometheusText, sumOf } from '../helpers/prometheus-text.ts';

const pod: Workload = {
  uid: 'shop-server-uid', name: 'server', namespace: 'shop', serviceAccount: 'server', trustDomain: 'cluster.local', node: 'node-0',
  addresses: ['10.0.1.5'], tunnelProtocol: 'HBONE', captureReason: 'namespace label', canonicalName: 'server', canonicalRevision: 'v1', workloadName: 'server',
};

function rejection(overrides: Partial<ConnectionRecord> = {}): ConnectionRecord {
  const error = new HboneError('HBONE_MISDIRECTED', 'destination 10.0.9.9 is not an address of pod shop/server');
  return {
    direction: 'inbound', sourcePrincipal: 'spiffe://cluster.local/ns/evil/sa/prober', sourceAddress: '10.0.0.7', destination: pod,
    destinationAddress: { host: '10.0.9.9', port: 80 }, mtls: true, bytesSent: 0, bytesReceived: 0, durationMs: 0, responseFlags: error.responseFlags, error,
    ...overrides,
  };
}

test('at most N lines per reason per window; the next line says how many were held back; reasons have their own budget', (t) => {
  let now = 0;
  const lines: Array<{ object: Record<string, unknown>; message: string }> = [];
  const log = new RejectionLog({ warn: (object, message) => lines.push({ object: object as Record<string, unknown>, message }) }, { linesPerWindow: 3, windowMs: 1000, now: () => now });
  for (let i = 0; i < 10; i++) log.rejected(rejection(), 'misdirected');
  t.is(lines.length, 3, '3 of 10 in the first window');
  log.rejected(rejection({ sourcePrincipal: undefined, mtls: false }), 'tls');
  t.is(lines.length, 4, 'another reason is not held back by the first');
  now = 1000;
  log.rejected(rejection(), 'misdirected');
  t.is(lines.length, 5);
  t.is(lines[4]!.object.suppressed, 7, 'the 7 held back are said');
  t.is(lines[4]!.message, REJECTION_LOG_MESSAGE);
  t.like(lines[0]!.object, { reason: 'misdirected', direction: 'inbound', src: { address: '10.0.0.7', principal: 'spiffe://cluster.local/ns/evil/sa/prober' }, dst: { address: '10.0.9.9:80' }, response_flags: 'DPE' });
  t.regex(String(lines[0]!.object.error), /not an address of pod shop\/server/);
  t.false('principal' in (lines[3]!.object.src as object), 'no identity without mutual TLS');
  t.false('suppressed' in lines[1]!.object);
});

test('a rejection is counted as opened and closed with its response flags, and by reason', async (t) => {
  const metrics = new AgentMetrics({ processMetrics: false });
  metrics.connectionRejected(rejection(), 'misdirected');
  metrics.connectionRejected(rejection(), 'misdirected');
  const tls = new HboneError('HBONE_TLS', 'client presented no acceptable certificate');
  metrics.connectionRejected(rejection({ sourcePrincipal: undefined, mtls: false, destinationAddress: { host: '10.0.1.5', port: 15008 }, responseFlags: tls.responseFlags, error: tls }), 'tls');
  const samples = parsePrometheusText(await metrics.text());
  t.is(sumOf(samples, 'ambit_connections_rejected_total', { direction: 'inbound', reason: 'misdirected' }), 2);
  t.is(sumOf(samples, 'ambit_connections_rejected_total', { direction: 'inbound', reason: 'tls' }), 1);
  t.is(sumOf(samples, 'istio_tcp_connections_opened_total', { reporter: 'destination', destination_workload: 'server' }), 3);
  t.is(sumOf(samples, 'istio_tcp_connections_closed_total', { response_flags: 'DPE', source_principal: 'spiffe://cluster.local/ns/evil/sa/prober' }), 2);
  t.is(sumOf(samples, 'istio_tcp_connections_closed_total', { response_flags: 'UF', source_principal: 'unknown' }), 1);
  t.is(metrics.openConnections, 0, 'nothing stays open');
});
