/**
 * Ephemeral loopback ports for programs that need their port in a config file (stunnel).
 *
 * Owns: asking the kernel for a free port. The port is free when returned; a tiny race with other programs
 * remains, which the caller's readiness check would surface as a start failure.
 */
import net from 'node:net';

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen({ host: '127.0.0.1', port: 0 }, () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}
