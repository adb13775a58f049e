/**
 * L4 policy end to end with the control plane: it reads the policies from the cluster directory, validates and
 * compiles them, and pushes them to the agents over delta xDS (PolicyStore.applyXds). The suite is in
 * helpers/policy-suite.ts. Here the agents run two data-plane threads, so every policy must also reach the proxy
 * worker's replica (plaintext connections, each a new TCP connection, land on either thread).
 */
import { policySuite } from './helpers/policy-suite.ts';

policySuite({ name: 'polxds', controlPlane: true, agentEnv: { AMBIT_WORKER_THREADS: '2' } });
