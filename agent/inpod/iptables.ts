/**
 * Applies the in-pod rules (rules.ts) inside a pod's network namespace and detects the node's backend.
 *
 * Owns: running iptables-save / iptables-restore inside a namespace, the choice between the nf_tables and legacy
 * binaries, the order "policy routing, then rules" (pod-routing.ts sets the routing), and turning failures into
 * CaptureErrors. Must not know about: which rules (rules.ts decides), pods, listeners.
 *
 * Install is one iptables-restore --noflush run per family, so the pod never sees a half-applied rule set, and a
 * restarted agent re-installing never duplicates a rule. Every process the agent starts costs time on a CNI ADD's
 * path (on a loaded 2-core node a Node fork blocks the main thread about 20 ms, each exec 5-10 ms more), so:
 *   - the commands go through ambit-spawner (shared/process-runner.ts): its vfork'ed child enters the pod's
 *     namespace with setns and execs iptables-restore itself: no fork of the agent, no nsenter, no shell;
 *   - a fresh namespace (the common case) gets each family's rules with no iptables-save first: renderFreshInstall
 *     refuses a namespace holding anything of ours, and then (only then) the general path reads what is there and
 *     replaces it; the families run side by side;
 *   - with the nf_tables backend a fresh namespace's rules (both families) are no process at all: the same text goes in as one
 *     nf_tables netlink batch from the agent (nftables.ts, nft-batch.ts), with iptables-nft-restore as the fallback;
 *   - the policy routing and the sysctl are rtnetlink requests and a file write from the agent (pod-routing.ts).
 * Removal mirrors it: exactly what this agent installed when it holds the pod, else read-then-remove.
 */
import { access, constants } from 'node:fs/promises';
import { ProcessRunner } from '../../shared/process-runner.ts';
import {
  chooseBackend, parseExisting, podRouting, renderExpectedRemoval, renderFreshInstall, renderInstall, renderRemoval,
  type InpodRuleOptions, type IpFamily, type IptablesBackend,
} from './rules.ts';
import { removePodRouting, setupPodRouting } from './pod-routing.ts';
import { applyFreshRulesOverNetlink, prepareFreshRulesBatch } from './nftables.ts';
import { CaptureError } from './errors.ts';

/**
 * A slow iptables (a busy node, the legacy xtables lock held by another pod's install) must not hang a CNI
 * ADD: the plugin waits 10 s for the whole ADD, which runs at most three commands in turn, so each gets under a third.
 */
const COMMAND_TIMEOUT_MS = 3_000;
/** Seconds iptables-restore waits for the (node-global, legacy) xtables lock instead of failing at once. */
const XTABLES_LOCK_WAIT_S = '2';
/** iptables-save of a pod namespace is a few KiB; a namespace with far more is not one we should parse. */
const MAX_OUTPUT_BYTES = 16 * 1024 * 1024;

const BINARIES: Record<IpFamily, Record<IptablesBackend, { save: string; restore: string }>> = {
  4: {
    nft: { save: 'iptables-nft-save', restore: 'iptables-nft-restore' },
    legacy: { save: 'iptables-legacy-save', restore: 'iptables-legacy-restore' },
  },
  6: {
    nft: { save: 'ip6tables-nft-save', restore: 'ip6tables-nft-restore' },
    legacy: { save: 'ip6tables-legacy-save', restore: 'ip6tables-legacy-restore' },
  },
};

/** The agent's one spawner, started at the first command (its children die with it, and it with the agent). */
let runner: ProcessRunner | undefined;

/** Stops the agent's spawner and waits for its exit (at shutdown: so it is reaped here, not left to init). */
export async function stopInpodCommands(): Promise<void> {
  await runner?.stop();
}

/** A command that ran and failed: its exit and stderr, for the CaptureError's message. */
class CommandFailed extends Error {
  readonly stderr: string;
  constructor(message: string, stderr: string) {
    super(message);
    this.name = 'CommandFailed';
    this.stderr = stderr;
  }
}

