/**
 * How the agent's own HTTP endpoints (admin, metrics) listen and stop.
 *
 * Owns: SO_REUSEPORT listening (a restarting agent opens its endpoints while the old one still holds them)
 * and closing without waiting for idle keep-alive clients.
 * Must not know about: what the endpoints serve.
 */
import type http from 'node:http';
import type { AddressInfo } from 'node:net';

/**
 * Listens with SO_REUSEPORT: a restarting agent opens its endpoints while the old one still holds them.
 * Resolves with the bound address (port 0 picks a free one, for tests).
 */
export function listenReusePort(server: http.Server, address: { host: string; port: number }): Promise<AddressInfo> {
  return new Promise((resolve, reject) => {
    const onError = (error: Error): void => reject(new Error(`cannot listen on ${address.host}:${address.port}: ${error.message}`, { cause: error }));
    server.once('error', onError);
    server.listen({ host: address.host, port: address.port, reusePort: true }, () => {
      server.off('error', onError);
      resolve(server.address() as AddressInfo);
    });
  });
}

export interface RunningHttpServer {
  readonly address: AddressInfo;
  close(): Promise<void>;
}

export function closeHttpServer(server: http.Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

