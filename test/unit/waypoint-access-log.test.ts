// Unit tests: waypoint/access-log.ts — the request line built as JSON text for pino loggers says exactly what the
// object form says (any values a peer or a configuration can choose), framed as pino frames the object form; the
// members both HTTP paths fill in from their request (fillTryFields) are the request's.
import test from 'ava';
import fc from 'fast-check';
import { fillTryFields, logRequest, REQUEST_LOG_MESSAGE, requestLogFieldsJson, requestLogLine, reusedBlock, type RequestRecord, type TriedRequest } from '../../waypoint/access-log.ts';
import type { HboneRequest } from '../../shared/hbone/index.ts';
import type { Service } from '../../shared/mesh/service.ts';
import type { Workload } from '../../shared/mesh/workload.ts';
import { spiffeId } from '../../shared/identity/spiffe.ts';
import { captureLog } from '../helpers/log-capture.ts';
import { pino, type Logger } from 'pino';
import { BatchedLogDestination } from '../../waypoint/log-destination.ts';

const text = fc.string({ unit: 'grapheme', maxLength: 16 });
const anyRecord: fc.Arbitrary<RequestRecord> = fc.record(
  {
    method: text,
    path: fc.oneof(text, fc.constant('/a?b="c"&d=\\')),
    protocol: fc.constantFrom('HTTP/1.1', 'HTTP/2', 'HTTP/1.0'),
    authority: text,
    status: fc.oneof(fc.integer({ min: 0, max: 599 }), fc.constant(Number.NaN)),
    flags: fc.constantFrom('-', 'UF,URX', 'DC', '"odd\\flag'),
    details: text,
    durationMs: fc.oneof(fc.double({ min: 0, max: 1e7, noNaN: true }), fc.constant(Number.POSITIVE_INFINITY)),
    bytesReceived: fc.nat(),
    bytesSent: fc.nat(),
    upstreamHost: fc.oneof(fc.constant(''), text),
    upstreamCluster: text,
    attempts: fc.nat({ max: 5 }),
    routeName: fc.oneof(fc.constant(''), text),
    ruleName: fc.oneof(fc.constant(''), text),
    requestId: text,
    traceId: text,
    spanId: text,
    src: fc.record({ principal: text, workload: text, namespace: text, address: text }),
    dst: fc.record({ principal: text, workload: text, namespace: text, service: text }),
    grpcStatus: fc.oneof(fc.constant('0'), text),
    authz: fc.record({ decision: fc.constantFrom('allow' as const, 'deny' as const, 'unauthenticated' as const), policy: text, rule: fc.nat(), reason: text }, { requiredKeys: ['decision', 'reason'] }),
  },
  { requiredKeys: ['method', 'path', 'protocol', 'authority', 'status', 'flags', 'details', 'durationMs', 'bytesReceived', 'bytesSent', 'upstreamHost', 'upstreamCluster', 'attempts', 'routeName', 'ruleName', 'requestId', 'traceId', 'spanId', 'src', 'dst'] },
);

test('the request line built as text says what the object form says, for any record (quotes, backslashes, control and non-ASCII characters, NaN)', (t) => {
  fc.assert(
    fc.property(anyRecord, (record) => {
      const fields = requestLogFieldsJson(record);
      const parsed = JSON.parse(`{${fields.slice(1)}}`) as Record<string, unknown>;
      const object = JSON.parse(JSON.stringify(requestLogLine(record))) as Record<string, unknown>;
      t.deepEqual(parsed, object);
      t.deepEqual(Object.keys(parsed), Object.keys(object));
      // src and dst blocks reused across lines (serialised once, when registered) write the same text.
      t.is(requestLogFieldsJson({ ...record, src: reusedBlock({ ...record.src }), dst: reusedBlock({ ...record.dst }) }), fields);
      return true;
    }),
    { numRuns: 2000 },
  );
});

const record: RequestRecord = {
  method: 'POST', path: '/bench?x="1"', protocol: 'HTTP/1.1', authority: 'via.bench.svc:80', status: 200, flags: '-', details: 'via_upstream', durationMs: 1.6,
  bytesReceived: 1024, bytesSent: 1024, upstreamHost: '10.0.2.5:8080', upstreamCluster: 'bench/via.bench.svc.cluster.local', attempts: 1, routeName: '', ruleName: '',
  requestId: 'id-1', traceId: 'a'.repeat(32), spanId: 'b'.repeat(16),
  src: { principal: 'spiffe://cluster.local/ns/bench/sa/client', workload: 'client', namespace: 'bench', address: '10.0.1.4' },
  dst: { principal: 'spiffe://cluster.local/ns/bench/sa/server', workload: 'server', namespace: 'bench', service: 'via.bench.svc.cluster.local' },
};

test('through pino the text line is framed as pino frames the object (level, time, bindings, message), at the level in force now', (t) => {
  const { log, lines } = captureLog();
  const child = log.child({ waypoint: 'waypoint' });
  logRequest(child, record);
  child.info(requestLogLine(record), REQUEST_LOG_MESSAGE);
  t.is(lines.length, 2);
  const [fast, object] = lines as [Record<string, unknown>, Record<string, unknown>];
  t.true(typeof fast.time === 'number' && Math.abs((fast.time as number) - (object.time as number)) < 1000);
  t.deepEqual({ ...fast, time: 0 }, { ...object, time: 0 });
  t.deepEqual(Object.keys(fast), Object.keys(object), 'same keys in the same order');
  t.like(fast, { level: 30, waypoint: 'waypoint', msg: 'request', path: '/bench?x="1"', response_code: 200, upstream_host: '10.0.2.5:8080', route_name: '-' });
  child.level = 'warn';
  logRequest(child, record);
  t.is(lines.length, 2, 'no request line at warn');
});