/** Runs `argv` (inside the namespace at `netns` when given) to a zero exit; its stdout. */
async function run(argv: string[], netns?: string, stdin?: string): Promise<string> {
  runner ??= new ProcessRunner();
  const result = await runner.run({
    argv,
    env: process.env,
    timeoutMs: COMMAND_TIMEOUT_MS,
    maxOutputBytes: MAX_OUTPUT_BYTES,
    ...(netns !== undefined ? { netnsPath: netns } : {}),
    ...(stdin !== undefined ? { input: stdin } : {}),
  });
  const stderr = result.stderr.toString('utf8');
  if (result.timedOut) throw new CommandFailed(`${argv[0]} did not finish within ${COMMAND_TIMEOUT_MS} ms`, stderr);
  if (result.signal !== null) throw new CommandFailed(`${argv[0]} was killed by ${result.signal}`, stderr);
  if (result.code !== 0) throw new CommandFailed(`${argv[0]} exited with ${result.code}`, stderr);
  if (result.stdoutTruncated) throw new CommandFailed(`${argv[0]} printed more than ${MAX_OUTPUT_BYTES} bytes`, stderr);
  return result.stdout.toString('utf8');
}

async function ensureNetns(netns: string): Promise<void> {
  try {
    await access(netns, constants.R_OK);
  } catch (error) {
    throw new CaptureError('NETNS_NOT_FOUND', `network namespace ${netns} does not exist (was the pod deleted?)`, { cause: error });
  }
}

function rulesError(what: string, netns: string, error: unknown): CaptureError {
  if (error instanceof CaptureError) return error;
  const stderr = String((error as { stderr?: unknown }).stderr ?? '').trim();
  const message = stderr || (error instanceof Error ? error.message : String(error));
  return new CaptureError('RULES_FAILED', `${what} in ${netns} failed: ${message}`, { cause: error });
}

/** The iptables-save (ip6tables-save for family 6) output of our backend inside the pod's namespace. */
export async function saveRules(netns: string, backend: IptablesBackend, family: IpFamily = 4): Promise<string> {
  await ensureNetns(netns);
  const { save } = BINARIES[family][backend];
  try {
    return await run([save], netns);
  } catch (error) {
    throw rulesError(save, netns, error);
  }
}

async function restore(netns: string, backend: IptablesBackend, family: IpFamily, text: string): Promise<void> {
  const binary = BINARIES[family][backend].restore;
  try {
    await run([binary, '--noflush', '--wait', XTABLES_LOCK_WAIT_S], netns, text);
  } catch (error) {
    throw rulesError(binary, netns, error);
  }
}

/** Whether `text` went in with one restore per family, all of them (side by side); false when any refused it. */
async function restoreEach(netns: string, backend: IptablesBackend, families: IpFamily[], text: (family: IpFamily) => string): Promise<boolean> {
  const results = await Promise.allSettled(families.map((family) => restore(netns, backend, family, text(family))));
  return results.every((result) => result.status === 'fulfilled');
}

/**
 * A fresh install of one family: true when it went in, false when the namespace holds something of ours already (or
 * the restore refused it). With the nf_tables backend each family's rules go in as one netlink batch from the agent
 * (nftables.ts: the same rules, read back identically by iptables-save); anything that batch cannot do (text outside
 * its grammar, a kernel refusal other than "a chain of ours exists") runs iptables-nft-restore as before, which
 * either succeeds or gives the error its own words.
 */
async function freshInstall(netns: string, backend: IptablesBackend, family: IpFamily, options: InpodRuleOptions): Promise<boolean> {
  const text = renderFreshInstall(options, family);
  if (backend === 'nft') {
    try {
      const result = applyFreshRulesOverNetlink(netns, text, family);
      if (result.applied) return true;
      if (result.exists) return false;
    } catch {
      // The namespace could not be entered or the socket made: the restore below reports it in its own terms.
    }
  }
  try {
    await restore(netns, backend, family, text);
    return true;
  } catch {
    return false;
  }
}

