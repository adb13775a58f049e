/**
 * An agent admin endpoint running in-process over a small fake node (workloads, captured pods, certificates),
 * for the admin and ambitctl tests. Test helper only: never imported by production code.
 */
import { startAdminServer, type AdminSources } from '../../agent/admin.ts';
import { servicesView } from '../../shared/mesh/views.ts';
import type { RunningHttpServer } from '../../agent/http-listen.ts';
import { MeshState } from '../../shared/mesh/mesh-state.ts';
import type { Workload } from '../../shared/mesh/workload.ts';
import { CertificateAuthority, spiffeId, type WorkloadCertificate } from '../../shared/identity/index.ts';
import { captureLog, type CapturedLog } from './log-capture.ts';
import { sessionSocketStats } from '../../shared/hbone/session-socket.ts';

export function fakeWorkload(name: string, namespace: string, ip: string, extra: Partial<Workload> = {}): Workload {
  return {
    uid: `${namespace}-${name}-uid`, name, namespace, serviceAccount: name, trustDomain: 'cluster.local', node: 'node-1', addresses: [ip],
    tunnelProtocol: 'HBONE', captureReason: 'namespace shop is labelled', canonicalName: name, canonicalRevision: 'latest', workloadName: name, netns: `/var/run/netns/${name}`,
    ...extra,
  };
}

export interface AdminFixture {
  url: string;
  server: RunningHttpServer;
  sources: AdminSources;
  certificates: WorkloadCertificate[];
  captured: CapturedLog;
}

export async function startAdminFixture(): Promise<AdminFixture> {
  const state = new MeshState();
  const web = 'shop/web.shop.svc.cluster.local';
  state.upsertService({
    name: 'web', namespace: 'shop', hostname: 'web.shop.svc.cluster.local', vips: [{ network: '', address: '10.96.0.10' }, { network: '', address: 'fd00:96::10' }],
    ports: [{ servicePort: 80, targetPort: 8080 }, { servicePort: 9090, targetPort: 0 }], subjectAltNames: [], ipFamilies: 'DUAL',
    loadBalancing: { routingPreference: ['NODE'], mode: 'STRICT', healthPolicy: 'ONLY_HEALTHY' },
  });
  state.upsertService({ name: 'db', namespace: 'shop', hostname: 'db.shop.svc.cluster.local', vips: [], ports: [{ servicePort: 5432, targetPort: 5432 }], subjectAltNames: [], ipFamilies: 'AUTOMATIC' });
  state.upsert(fakeWorkload('web', 'shop', '10.1.1.5', { services: { [web]: [{ servicePort: 80, targetPort: 8080 }] } }));
  state.upsert(fakeWorkload('db', 'shop', '10.1.1.6', { status: 'UNHEALTHY', services: { 'shop/db.shop.svc.cluster.local': [{ servicePort: 5432, targetPort: 5432 }] } }));
  state.upsert(fakeWorkload('legacy', 'old', '10.1.2.7', { tunnelProtocol: 'NONE', captureReason: 'namespace old is not enrolled' }));
  const ca = await CertificateAuthority.createRoot({ trustDomain: 'cluster.local' });
  const certificates = [
    await ca.issueWorkloadCertificate(spiffeId('cluster.local', 'shop', 'web'), 60 * 60 * 1000),
    await ca.issueWorkloadCertificate(spiffeId('cluster.local', 'shop', 'db'), 2 * 60 * 60 * 1000),
  ];
  const captured = captureLog('info');
  const sources: AdminSources = {
    nodeName: 'node-1',
    state,
    capturedPods: () => [{ uid: 'shop-web-uid', name: 'web', namespace: 'shop', netns: '/var/run/netns/web', ips: ['10.1.1.5'] }],
    listenerStats: () => ({ accepted: 4, refused: 0, handlerErrors: 0 }),
    certificates: () => certificates,
    policies: () => [{ name: 'allow-web', namespace: 'shop', action: 'ALLOW' }],
    services: () => servicesView(state),
    config: { nodeName: 'node-1', trustDomain: 'cluster.local' },
    sessionSockets: sessionSocketStats,
    log: captured.log,
  };
  const server = await startAdminServer({ host: '127.0.0.1', port: 0 }, sources);
  return { url: `http://127.0.0.1:${server.address.port}`, server, sources, certificates, captured };
}