test('a logger that is no plain pino logger gets the object form', (t) => {
  const logged: Array<[object, string]> = [];
  const fake = { info: (object: object, message: string) => logged.push([object, message]) } as unknown as Logger;
  logRequest(fake, record);
  t.deepEqual(logged, [[requestLogLine(record), REQUEST_LOG_MESSAGE]]);
});

test('into the waypoint\'s batching destination the line is written as bytes, framed as pino frames the object, for any record', (t) => {
  const written: Buffer[] = [];
  const destination = new BatchedLogDestination({ write: (bytes: Buffer) => written.push(bytes), flushSync: () => undefined }, 4096, 60_000);
  t.teardown(() => destination.close());
  const child = pino({ level: 'info' }, destination).child({ waypoint: 'wäypoint "w"' });
  const expected: Array<Record<string, unknown>> = [];
  fc.assert(
    fc.property(anyRecord, (record) => {
      logRequest(child, record);
      expected.push(JSON.parse(JSON.stringify(requestLogLine(record))) as Record<string, unknown>);
      return true;
    }),
    { numRuns: 500 },
  );
  destination.flushSync();
  t.true(written.length > 10, 'in several batches');
  const lines = Buffer.concat(written).toString('utf8').split('\n').filter((line) => line !== '');
  t.is(lines.length, expected.length);
  lines.forEach((line, index) => {
    const parsed = JSON.parse(line) as Record<string, unknown>;
    t.deepEqual(Object.keys(parsed), ['level', 'time', 'pid', 'hostname', 'waypoint', ...Object.keys(expected[index]!), 'msg']);
    t.like(parsed, { level: 30, pid: process.pid, waypoint: 'wäypoint "w"', msg: 'request' });
    t.true(Math.abs((parsed.time as number) - Date.now()) < 60_000);
    t.deepEqual({ ...parsed, level: 0, time: 0, pid: 0, hostname: 0, waypoint: 0, msg: 0 }, { level: 0, time: 0, pid: 0, hostname: 0, waypoint: 0, ...expected[index], msg: 0 });
  });
});

function workload(name: string, namespace: string, ip: string): Workload {
  return {
    uid: `${name}-uid`, name: `${name}-0`, namespace, serviceAccount: `${name}-sa`, trustDomain: 'cluster.local', node: 'n0', addresses: [ip],
    tunnelProtocol: 'HBONE', captureReason: '', canonicalName: name, canonicalRevision: 'v1', workloadName: name,
  };
}

test('the members both HTTP paths take from their request: bytes, upstream, attempts, route and rule, ids, src and dst blocks (made once), policy outcome', (t) => {
  const client = workload('client', 'shop', '10.0.0.7');
  const server = workload('server', 'web', '10.0.1.9');
  const service = { name: 'web', namespace: 'web', hostname: 'web.web.svc.cluster.local' } as Service;
  const hbone = { peerIdentity: spiffeId('cluster.local', 'shop', 'client-sa'), remoteAddress: '::ffff:10.0.0.7', target: { host: '10.96.0.5', port: 80 }, headers: {} } as HboneRequest;
  const request: TriedRequest = {
    context: { hbone, source: client },
    requestId: 'id-7', trace: { traceId: 'c'.repeat(32), spanId: 'd'.repeat(16) }, entry: { route: 'web/r', ruleName: 'first' },
    destination: service, endpoint: server, upstreamHost: '10.0.1.9:8080', attempts: 2, responseBytes: 333,
  };
  const line: RequestRecord = { ...record, authz: undefined };
  const authz = { decision: 'allow' as const, reason: 'allowed', policy: 'web/p', rule: 0 };
  fillTryFields(line, request, 444, authz);
  t.deepEqual(line, {
    ...record,
    bytesReceived: 444, bytesSent: 333, upstreamHost: '10.0.1.9:8080', upstreamCluster: 'web/web.web.svc.cluster.local', attempts: 2, routeName: 'web/r', ruleName: 'first',
    requestId: 'id-7', traceId: 'c'.repeat(32), spanId: 'd'.repeat(16),
    src: { principal: 'spiffe://cluster.local/ns/shop/sa/client-sa', workload: 'client', namespace: 'shop', address: '10.0.0.7' },
    dst: { principal: 'spiffe://cluster.local/ns/web/sa/server-sa', workload: 'server', namespace: 'web', service: 'web.web.svc.cluster.local' },
    authz,
  });
  const src = line.src;
  const dst = line.dst;
  // The next request of the stream, to the same endpoint, without a route, policy or answer: the blocks are the same objects.
  fillTryFields(line, { ...request, entry: undefined, endpoint: server, upstreamHost: '', attempts: 0, responseBytes: 0 }, 0, undefined);
  t.is(line.src, src, 'one src block per client stream');
  t.is(line.dst, dst, 'one dst block per endpoint and Service');
  t.like(line, { routeName: '', ruleName: '', upstreamHost: '', attempts: 0, bytesReceived: 0, bytesSent: 0, authz: undefined });
  // No endpoint answered; another client stream of an unknown workload.
  fillTryFields(line, { ...request, context: { hbone: { ...hbone, remoteAddress: '10.0.0.8' }, source: undefined }, endpoint: undefined }, 1, undefined);
  t.deepEqual(line.src, { principal: 'spiffe://cluster.local/ns/shop/sa/client-sa', workload: 'unknown', namespace: 'shop', address: '10.0.0.8' });
  t.deepEqual(line.dst, { principal: 'unknown', workload: 'unknown', namespace: 'unknown', service: 'web.web.svc.cluster.local' });
  t.not(line.src, src);
});
