/**
 * gRPC's message framing (gRPC over HTTP/2: a compressed flag byte, a 4-byte big-endian length, the message), for
 * the bench's gRPC load tool and target.
 *
 * Owns: making a framed message of a given size. Must not know about: sockets, HTTP/2.
 */

/** One uncompressed gRPC message of `size` bytes ('y's), framed. */
export function grpcFrame(size: number): Buffer {
  const frame = Buffer.alloc(5 + size, 'y');
  frame.writeUInt8(0, 0);
  frame.writeUInt32BE(size, 1);
  return frame;
}