/**
 * Readies what a fresh install with these options needs ahead of the first pod (the nf_tables batch, built once and
 * kept), so no ADD pays for it. Never fails: a text the batch cannot carry is installed by iptables-restore.
 */
export function prepareInpodRules(options: InpodRuleOptions): void {
  for (const family of [4, 6] as const) prepareFreshRulesBatch(renderFreshInstall(options, family), family);
}

function familiesOf(options: InpodRuleOptions): IpFamily[] {
  return options.ipv6 ? [4, 6] : [4];
}

/**
 * Installs (or re-installs, replacing) the in-pod rules and their policy routing, for IPv6 too with `ipv6`. The
 * routing goes first (no process; inert without the rules). When the rules cannot go in (each family's restore is
 * all or nothing, but one family can fail after the other went in) in a namespace that held nothing of ours, all of it
 * is taken out again, so a fresh pod whose install failed holds nothing of ours; a re-install that fails keeps what
 * the earlier install left (the pod stays captured rather than bypassing its rules).
 */
export async function installInpodRules(netns: string, backend: IptablesBackend, options: InpodRuleOptions): Promise<void> {
  const families = familiesOf(options);
  const routing = podRouting(families, options.procSysNet);
  const routingCreated = setupPodRouting(netns, routing);
  try {
    const fresh = await Promise.all(families.map((family) => freshInstall(netns, backend, family, options)));
    if (fresh.every(Boolean)) return;
    // Something of ours is there already (an agent restart, a re-add): read it and replace it.
    for (const family of families) {
      const existing = parseExisting(await saveRules(netns, backend, family));
      await restore(netns, backend, family, renderInstall(options, existing, family));
    }
  } catch (error) {
    // Nothing of ours was there before this call (its routing rule is new): take out whatever of it went in (one
    // family's rules when the other's failed, the routing). Best effort: the ADD fails either way.
    if (routingCreated) await removeInpodRules(netns, backend).catch(() => undefined);
    throw error;
  }
}

/**
 * Removes our rules (both families) and policy routing from a namespace that still exists; a gone one is a no-op.
 * `installed`: the options this agent installed the rules with, when it holds the pod (undefined: it does not know
 * what, if anything, is there).
 */
export async function removeInpodRules(netns: string, backend: IptablesBackend, installed?: InpodRuleOptions): Promise<void> {
  try {
    await access(netns, constants.R_OK);
  } catch {
    return;
  }
  const removedAsInstalled = installed !== undefined
    && await restoreEach(netns, backend, familiesOf(installed), () => renderExpectedRemoval(installed));
  if (!removedAsInstalled) {
    // IPv4's state must be readable; a node without IPv6 (ipv6.disable=1) has none, so nothing of ours is there.
    const [saved4, saved6] = await Promise.all([
      saveRules(netns, backend, 4),
      saveRules(netns, backend, 6).catch(() => ''),
    ]);
    for (const [family, saved] of [[4, saved4], [6, saved6]] as const) {
      const text = renderRemoval(parseExisting(saved));
      if (text !== '') await restore(netns, backend, family, text);
    }
  }
  try {
    removePodRouting(netns, podRouting([4, 6]));
  } catch (error) {
    throw rulesError('rule removal', netns, error);
  }
}

/**
 * Which backend the node uses, read in the agent's own namespace (the node's, in a DaemonSet): a backend whose
 * tools are missing is not a candidate; with no evidence either way, nf_tables.
 */
export async function detectIptablesBackend(): Promise<IptablesBackend> {
  const save = async (backend: IptablesBackend): Promise<string | undefined> => {
    try {
      return await run([BINARIES[4][backend].save]);
    } catch {
      return undefined;
    }
  };
  const [legacy, nft] = await Promise.all([save('legacy'), save('nft')]);
  if (legacy === undefined && nft === undefined) {
    throw new CaptureError('RULES_FAILED', 'neither iptables-nft-save nor iptables-legacy-save runs on this node: install iptables');
  }
  return chooseBackend({ legacy, nft });
}
