/**
 * Rude peers on the waypoint's HTTP/2 path, on a real 2-node local mesh (control plane, real agents, a real
 * waypoint process in its pod; node:http2 clients and servers in pods, killed for real): a client killed with -9
 * mid-download, a client that floods one connection with requests and with streams reset as they open, a backend
 * killed with -9 mid-response, a backend that stops answering mid-stream (SIGSTOP). Each time the waypoint lives on,
 * answers what it must (the client's stream reset, 503 with a reason while the backend is gone, 504 UT), and its
 * descriptors (/proc/PID/fd), open client sessions and streams and its memory come back to where they were.
 */
import test from 'ava';
import { readdir, readFile } from 'node:fs/promises';
import { NATIVE_GROWTH_BYTES } from '../../shared/memory/heap-release.ts';
import { WAYPOINT_GLIBC_TUNABLES, WAYPOINT_HEAP_RELEASE_GROWTH_BYTES, WAYPOINT_NODE_OPTIONS } from '../../waypoint/config.ts';
import { clientRun, clientSpawn, createProtocolMesh, H2_PORT, logText, serviceReady, startServer, until, waypointDump, writeObject, writeService, type ProtocolMesh } from './helpers/protocol-mesh.ts';

const RUDE_VIP = '10.240.6.10';
const RUDE_A_VIP = '10.240.6.11';
const MIB = 1024 * 1024;
/**
 * Descriptors the waypoint may hold above the baseline once a peer is gone: a pooled HBONE connection to an
 * endpoint's node can be opened anew after a backend died (the old one closed), as the baseline's was.
 */
const FD_SLACK = 2;

let setup: ProtocolMesh;
let waypointPid = 0;
let fdBaseline = 0;
let rssBaseline = 0;
let anonBaseline = 0;

async function waypointFds(): Promise<number> {
  return (await readdir(`/proc/${waypointPid}/fd`)).length;
}

async function waypointRss(field: 'VmRSS' | 'RssAnon' = 'VmRSS'): Promise<number> {
  const status = await readFile(`/proc/${waypointPid}/status`, 'utf8');
  return Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)![1]) * 1024;
}

async function h2Status(host: string, requestPath: string): Promise<{ status: number; body: unknown }> {
  const [result] = await clientRun(setup, { scenario: 'h2-get', host, port: 80, requests: [{ path: requestPath }] });
  return result;
}

/** Waits until the waypoint holds no client session or stream and no more descriptors than the baseline (+ slack). */
async function settled(what: string, timeoutMs = 20_000): Promise<void> {
  await until(
    `${what}: the waypoint back to its baseline`,
    async () => {
      const http2 = (await waypointDump(setup))?.http2;
      return http2?.activeStreams === 0 && http2.clientSessions === 0 && (await waypointFds()) <= fdBaseline + FD_SLACK;
    },
    timeoutMs,
  );
}

