/**
 * Fetches a JWKS document for the waypoint. When the URI's host is a mesh Service (its hostname or a VIP the mesh
 * state knows) and the scheme is http, the request goes through the mesh: one endpoint picked as for any request,
 * HBONE under the waypoint's own identity (waypoint/upstream.ts), so the JWKS server is reached with mTLS and its
 * agent's policy applies. Anything else is fetched directly (https to an identity provider outside the mesh).
 *
 * Owns: that choice and one GET with a timeout and a size limit. Must not know about: JWT, caching, refresh.
 */
import http from 'node:http';
import type { MeshState } from '../../shared/mesh/mesh-state.ts';
import type { Service } from '../../shared/mesh/service.ts';
import type { Upstreams } from '../upstream.ts';
import { JwksError, type FetchText } from './jwks-source.ts';

/** A JWKS is a few KiB; anything near this is not one. */
export const JWKS_MAX_BYTES = 1024 * 1024;
/** Istio's default JWKS fetch timeout (RequestAuthentication jwtRules[].timeout: 5 s). */
export const JWKS_FETCH_TIMEOUT_MS = 5_000;

function meshService(state: MeshState, host: string): Service | undefined {
  return state.serviceByVip(host) ?? state.servicesByHostname(host)[0];
}

export function meshFetchText(state: MeshState, upstreams: Upstreams): FetchText {
  return async (uri) => {
    const url = new URL(uri);
    const host = url.hostname.replace(/^\[|\]$/g, '');
    const service = url.protocol === 'http:' ? meshService(state, host) : undefined;
    if (service === undefined) {
      const response = await fetch(url, { signal: AbortSignal.timeout(JWKS_FETCH_TIMEOUT_MS) });
      if (!response.ok) throw new JwksError(`GET ${uri}: ${response.status}`);
      const text = await response.text();
      if (text.length > JWKS_MAX_BYTES) throw new JwksError(`GET ${uri}: larger than ${JWKS_MAX_BYTES} bytes`);
      return text;
    }
    const port = Number(url.port || 80);
    const vip = service.vips[0]?.address ?? host;
    const upstream = await upstreams.open(service, port, vip);
    const connection = upstream.kind === 'hbone' ? upstream.stream : upstream.socket;
    return new Promise<string>((resolve, reject) => {
      const request = http.request({ method: 'GET', path: `${url.pathname}${url.search}`, headers: { host: url.host, accept: 'application/json', connection: 'close' }, createConnection: () => connection as never, timeout: JWKS_FETCH_TIMEOUT_MS });
      request.on('timeout', () => request.destroy(new JwksError(`GET ${uri}: no answer in ${JWKS_FETCH_TIMEOUT_MS} ms`)));
      request.on('error', (error) => {
        connection.destroy();
        reject(error instanceof JwksError ? error : new JwksError(`GET ${uri} through the mesh: ${error.message}`, { cause: error }));
      });
      request.on('response', (response) => {
        const chunks: Buffer[] = [];
        let size = 0;
        response.on('data', (chunk: Buffer) => {
          size += chunk.length;
          if (size > JWKS_MAX_BYTES) request.destroy(new JwksError(`GET ${uri}: larger than ${JWKS_MAX_BYTES} bytes`));
          else chunks.push(chunk);
        });
        response.on('end', () => {
          connection.destroy();
          if (response.statusCode !== 200) reject(new JwksError(`GET ${uri} through the mesh: ${response.statusCode}`));
          else resolve(Buffer.concat(chunks).toString('utf8'));
        });
      });
      request.end();
    });
  };
}
