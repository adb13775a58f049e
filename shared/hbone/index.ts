/**
 * The HBONE library: HTTP/2 CONNECT over mutual TLS 1.3 on port 15008, used by the agent and the waypoint.
 * Owns nothing itself: it re-exports the public API of the files beside it.
 */
export type * from './types.ts';
export { HboneError, hboneErrors, isHboneError, RESPONSE_FLAGS, type HboneErrorCode } from './errors.ts';
export * from './config.ts';
export { parseAuthority, formatAuthority } from './authority.ts';
export { resetSocket, resetStream, splice, type SpliceResult } from './splice.ts';
export { pooledReadStats, sharedReadStats, type PooledReadStats, type SharedReadStats } from './pooled-reads.ts';
export { directWriteStats, type DirectWriteStats } from './direct-writes.ts';
export { readBufferScavenges } from './buffer-scavenge.ts';
export { HboneClientPool, type PoolStats, type TunnelObserver, type TunnelResult } from './client-pool.ts';
export { HboneServer, type ServerStats } from './server.ts';
