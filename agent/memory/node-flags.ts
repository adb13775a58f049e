/**
 * The Node/V8 flags an agent process runs with, sized for a proxy: wherever an agent is started (the local
 * runtime's agent command, runtime/local-mesh.ts; the DaemonSet's container command, deploy/agent.ts) puts them on
 * node's command line before agent/main.ts. V8 flags are process-wide, so the proxy worker threads get them too.
 *
 * Owns: the flags and the reason for each value. Must not know about: who starts the agent.
 */

/**
 * `--max-semi-space-size=8` (MiB): V8 grows the young generation's semi-spaces under allocation pressure up to its
 * default maximum, and a connection storm takes them there: measured, 128 MiB of new space committed right after
 * the mesh suite's storms, the largest single item of the agent's RSS then (248 MiB). A proxy's garbage dies within
 * a request, so a small nursery only scavenges more often: with 8 MiB the new space stayed at 16 MiB, the agents
 * were at 198 / 193 MiB right after the storms instead of 248 / 240, and spent no more CPU per answered connection
 * in that A/B (BENCHMARKS.md, suite mesh: load average 30-50, so CPU to be confirmed on a quiet machine).
 */
export const AGENT_NODE_FLAGS: readonly string[] = ['--max-semi-space-size=8'];
