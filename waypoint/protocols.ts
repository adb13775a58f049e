/**
 * Which protocol the waypoint speaks on a terminated stream, as Istio decides it for a Service port.
 *
 * The control plane selects the port's protocol by Istio's rules (controlplane/model/service.ts appProtocolOf:
 * `appProtocol` first, then the port name's prefix) and sends istio.workload.Port.app_protocol: HTTP11, HTTP2 or
 * GRPC are served at L7, anything else (TCP, TLS, UNKNOWN) is forwarded at L4. On an L7 port the waypoint accepts
 * HTTP/1.1 and prior-knowledge HTTP/2 alike (Envoy's `codec_type: AUTO`, which Istio's waypoint listeners use): the
 * first bytes decide, the HTTP/2 connection preface or not. The upstream speaks what the client spoke (Envoy's
 * `use_downstream_protocol_config`): an HTTP/2 client's requests go to the endpoint over HTTP/2, an HTTP/1.1
 * client's over HTTP/1.1.
 *
 * Owns: the port -> protocol rule, the preface sniff, and what makes a request gRPC.
 * Must not know about: routes, endpoints, sockets beyond the stream it peeks at.
 */
import type { Readable } from 'node:stream';
import type { Service } from '../shared/mesh/service.ts';

export type PortProtocol = 'http' | 'tcp';
export type HttpVersion = 'h1' | 'h2';

/** istio.workload.AppProtocol names served at L7 (the rest go through l4-forwarder.ts). */
const L7_APP_PROTOCOLS = new Set(['HTTP11', 'HTTP2', 'GRPC']);

export function portProtocol(service: Service, servicePort: number): PortProtocol {
  const appProtocol = service.ports.find((port) => port.servicePort === servicePort)?.appProtocol;
  return appProtocol !== undefined && L7_APP_PROTOCOLS.has(appProtocol) ? 'http' : 'tcp';
}

/** RFC 9113 3.4: what a prior-knowledge HTTP/2 client sends first. */
export const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1');

/**
 * 'h2' when `bytes` so far are the HTTP/2 preface, 'h1' as soon as they cannot be, undefined while they could still
 * be either (a client may send the preface in pieces).
 */
export function versionFromFirstBytes(bytes: Buffer): HttpVersion | undefined {
  const length = Math.min(bytes.length, H2_PREFACE.length);
  if (bytes.compare(H2_PREFACE, 0, length, 0, length) !== 0) return 'h1';
  return length === H2_PREFACE.length ? 'h2' : undefined;
}

/**
 * Reads the first bytes of `stream` until they say which HTTP version the client speaks, then puts them back
 * (unshift) so the server that takes the stream reads them itself. A stream that ends first is 'h1' (the HTTP/1.1
 * server answers or closes it).
 */
export function sniffHttpVersion(stream: Readable): Promise<HttpVersion> {
  return new Promise((resolve) => {
    let seen: Buffer = Buffer.alloc(0);
    const finish = (version: HttpVersion): void => {
      stream.off('readable', onReadable);
      stream.off('end', onEnd);
      stream.off('close', onEnd);
      if (seen.length > 0) stream.unshift(seen);
      resolve(version);
    };
    const onEnd = (): void => finish('h1');
    const onReadable = (): void => {
      let chunk: Buffer | null;
      while ((chunk = stream.read() as Buffer | null) !== null) {
        seen = seen.length === 0 ? chunk : Buffer.concat([seen, chunk]);
        const version = versionFromFirstBytes(seen);
        if (version !== undefined) {
          finish(version);
          return;
        }
      }
    };
    stream.on('readable', onReadable);
    stream.once('end', onEnd);
    stream.once('close', onEnd);
  });
}

/** gRPC (and gRPC-Web) requests say so in their content-type (`application/grpc`, `application/grpc+proto`, ...). */
export function isGrpcContentType(contentType: string | undefined): boolean {
  return contentType !== undefined && contentType.startsWith('application/grpc');
}

/**
 * The grpc-status for an HTTP status the waypoint answers a gRPC request with, as Envoy maps them
 * (Grpc::Utility::httpToGrpcStatus, after the gRPC doc "HTTP to gRPC Status Code Mapping"): 400 INTERNAL, 401
 * UNAUTHENTICATED, 403 PERMISSION_DENIED, 404 UNIMPLEMENTED, 429/502/503/504 UNAVAILABLE, anything else UNKNOWN.
 */
export function grpcStatusForHttp(status: number): number {
  switch (status) {
    case 400:
      return 13;
    case 401:
      return 16;
    case 403:
      return 7;
    case 404:
      return 12;
    case 429:
    case 502:
    case 503:
    case 504:
      return 14;
    default:
      return 2;
  }
}
