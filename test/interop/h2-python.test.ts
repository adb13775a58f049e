/**
 * ambit's own HTTP/2 layer as an HBONE server (H2TunnelServer) against python3-h2, an independent HTTP/2
 * implementation, as the client (test/interop/h2_client.py): CONNECT, data both ways, END_STREAM -> FIN, 400.
 */
import test from 'ava';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { CLIENT_ID, SERVER_ID, startTarget } from '../helpers/hbone.ts';
import { startH2Pair, type H2Pair } from '../helpers/h2-tunnel.ts';

const PYTHON = '/usr/bin/python3';
const SCRIPT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'h2_client.py');
const run = promisify(execFile);

async function hasPythonH2(): Promise<boolean> {
  if (!existsSync(PYTHON)) return false;
  try {
    await run(PYTHON, ['-c', 'import h2']);
    return true;
  } catch {
    return false;
  }
}

const available = await hasPythonH2();
const interop = available ? test : test.skip;
if (!available) console.warn('skipping python3-h2 interop: /usr/bin/python3 with the h2 module is missing (apt-get install python3-h2)');

interface PythonResult {
  status: number;
  data: string;
  ended: boolean;
  reset: number | null;
  peer: string[];
}

async function runClient(pair: H2Pair, authority: string, payload: Buffer): Promise<PythonResult> {
  const dir = mkdtempSync(path.join(tmpdir(), 'ambit-h2-'));
  try {
    const files = { cert: path.join(dir, 'c.pem'), key: path.join(dir, 'c.key'), ca: path.join(dir, 'ca.pem'), payload: path.join(dir, 'p.bin') };
    writeFileSync(files.cert, pair.mesh.clientCert.certPem);
    writeFileSync(files.key, pair.mesh.clientCert.keyPem);
    writeFileSync(files.ca, pair.mesh.ca.rootCertPem);
    writeFileSync(files.payload, payload);
    const { stdout } = await run(PYTHON, [SCRIPT, '127.0.0.1', String(pair.serverAddress.port), files.cert, files.key, files.ca, authority, files.payload], {
      timeout: 60_000,
      maxBuffer: 64 * 1024 * 1024,
    });
    return JSON.parse(stdout) as PythonResult;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

interop('a python3-h2 client tunnels through our own HTTP/2 server: data round-trips and END_STREAM becomes FIN', async (t) => {
  let sawFin = false;
  const target = await startTarget((socket) => {
    socket.pipe(socket);
    socket.on('end', () => (sawFin = true));
  });
  const tunnels: Array<{ peer: string; bytesIn: number; bytesOut: number }> = [];
  const pair = await startH2Pair({ server: { onTunnel: (event) => tunnels.push({ peer: event.request.peerIdentity.uri, bytesIn: event.bytesIn, bytesOut: event.bytesOut }) } });
  t.teardown(async () => {
    await pair.close();
    await target.close();
  });
  // 2 MB: past python3-h2's 64 KiB default windows, so both sides' WINDOW_UPDATEs are exercised.
  const payload = randomBytes(2_000_000);
  const result = await runClient(pair, `127.0.0.1:${target.address.port}`, payload);
  t.is(result.status, 200);
  t.true(result.ended, 'the server ended the stream after the target closed');
  t.is(result.reset, null);
  t.true(Buffer.from(result.data, 'hex').equals(payload), 'every byte came back in order');
  t.true(sawFin, 'END_STREAM reached the target as a FIN');
  t.deepEqual(result.peer, [SERVER_ID.uri]);
  t.deepEqual(tunnels, [{ peer: CLIENT_ID.uri, bytesIn: payload.length, bytesOut: payload.length }]);
});

interop('a python3-h2 client gets 400 from our own HTTP/2 server for a malformed :authority', async (t) => {
  const pair = await startH2Pair();
  t.teardown(() => pair.close());
  const result = await runClient(pair, 'db.internal:5432', Buffer.from('x'));
  t.is(result.status, 400);
});