function stillAlive(t: { notRegex(text: string, pattern: RegExp, message: string): void }, text: string): void {
  t.notRegex(text, /Node\.js v|Error \[ERR_|uncaught/i, 'the waypoint did not crash');
}

test.before(async () => {
  setup = await createProtocolMesh('wx');
  await writeService(setup, 'rude', RUDE_VIP, [{ name: 'h2', appProtocol: 'kubernetes.io/h2c', port: 80, targetPort: H2_PORT }]);
  await writeService(setup, 'rude-a', RUDE_A_VIP, [{ name: 'h2', appProtocol: 'kubernetes.io/h2c', port: 80, targetPort: H2_PORT }], { app: 'web', version: 'v1' });
  await writeObject(setup, 'routes', 'rude-a', {
    apiVersion: 'gateway.networking.k8s.io/v1', kind: 'HTTPRoute', metadata: { name: 'rude-a', namespace: 'shop' },
    spec: {
      parentRefs: [{ group: '', kind: 'Service', name: 'rude-a', port: 80 }],
      rules: [
        { matches: [{ path: { type: 'PathPrefix', value: '/vanish' } }], backendRefs: [{ name: 'rude-a', port: 80 }], timeouts: { request: '5s' } },
        { matches: [{ path: { type: 'PathPrefix', value: '/' } }], backendRefs: [{ name: 'rude-a', port: 80 }] },
      ],
    },
  });
  await until('the waypoint and the client agent know the services', async () => (await serviceReady(setup, 'rude', 2)) && (await serviceReady(setup, 'rude-a', 1)), 60_000);
  await until('the route on rude-a', async () => ((await waypointDump(setup))?.routes?.['shop/rude-a.shop.svc.cluster.local']?.length ?? 0) === 2);
  waypointPid = (await waypointDump(setup)).pid as number;
});

test.serial('baseline: with pooled connections to both endpoints open and no client, what the waypoint holds', async (t) => {
  // Warm: the pooled connections to both endpoints exist before the baseline is taken.
  await clientRun(setup, { scenario: 'h2-get', host: RUDE_VIP, port: 80, requests: Array.from({ length: 6 }, () => ({ path: '/warm' })) });
  t.is((await h2Status(RUDE_A_VIP, '/warm')).status, 200);
  await until('no client session or stream left', async () => {
    const http2 = (await waypointDump(setup))?.http2;
    return http2?.activeStreams === 0 && http2.clientSessions === 0;
  });
  fdBaseline = await waypointFds();
  rssBaseline = await waypointRss();
  anonBaseline = await waypointRss('RssAnon');
  t.log(`waypoint pid ${waypointPid}: ${fdBaseline} descriptors, RSS ${(rssBaseline / MIB).toFixed(1)} MB`);
  t.true(fdBaseline > 0);
  // The runtime starts it with the settings sized for a proxy (waypoint/config.ts).
  const environment = (await readFile(`/proc/${waypointPid}/environ`, 'utf8')).split('\0');
  t.true(environment.includes(`NODE_OPTIONS=${WAYPOINT_NODE_OPTIONS}`), 'V8 flags');
  t.true(environment.includes(`GLIBC_TUNABLES=${WAYPOINT_GLIBC_TUNABLES}`), 'malloc arenas');
  t.true(environment.some((entry) => entry.startsWith('NODE_COMPILE_CACHE=')), 'the compile cache');
});

test.after.always(async () => {
  await setup?.mesh.destroy();
});

test.serial('a client killed with -9 mid-download, 5 times: its session and stream go, descriptors and memory back to the baseline', async (t) => {
  for (let run = 0; run < 5; run++) {
    const holder = clientSpawn(setup, { scenario: 'h2-hold', host: RUDE_VIP, port: 80, size: 256 * MIB });
    try {
      await until('the download is open', async () => holder.lines.some((line) => line.open === true), 30_000);
      t.true(((await waypointDump(setup)).http2.activeStreams as number) >= 1, 'the waypoint serves the stream');
    } finally {
      holder.child.kill('SIGKILL');
    }
    await settled(`after kill ${run}`);
  }
  const growth = (await waypointRss()) - rssBaseline;
  t.log(`descriptors ${fdBaseline} -> ${await waypointFds()}, RSS ${growth >= 0 ? '+' : ''}${(growth / MIB).toFixed(1)} MB after 5 killed clients`);
  t.true(growth < 30 * MIB, `the waypoint grew by ${(growth / MIB).toFixed(1)} MB`);
  stillAlive(t, await logText(setup.waypoint.logFile));
  t.is((await h2Status(RUDE_VIP, '/after')).status, 200, 'the next client is served');
});

/** Growth of V8's committed heap after which the waypoint gives memory back (shared/memory/heap-release.ts). */
const HEAP_RELEASE_GROWTH = WAYPOINT_HEAP_RELEASE_GROWTH_BYTES;

/** RSS, anonymous RSS and V8 heap used after each flood round, once the waypoint has given back what the round grew (the memory test below reads them). */
const rssAfterFloodRound: number[] = [];
const anonAfterFloodRound: number[] = [];
const heapUsedAfterFloodRound: number[] = [];

/**
 * Waits until the waypoint has given back the heap a burst grew: a memory-reducing GC ran after the burst began
 * (`heapReleases` above `releasesBefore`; a flood grows the heap far past the release's threshold), its committed
 * heap is within the release's growth threshold of what it was right after it, and the native release has run too;
 * then reads RSS, anonymous RSS and the heap used. Without the GC the heap used counts the flood's garbage (a
 * clean-clone CI read 23.5 MB in round 4 against 15.8 in round 1, with no release after round 4).
 */
async function memoryAfterRelease(what: string, releasesBefore: number): Promise<{ rss: number; anon: number; heapUsed: number; utilization: number; memory: Record<string, number> }> {
  let heapUsed = 0;
  let last: unknown;
  await until(
    `${what}: the waypoint gave back the memory the burst grew (its heap release ran)`,
    async () => {
      const memory = (await waypointDump(setup))?.memory as { heapReleases: number; heapTotal: number; heapUsed: number; heapAfterLastRelease: number; anonymousRss: number; anonymousAfterLastNativeRelease: number } | undefined;
      heapUsed = memory?.heapUsed ?? 0;
      last = memory;
      // Both releases done: the heap's (GC then malloc_trim), and the native one alone, which runs at the next quiet
      // check when only native memory grew (a burst whose heap stayed under the GC threshold): without waiting for
      // it, a round's RSS could be read before it (a clean-clone CI read 84 MB in round 4, 46 in rounds 1-3).
      return memory !== undefined && memory.heapReleases > releasesBefore && memory.heapTotal - memory.heapAfterLastRelease < HEAP_RELEASE_GROWTH && memory.anonymousRss - memory.anonymousAfterLastNativeRelease < NATIVE_GROWTH_BYTES;
    },
    60_000,
  ).catch((error: Error) => {
    // What the release was judged on (the loop's busy share at the last check, the heap's and the native growth).
    throw new Error(`${error.message}; the waypoint's memory at the last look: ${JSON.stringify(last)}`);
  });
  return { rss: await waypointRss(), anon: await waypointRss('RssAnon'), heapUsed, utilization: (last as { lastCheckUtilization?: number } | undefined)?.lastCheckUtilization ?? 0, memory: last as Record<string, number> };
}

test.serial('a client that floods one connection: 1,000 requests at once (200 streams allowed) are all answered; 2,000 streams reset as they open cost it its connection only, 4 rounds', async (t) => {
  // Four rounds of 3,000 streams: 2m20s at load 15-19 on the shared 2 cores, past ava's 120 s default.
  t.timeout(10 * 60 * 1000);
  for (let round = 0; round < 4; round++) {
    const releasesBefore = ((await waypointDump(setup)).memory as { heapReleases: number }).heapReleases;
    const flood = await clientRun(setup, { scenario: 'h2-flood', host: RUDE_VIP, port: 80, count: 1000, path: '/flood' });
    t.is(flood.statuses['200'], 1000, `round ${round}: Node queues the streams past the 200 the waypoint allows at once; each is answered (${JSON.stringify(flood)})`);
    const resets = await clientRun(setup, { scenario: 'h2-flood', host: RUDE_VIP, port: 80, count: 2000, path: '/reset', reset: true });
    if (round === 0) t.log(`reset flood: ${JSON.stringify(resets)}`);
    await settled(`after flood round ${round}`);
    const memory = await memoryAfterRelease(`after flood round ${round}`, releasesBefore);
    const m = memory.memory;
    const mib = (bytes: number | undefined) => ((bytes ?? 0) / MIB).toFixed(1);
    t.log(`round ${round}: released; the waypoint's loop was ${(memory.utilization * 100).toFixed(2)} % busy over the last heap check; heap releases ${m.heapReleases}, native ${m.nativeReleases}; heap total ${mib(m.heapTotal)} (after last release ${mib(m.heapAfterLastRelease)}), anonymous RSS ${mib(m.anonymousRss)} (after last native release ${mib(m.anonymousAfterLastNativeRelease)}), external ${mib(m.external)}, array buffers ${mib(m.arrayBuffers)}`);
    rssAfterFloodRound.push(memory.rss);
    anonAfterFloodRound.push(memory.anon);
    heapUsedAfterFloodRound.push(memory.heapUsed);
  }
  t.log(`RSS over the baseline after each round: ${rssAfterFloodRound.map((rss) => `+${((rss - rssBaseline) / MIB).toFixed(1)} MB`).join(', ')}`);
  stillAlive(t, await logText(setup.waypoint.logFile));
  t.is((await h2Status(RUDE_VIP, '/after')).status, 200, 'the next client is served');
});

// The growth once seen per flood round (10-35 MB, up to +131 MB after four rounds) was V8's committed heap: a round
// grows it from about 40 to 60-170 MB (a quarter to a half of it in use) and an idle process never ran the GC that
// gives pages back. Heap snapshots after rounds 1 and 4 held the same objects (only JIT code and maps grew, 0.3 MB):
// nothing per request or per connection was retained. The waypoint now runs the agent's heap release; after each
// round it is back to where it was, so four rounds must cost no more than one: anonymous RSS (heap, malloc, stacks)
// within RSS_ROUNDS_SLACK and the live heap within HEAP_ROUNDS_SLACK (a leak of 1 KB per request or reset stream
// would be 9 MB over rounds 2-4). Anonymous, not the whole RSS: the native release drops the node binary's pages and
// the ones in use fault back in as requests come, so the file-backed part reads 11 MB apart between rounds that
// hold the same anonymous memory (46.7 / 56.2 MB whole, 30.3 / 31.4 MB anonymous) and retains nothing per request.
const RSS_ROUNDS_SLACK = 10 * MIB;
const HEAP_ROUNDS_SLACK = 4 * MIB;
test.serial('memory: after four flood rounds the waypoint holds no more than after one (heap given back, nothing retained per request)', (t) => {
  t.is(rssAfterFloodRound.length, 4);
  const mb = (values: number[]) => values.map((value) => (value / MIB).toFixed(1)).join(', ');
  t.log(`after each round, once released: RSS ${mb(rssAfterFloodRound)} MB (baseline ${(rssBaseline / MIB).toFixed(1)}); anonymous ${mb(anonAfterFloodRound)} MB (baseline ${(anonBaseline / MIB).toFixed(1)}); V8 heap used ${mb(heapUsedAfterFloodRound)} MB`);
  const [firstAnon, , , fourthAnon] = anonAfterFloodRound as [number, number, number, number];
  const [firstHeap, , , fourthHeap] = heapUsedAfterFloodRound as [number, number, number, number];
  t.true(fourthAnon - firstAnon < RSS_ROUNDS_SLACK, `anonymous RSS grew by ${((fourthAnon - firstAnon) / MIB).toFixed(1)} MB from round 1 to round 4`);
  t.true(fourthHeap - firstHeap < HEAP_ROUNDS_SLACK, `the live heap grew by ${((fourthHeap - firstHeap) / MIB).toFixed(1)} MB from round 1 to round 4`);
  t.true(fourthAnon < anonBaseline + RSS_ROUNDS_SLACK, `anonymous RSS ${(fourthAnon / MIB).toFixed(1)} MB after four rounds, ${(anonBaseline / MIB).toFixed(1)} MB before any`);
});

test.serial('a backend killed with -9 mid-response: the client stream is reset (never a clean end), 503 with a reason while it is gone, served again once back', async (t) => {
  const reader = clientSpawn(setup, { scenario: 'h2-hold', host: RUDE_A_VIP, port: 80, size: 256 * MIB, read: true });
  try {
    await until('the download is open', async () => reader.lines.some((line) => line.open === true), 30_000);
    setup.servers.get('web-a')!.kill('SIGKILL');
    await until('the client saw its stream end', async () => reader.lines.some((line) => line.streamError !== undefined || line.ended === true), 20_000);
  } finally {
    reader.child.kill('SIGKILL');
  }
  const outcome = reader.lines.find((line) => line.streamError !== undefined || line.ended === true)!;
  t.log(JSON.stringify(outcome));
  t.truthy(outcome.streamError, 'a reset, not a clean end: the client must not take a cut body for a whole one');
  const gone = await h2Status(RUDE_A_VIP, '/while-gone');
  t.is(gone.status, 503, JSON.stringify(gone));
  t.regex(String(gone.body), /refused|reset|failed|HBONE/i, 'the answer says why');
  setup.servers.set('web-a', await startServer(setup.webA));
  await until('web-a serves again through the waypoint', async () => (await h2Status(RUDE_A_VIP, '/back')).status === 200);
  await settled('after the backend kill');
  stillAlive(t, await logText(setup.waypoint.logFile));
  t.pass();
});

test.serial('a backend that stops answering mid-stream (SIGSTOP): timeouts.request resets the client stream (UT) and the waypoint lets go of it', async (t) => {
  const server = setup.servers.get('web-a')!;
  const reader = clientSpawn(setup, { scenario: 'h2-hold', host: RUDE_A_VIP, port: 80, path: `/vanish/big?size=${64 * 1024 * MIB}`, read: true });
  try {
    await until('the download is open', async () => reader.lines.some((line) => line.open === true), 30_000);
    server.kill('SIGSTOP');
    await until('the client saw its stream end', async () => reader.lines.some((line) => line.streamError !== undefined || line.ended === true), 20_000);
  } finally {
    server.kill('SIGCONT');
    reader.child.kill('SIGKILL');
  }
  t.truthy(reader.lines.find((line) => line.streamError !== undefined), JSON.stringify(reader.lines));
  let line: Record<string, unknown> | undefined;
  await until('the access-log line of the cut stream', async () => {
    line = (await logText(setup.waypoint.logFile))
      .split('\n')
      .filter((text) => text.includes('"msg":"request"') && text.includes('/vanish/big'))
      .map((text) => JSON.parse(text) as Record<string, unknown>)
      .pop();
    return line !== undefined;
  });
  t.like(line, { response_code: 200, response_flags: 'UT', response_code_details: 'upstream_reset_after_response_started' });
  await settled('after the stalled backend');
  t.is((await h2Status(RUDE_A_VIP, '/after')).status, 200, 'the backend, resumed, is served again');
});
