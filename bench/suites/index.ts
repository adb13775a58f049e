/**
 * Every benchmark suite, in the order `make bench` runs them. A new suite (issue 3's captured path, later
 * waypoints) is one file in this folder and one line here.
 */
import type { Suite } from '../lib/suite.ts';
import { hboneSuite } from './hbone.ts';
import { meshSuite } from './mesh.ts';
import { controlplaneSuite } from './controlplane.ts';
import { policySuite } from '../policy.ts';
import { telemetrySuite } from './telemetry.ts';
import { podstartSuite } from './podstart.ts';
import { servicesSuite } from './services.ts';
import { dnsSuite } from './dns.ts';
import { localupSuite } from './localup.ts';
import { l7PolicySuite } from './l7policy.ts';
import { waypointSuite } from './waypoint.ts';

export const SUITES: readonly Suite[] = [hboneSuite, meshSuite, controlplaneSuite, policySuite, telemetrySuite, podstartSuite, servicesSuite, dnsSuite, localupSuite, waypointSuite, l7PolicySuite];
