/** The identity library: SPIFFE IDs, P-256 keys and CSRs, a CA, chain verification, a certificate store. */
export * from './errors.ts';
export * from './spiffe.ts';
export * from './keys.ts';
export * from './ca.ts';
export * from './cert-store.ts';
export * from './verify.ts';
