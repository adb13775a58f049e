/**
 * RequestMirror: a copy of the request sent to the mirror backend, fire and forget, as Envoy's request mirroring:
 * the Host (`:authority` on HTTP/2) gets `-shadow` appended, the response is read and dropped, a failure is only
 * counted. A body is mirrored only when it was buffered whole (retry.ts's limit); a larger one is not mirrored.
 * HTTP/1.1 requests go as HTTP/1.1 over a stream of their own; HTTP/2 and gRPC ones as a stream on the waypoint's
 * pooled HTTP/2 session to the mirror's endpoint (h2-upstream.ts), sent once the client's body ended.
 *
 * Owns: the mirror's request and its lifetime. Must not know about: the main request's outcome.
 */
import http from 'node:http';
import type http2 from 'node:http2';
import type { Service } from '../shared/mesh/service.ts';
import type { H2RequestBody } from './h2-request-body.ts';
import { trailersFor } from './h2-try.ts';
import type { H2Sessions } from './h2-upstream.ts';
import { UpstreamRequestHead } from './h2-upstream-head.ts';
import type { BufferedBody } from './retry.ts';
import { Http2StreamDuplex } from './stream-adapter.ts';
import type { Upstreams } from './upstream.ts';

export interface MirrorRequest {
  service: Service;
  servicePort: number;
  vip: string;
  method: string;
  url: string;
  headers: http.OutgoingHttpHeaders;
  /** Only a body buffered whole is mirrored. */
  body: Pick<BufferedBody, 'chunks' | 'bytes' | 'complete'>;
}

function shadowHost(host: string): string {
  const colon = host.lastIndexOf(':');
  return colon > 0 && colon > host.lastIndexOf(']') ? `${host.slice(0, colon)}-shadow${host.slice(colon)}` : `${host}-shadow`;
}

/** Sends the copy; `onFailed` hears why one could not be delivered. Never throws. */
export function sendMirror(upstreams: Upstreams, mirror: MirrorRequest, onFailed: (message: string) => void): void {
  if (!mirror.body.complete) {
    onFailed(`body over ${mirror.body.bytes} bytes is not mirrored`);
    return;
  }
  const headers = { ...mirror.headers };
  if (typeof headers.host === 'string') headers.host = shadowHost(headers.host);
  void (async () => {
    const picked = upstreams.pickLeastRequest(mirror.service, mirror.servicePort, mirror.vip);
    const upstream = await upstreams.connect(mirror.service, picked);
    const connection = upstream.kind === 'hbone' ? new Http2StreamDuplex(upstream.stream) : upstream.socket;
    connection.on('error', () => undefined);
    const outgoing = http.request({ method: mirror.method, path: mirror.url, headers, createConnection: () => connection as never });
    outgoing.once('response', (response) => {
      response.resume();
      response.once('end', () => connection.destroy());
    });
    outgoing.on('error', (error) => {
      connection.destroy();
      onFailed(error.message);
    });
    for (const chunk of mirror.body.chunks) outgoing.write(chunk);
    outgoing.end();
  })().catch((error: Error) => onFailed(error.message));
}

export interface H2MirrorRequest {
  service: Service;
  servicePort: number;
  vip: string;
  /** The request's headers as they go to the primary endpoint (`:authority` made `-shadow` here). */
  headers: http2.OutgoingHttpHeaders;
  body: H2RequestBody;
}

/** Sends the copy of an HTTP/2 request once its body ended whole; `onFailed` hears why one was not delivered. Never throws. */
export function sendH2Mirror(sessions: H2Sessions, upstreams: Upstreams, mirror: H2MirrorRequest, onFailed: (message: string) => void): void {
  mirror.body.whenEnded((chunks) => {
    if (chunks === undefined) {
      onFailed(`body over ${mirror.body.bytes} bytes is not mirrored`);
      return;
    }
    const headers = { ...mirror.headers };
    if (typeof headers[':authority'] === 'string') headers[':authority'] = shadowHost(headers[':authority']);
    void (async () => {
      const target = upstreams.pick(mirror.service, mirror.servicePort, mirror.vip);
      const stream = await sessions.request(mirror.service, target, UpstreamRequestHead.fromObject(headers), chunks.length === 0);
      stream.on('error', (error: Error) => onFailed(error.message));
      stream.once('wantTrailers', () => stream.sendTrailers(mirror.body.trailers ? trailersFor(mirror.body.trailers) : {}));
      stream.resume();
      for (const chunk of chunks) stream.write(chunk);
      if (chunks.length > 0) stream.end();
    })().catch((error: Error) => onFailed(error.message));
  });
}
