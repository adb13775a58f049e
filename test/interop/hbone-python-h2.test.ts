import test from 'ava';
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { promisify } from 'node:util';
import { fileURLToPath } from 'node:url';
import { CLIENT_ID, SERVER_ID, startPair, startTarget } from '../helpers/hbone.ts';

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

interop('a python3-h2 client tunnels through our HBONE server: data round-trips and END_STREAM becomes FIN', async (t) => {
  // The target echoes and closes only after it saw the client's FIN, which can only come from END_STREAM.
  let sawFin = false;
  const target = await startTarget((socket) => {
    socket.pipe(socket);
    socket.on('end', () => (sawFin = true));
  });
  const tunnels: Array<{ peer: string; bytesIn: number; bytesOut: number }> = [];
  const pair = await startPair({ server: { onTunnel: (event) => tunnels.push({ peer: event.request.peerIdentity.uri, bytesIn: event.bytesIn, bytesOut: event.bytesOut }) } });
  const dir = mkdtempSync(path.join(tmpdir(), 'ambit-h2-'));
  t.teardown(async () => {
    rmSync(dir, { recursive: true, force: true });
    await pair.close();
    await target.close();
  });
  const files = {
    cert: path.join(dir, 'client.pem'),
    key: path.join(dir, 'client.key'),
    ca: path.join(dir, 'root.pem'),
    payload: path.join(dir, 'payload.bin'),
  };
  writeFileSync(files.cert, pair.mesh.clientCert.certPem);
  writeFileSync(files.key, pair.mesh.clientCert.keyPem);
  writeFileSync(files.ca, pair.mesh.ca.rootCertPem);
  const payload = randomBytes(200_000);
  writeFileSync(files.payload, payload);
  const { stdout } = await run(PYTHON, [
    SCRIPT, '127.0.0.1', String(pair.serverAddress.port), files.cert, files.key, files.ca, `127.0.0.1:${target.address.port}`, files.payload,
  ], { timeout: 30_000 });
  const result = JSON.parse(stdout) as { status: number; data: string; ended: boolean; reset: number | null; peer: string[] };
  t.is(result.status, 200);
  t.true(result.ended, 'the server ended the stream after the target closed');
  t.is(result.reset, null);
  t.true(Buffer.from(result.data, 'hex').equals(payload), 'every byte came back in order');
  t.true(sawFin, 'END_STREAM reached the target as a FIN');
  t.deepEqual(result.peer, [SERVER_ID.uri], 'the python client saw our SPIFFE identity');
  t.is(tunnels.length, 1);
  t.deepEqual(tunnels[0], { peer: CLIENT_ID.uri, bytesIn: payload.length, bytesOut: payload.length });
});

interop('a python3-h2 client gets 400 for a malformed :authority', async (t) => {
  const pair = await startPair();
  const dir = mkdtempSync(path.join(tmpdir(), 'ambit-h2-'));
  t.teardown(async () => {
    rmSync(dir, { recursive: true, force: true });
    await pair.close();
  });
  writeFileSync(path.join(dir, 'c.pem'), pair.mesh.clientCert.certPem);
  writeFileSync(path.join(dir, 'c.key'), pair.mesh.clientCert.keyPem);
  writeFileSync(path.join(dir, 'ca.pem'), pair.mesh.ca.rootCertPem);
  writeFileSync(path.join(dir, 'p.bin'), 'x');
  const { stdout } = await run(PYTHON, [
    SCRIPT, '127.0.0.1', String(pair.serverAddress.port), path.join(dir, 'c.pem'), path.join(dir, 'c.key'), path.join(dir, 'ca.pem'), 'db.internal:5432', path.join(dir, 'p.bin'),
  ], { timeout: 30_000 });
  t.is((JSON.parse(stdout) as { status: number }).status, 400);
});
