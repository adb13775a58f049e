/**
 * Istio's certificate service contract (`istio.v1.auth.IstioCertificateService`), loaded once for both sides.
 *
 * Owns: loading `proto/ca.proto`, the service definition and client constructor, the message shapes as this
 * loader produces them (snake_case fields, int64 as strings), and the metadata key names Istio's agents use.
 * Must not know about: signing, authorization, certificate caching.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

const PROTO_FILE = path.join(path.dirname(fileURLToPath(import.meta.url)), 'proto', 'ca.proto');

/** The full method name, for logs and error messages. */
export const CREATE_CERTIFICATE_METHOD = '/istio.v1.auth.IstioCertificateService/CreateCertificate';
/** ztunnel's request-metadata key for the identity it asks for on a pod's behalf. */
export const IMPERSONATED_IDENTITY_KEY = 'ImpersonatedIdentity';
/** gRPC metadata key carrying `Bearer <token>`. */
export const AUTHORIZATION_METADATA_KEY = 'authorization';
/**
 * ambit's metadata key naming the caller's node, for credentials that do not say it themselves (local mode's
 * one shared bootstrap token). Ignored when the credential names the node (a bound service account token).
 */
export const NODE_METADATA_KEY = 'x-ambit-node';

/** google.protobuf.Value as proto-loader hands it over (oneof `kind`). */
export interface StructValue {
  stringValue?: string;
  numberValue?: number;
  boolValue?: boolean;
  nullValue?: string | number;
  structValue?: { fields?: Record<string, StructValue> };
  listValue?: { values?: StructValue[] };
  kind?: string;
}

export interface IstioCertificateRequest {
  csr: string;
  /** Seconds; a string because int64 is loaded as a string (no precision loss). */
  validity_duration?: string | number;
  metadata?: { fields?: Record<string, StructValue> } | null;
}

export interface IstioCertificateResponse {
  cert_chain: string[];
}

const packageDefinition = protoLoader.loadSync(PROTO_FILE, {
  keepCase: true,
  longs: String,
  enums: String,
  defaults: true,
  oneofs: true,
});
const loaded = grpc.loadPackageDefinition(packageDefinition) as unknown as {
  istio: { v1: { auth: { IstioCertificateService: grpc.ServiceClientConstructor } } };
};

/** The service's client constructor (`new IstioCertificateServiceClient(address, credentials, options)`). */
export const IstioCertificateServiceClient = loaded.istio.v1.auth.IstioCertificateService;
/** The service definition to pass to `grpc.Server.addService`. */
export const istioCertificateServiceDefinition: grpc.ServiceDefinition = IstioCertificateServiceClient.service;
