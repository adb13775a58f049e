/**
 * CSR signatures per second of the control plane's CA (issue 4's goal: at least 1,000/s).
 *
 *   node bench/ca-signatures.ts [--seconds 5] [--concurrency 32]
 *
 * Two figures: `signCsr` in one process (the signing core alone), and CreateCertificate end to end over TLS
 * gRPC on loopback with the CA service in its own process (authentication, CSR checks, node authorization,
 * signing, framing). CSRs are made before timing starts: the agent's key generation is not the CA's cost.
 * Both processes share this machine's cores, so the end-to-end figure includes the client's own work.
 * Each row also gives signatures per CPU-second of the signing process (process.cpuUsage): on a machine
 * shared with other work that is the steadier figure, the rate one dedicated core would sustain.
 */
import { fork } from 'node:child_process';
import { once } from 'node:events';
import { parseArgs } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { registerCaService } from '../controlplane/ca/ca-service.ts';
import { bootstrapTokenAuthenticator } from '../controlplane/ca/node-authenticator.ts';
import { AUTHORIZATION_METADATA_KEY, IstioCertificateServiceClient, type IstioCertificateResponse } from '../shared/ca/ca-proto.ts';
import { x509 } from '../shared/identity/crypto-provider.ts';
import { CertificateAuthority, createCsr, generateKeyPair, importPrivateKeyPem, SIGNING_ALGORITHM, spiffeId } from '../shared/identity/index.ts';

const TD = 'cluster.local';
const TOKEN = 'bench-node-token';
const DISTINCT_CSRS = 200;

const { values } = parseArgs({ options: { seconds: { type: 'string', default: '5' }, concurrency: { type: 'string', default: '32' }, serve: { type: 'string' } } });
const seconds = Number(values.seconds);
const concurrency = Number(values.concurrency);

async function serve(rootCertPem: string, rootKeyPem: string): Promise<void> {
  const ca = await CertificateAuthority.load({ trustDomain: TD, certPem: rootCertPem, keyPem: rootKeyPem });
  const server = new grpc.Server();
  const pods = Array.from({ length: DISTINCT_CSRS }, (_, i) => ({ namespace: 'bench', serviceAccount: `sa-${i}` }));
  registerCaService(server, { ca, authenticate: bootstrapTokenAuthenticator({ [TOKEN]: 'bench-node' }), podsOnNode: () => pods });
  const serverKeys = await generateKeyPair();
  const rootKeys = await importPrivateKeyPem(rootKeyPem);
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: '01',
    subject: 'CN=bench-ca',
    issuer: new x509.X509Certificate(rootCertPem).subject,
    notBefore: new Date(Date.now() - 60_000),
    notAfter: new Date(Date.now() + 3600_000),
    signingAlgorithm: SIGNING_ALGORITHM,
    publicKey: serverKeys.publicKey,
    signingKey: rootKeys.privateKey,
    extensions: [new x509.SubjectAlternativeNameExtension([{ type: 'ip', value: '127.0.0.1' }])],
  });
  const credentials = grpc.ServerCredentials.createSsl(null, [{ cert_chain: Buffer.from(cert.toString('pem')), private_key: Buffer.from(serverKeys.privateKeyPem) }]);
  server.bindAsync('127.0.0.1:0', credentials, (error, port) => {
    if (error) throw error;
    process.send!({ port });
  });
  process.on('message', (message: { cpu?: boolean }) => {
    if (message.cpu) process.send!({ cpuMicros: process.cpuUsage() });
  });
  process.on('disconnect', () => server.forceShutdown());
}

async function main(): Promise<void> {
  const ca = await CertificateAuthority.createRoot({ trustDomain: TD });
  const csrs: string[] = [];
  for (let i = 0; i < DISTINCT_CSRS; i++) csrs.push(await createCsr(await generateKeyPair(), spiffeId(TD, 'bench', `sa-${i}`)));

  // 1. The signing core in this process.
  let signed = 0;
  let start = performance.now();
  const cpuBefore = process.cpuUsage();
  while (performance.now() - start < seconds * 1000) await ca.signCsr(csrs[signed++ % csrs.length]!);
  const inProcess = signed / ((performance.now() - start) / 1000);
  const cpu = process.cpuUsage(cpuBefore);
  const inProcessPerCpuSecond = signed / ((cpu.user + cpu.system) / 1e6);

  // 2. End to end: the service in a child process, `concurrency` calls outstanding at all times.
  const child = fork(new URL(import.meta.url), ['--serve', '1'], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  child.send({ rootCertPem: ca.rootCertPem, rootKeyPem: ca.rootKeyPem });
  const [{ port }] = (await once(child, 'message')) as [{ port: number }];
  const client = new IstioCertificateServiceClient(`127.0.0.1:${port}`, grpc.credentials.createSsl(Buffer.from(ca.rootCertPem)));
  const metadata = new grpc.Metadata();
  metadata.set(AUTHORIZATION_METADATA_KEY, `Bearer ${TOKEN}`);
  const call = (csr: string) =>
    new Promise<IstioCertificateResponse>((resolve, reject) =>
      (client as unknown as Record<string, (...args: unknown[]) => void>)['CreateCertificate']!({ csr }, metadata, (error: Error | null, response: IstioCertificateResponse) => (error ? reject(error) : resolve(response))),
    );
  const serverCpu = async (): Promise<number> => {
    child.send({ cpu: true });
    const [{ cpuMicros }] = (await once(child, 'message')) as [{ cpuMicros: { user: number; system: number } }];
    return cpuMicros.user + cpuMicros.system;
  };
  for (let i = 0; i < 200; i++) await call(csrs[i % csrs.length]!); // connect and warm up
  let answered = 0;
  const serverCpuBefore = await serverCpu();
  start = performance.now();
  const deadline = start + seconds * 1000;
  await Promise.all(Array.from({ length: concurrency }, async (_, lane) => {
    for (let i = lane; performance.now() < deadline; i += concurrency) {
      await call(csrs[i % csrs.length]!);
      answered++;
    }
  }));
  const endToEnd = answered / ((performance.now() - start) / 1000);
  const endToEndPerCpuSecond = answered / (((await serverCpu()) - serverCpuBefore) / 1e6);
  client.close();
  child.disconnect();

  console.log('| path | signatures/s (wall clock) | signatures per CPU-second of the signing process |');
  console.log('|---|---|---|');
  console.log(`| CertificateAuthority.signCsr, one process | ${inProcess.toFixed(0)} | ${inProcessPerCpuSecond.toFixed(0)} |`);
  console.log(`| CreateCertificate over TLS gRPC, ${concurrency} outstanding, CA in its own process | ${endToEnd.toFixed(0)} | ${endToEndPerCpuSecond.toFixed(0)} |`);
}

if (values.serve) {
  process.once('message', (message: { rootCertPem: string; rootKeyPem: string }) => void serve(message.rootCertPem, message.rootKeyPem));
} else {
  await main();
}
