/**
 * L4 policy end to end with the control plane: it reads the policies from the cluster directory, validates and
 * compiles them, and pushes them to the agents over delta xDS (PolicyStore.applyXds). The suite is in
 * helpers/policy-suite.ts.
 */
import { policySuite } from './helpers/policy-suite.ts';

policySuite({ name: 'polxds', controlPlane: true });
