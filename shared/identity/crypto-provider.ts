/**
 * Wires @peculiar/x509 to Node's WebCrypto. Imported for its effect by every module that uses @peculiar/x509.
 *
 * Why @peculiar/x509 and not node-forge: node-forge has no ECDSA, and Istio's workload keys are ECDSA P-256.
 * @peculiar/x509 needs reflect-metadata loaded before it (it throws at import otherwise).
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

export { x509, webcrypto };
