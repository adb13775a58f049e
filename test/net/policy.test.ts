/**
 * L4 policy end to end in local mode: each agent reads AuthorizationPolicy and PeerAuthentication from the cluster
 * directory itself (agent/policy/cluster-dir-policy-source.ts). The suite is in helpers/policy-suite.ts.
 */
import { policySuite } from './helpers/policy-suite.ts';

policySuite({ name: 'poltest', controlPlane: false });
