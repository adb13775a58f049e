/**
 * A whole local mesh: a cluster of node namespaces (see cluster.ts) with an ambit agent in every node and a
 * CA root on disk that the agents sign workload certificates with. Used by `make demo`, the network tests and
 * the benchmarks.
 *
 * Owns: making the CA directory and the agent command line.
 * Must not know about: what runs in the pods.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { CertificateAuthority, DEFAULT_TRUST_DOMAIN } from '../shared/identity/index.ts';
import { LOCAL_CA_CERT_FILE, LOCAL_CA_KEY_FILE } from '../agent/identity/certificate-source.ts';
import { createCluster, type Cluster, type ClusterOptions } from './cluster.ts';

export const AGENT_MAIN = path.resolve(import.meta.dirname, '..', 'agent', 'main.ts');

export interface LocalMeshOptions extends Omit<ClusterOptions, 'agentCommand'> {
  trustDomain?: string;
  /** Extra environment for every agent (AMBIT_LOG_LEVEL, ...). */
  agentEnv?: Record<string, string>;
}

export interface LocalMesh {
  cluster: Cluster;
  ca: CertificateAuthority;
  caDir: string;
  destroy(): Promise<void>;
}

/** Writes a fresh CA root for the mesh into `dir` (root-cert.pem, ca-key.pem). */
export async function writeLocalCa(dir: string, trustDomain: string): Promise<CertificateAuthority> {
  const ca = await CertificateAuthority.createRoot({ trustDomain });
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await writeFile(path.join(dir, LOCAL_CA_CERT_FILE), ca.rootCertPem);
  await writeFile(path.join(dir, LOCAL_CA_KEY_FILE), ca.rootKeyPem, { mode: 0o600 });
  return ca;
}

export async function createLocalMesh(options: LocalMeshOptions): Promise<LocalMesh> {
  const trustDomain = options.trustDomain ?? DEFAULT_TRUST_DOMAIN;
  const caDir = await mkdtemp(path.join(os.tmpdir(), 'ambit-ca-'));
  const ca = await writeLocalCa(caDir, trustDomain);
  let cluster: Cluster;
  try {
    cluster = await createCluster({
      ...options,
      agentCommand: (node) => ({
        cmd: process.execPath,
        args: [AGENT_MAIN],
        env: {
          AMBIT_LOCAL_CA_DIR: caDir,
          AMBIT_TRUST_DOMAIN: trustDomain,
          ...options.agentEnv,
          AMBIT_NODE_NAME: node.name,
        },
      }),
    });
  } catch (error) {
    await rm(caDir, { recursive: true, force: true });
    throw error;
  }
  return {
    cluster,
    ca,
    caDir,
    destroy: async () => {
      await cluster.destroy();
      await rm(caDir, { recursive: true, force: true });
    },
  };
}
