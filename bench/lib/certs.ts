/**
 * The certificate material of one run: a fresh root and two workload identities, written to the run directory
 * both as PEM files (for stunnel) and as JSON workload certificates (for our relays), so the anchor and ambit
 * present the same ECDSA P-256 certificates from the same CA.
 *
 * Owns: making and writing them. Must not know about: who uses which file.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { CertificateAuthority, spiffeId, type WorkloadCertificate } from '../../shared/identity/index.ts';

export const BENCH_TRUST_DOMAIN = 'cluster.local';

export interface CertificateFiles {
  /** Workload certificate JSON, read by bench/tools/common.ts readWorkloadCertificate. */
  json: string;
  certPem: string;
  keyPem: string;
  identity: string;
}

export interface BenchCertificates {
  trustDomain: string;
  caPem: string;
  client: CertificateFiles;
  server: CertificateFiles;
}

export async function writeBenchCertificates(runDir: string): Promise<BenchCertificates> {
  const ca = await CertificateAuthority.createRoot({ trustDomain: BENCH_TRUST_DOMAIN });
  const caPem = path.join(runDir, 'ca.pem');
  writeFileSync(caPem, ca.rootCertPem);
  const write = async (serviceAccount: string): Promise<CertificateFiles> => {
    const certificate = await ca.issueWorkloadCertificate(spiffeId(BENCH_TRUST_DOMAIN, 'bench', serviceAccount));
    const files: CertificateFiles = {
      json: path.join(runDir, `${serviceAccount}.json`),
      certPem: path.join(runDir, `${serviceAccount}-cert.pem`),
      keyPem: path.join(runDir, `${serviceAccount}-key.pem`),
      identity: certificate.identity.uri,
    };
    writeFileSync(files.json, JSON.stringify(storable(certificate)));
    writeFileSync(files.certPem, [certificate.certPem, ...certificate.chainPem].join(''));
    writeFileSync(files.keyPem, certificate.keyPem, { mode: 0o600 });
    return files;
  };
  return { trustDomain: BENCH_TRUST_DOMAIN, caPem, client: await write('bench-client'), server: await write('bench-server') };
}

function storable(certificate: WorkloadCertificate): Record<string, unknown> {
  return { ...certificate, identity: certificate.identity.uri };
}
