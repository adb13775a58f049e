/**
 * Test helper: a delta ADS server on loopback that sends exactly the responses a test scripts (including resources
 * the real control plane would never produce) and records every request the client sends back, so a test can
 * see each ACK and NACK on the wire. Real gRPC over TLS with the control plane's own serving credentials (the
 * client verifies istiod's identity against the mesh root); the protos are the agent's.
 * Used by tests only; never imported by production code.
 */
import * as grpc from '@grpc/grpc-js';
import { ServingCredentials, startGrpcServer } from '../../controlplane/xds/server.ts';
import type { CertificateAuthority } from '../../shared/identity/index.ts';
import { DELTA_ADS_METHOD, messageType, TO_OBJECT_OPTIONS } from '../../shared/xds/protos.ts';
import type { DeltaDiscoveryRequest } from '../../shared/xds/types.ts';

/** One resource of a scripted response: a message of `typeUrl` given as a plain object, or raw bytes as the Any's value. */
export interface ScriptedResource {
  name: string;
  version: string;
  /** Encoded with the type's proto; ignored when `rawValue` is given. */
  resource?: Record<string, unknown>;
  /** Bytes sent as the Any's value as they are (e.g. not a valid message). */
  rawValue?: Uint8Array;
}

export interface ScriptedXdsServer {
  address: string;
  /** Every request received, in order, on any stream. */
  requests: DeltaDiscoveryRequest[];
  /** Streams opened so far. */
  streams: number;
  /** Sends a response on the newest stream; returns its nonce. */
  send(typeUrl: string, resources: ScriptedResource[], removed?: string[]): string;
  /** Resolves with the first request (from now on or already received) that `predicate` accepts. */
  request(predicate: (request: DeltaDiscoveryRequest) => boolean, what: string, timeoutMs?: number): Promise<DeltaDiscoveryRequest>;
  /** Ends the newest stream (the client reconnects). */
  endStream(): void;
  stop(): Promise<void>;
}

export async function startScriptedXdsServer(ca: CertificateAuthority): Promise<ScriptedXdsServer> {
  const requestType = messageType('envoy.service.discovery.v3.DeltaDiscoveryRequest');
  const responseType = messageType('envoy.service.discovery.v3.DeltaDiscoveryResponse');
  const requests: DeltaDiscoveryRequest[] = [];
  const waiters = new Set<() => void>();
  let current: grpc.ServerDuplexStream<DeltaDiscoveryRequest, Buffer> | undefined;
  let streams = 0;
  let nonce = 0;
  const definition: grpc.ServiceDefinition = {
    DeltaAggregatedResources: {
      path: DELTA_ADS_METHOD,
      requestStream: true,
      responseStream: true,
      requestSerialize: (request: DeltaDiscoveryRequest) => Buffer.from(requestType.encode(requestType.fromObject(request)).finish()),
      requestDeserialize: (bytes: Buffer) => requestType.toObject(requestType.decode(bytes), TO_OBJECT_OPTIONS) as DeltaDiscoveryRequest,
      responseSerialize: (response: Buffer) => response,
      responseDeserialize: (bytes: Buffer) => Buffer.from(bytes),
    },
  };
  const credentials = await ServingCredentials.create(ca);
  const { server, port } = await startGrpcServer({
    address: '127.0.0.1:0',
    credentials,
    registrars: [
      (grpcServer) =>
        grpcServer.addService(definition, {
          DeltaAggregatedResources: (call: grpc.ServerDuplexStream<DeltaDiscoveryRequest, Buffer>) => {
            current = call;
            streams++;
            call.on('data', (request: DeltaDiscoveryRequest) => {
              requests.push(request);
              for (const waiter of waiters) waiter();
            });
            call.on('error', () => {});
          },
        }),
    ],
  });
  return {
    address: `127.0.0.1:${port}`,
    requests,
    get streams() {
      return streams;
    },
    send(typeUrl, resources, removed = []) {
      if (!current) throw new Error('no client stream is open');
      const type = messageType(typeUrl.slice(typeUrl.lastIndexOf('/') + 1));
      const responseNonce = `scripted-${++nonce}`;
      const message = responseType.fromObject({
        typeUrl,
        nonce: responseNonce,
        removedResources: removed,
        resources: resources.map((entry) => ({
          name: entry.name,
          version: entry.version,
          resource: { typeUrl, value: entry.rawValue ?? type.encode(type.fromObject(entry.resource ?? {})).finish() },
        })),
      });
      current.write(Buffer.from(responseType.encode(message).finish()));
      return responseNonce;
    },
    request(predicate, what, timeoutMs = 10_000) {
      const found = requests.find(predicate);
      if (found) return Promise.resolve(found);
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`timed out waiting for ${what}; requests: ${JSON.stringify(requests)}`));
        }, timeoutMs);
        const check = (): void => {
          const match = requests.find(predicate);
          if (!match) return;
          clearTimeout(timer);
          waiters.delete(check);
          resolve(match);
        };
        waiters.add(check);
      });
    },
    endStream() {
      current?.end();
      current = undefined;
    },
    async stop() {
      credentials.close();
      current?.end();
      await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
    },
  };
}
