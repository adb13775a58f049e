/**
 * Applies the in-pod rules (rules.ts) inside a pod's network namespace and detects the node's backend.
 *
 * Owns: running iptables-save / iptables-restore and ip inside a namespace (`nsenter --net=<path>`), the
 * choice between the nf_tables and legacy binaries, and turning their failures into CaptureErrors.
 * Must not know about: which rules (rules.ts decides), pods, listeners.
 *
 * Install is read (iptables-save) then one iptables-restore --noflush run that replaces whatever our
 * chains held, so a restarted agent re-installing never duplicates a rule, and the pod never sees a
 * half-applied rule set.
 *
 * Each process the agent starts costs its main thread a fork and a wait for the child's exec (about 20 ms on a
 * loaded 2-core node, more than the rest of a CNI call), so the common cases first try a fast path: one shell in
 * the namespace that runs every command of the operation and exits 75 when the namespace is not the simple case
 * (a fresh pod for install, exactly what this agent installed for removal, nothing of ours for a pod it never
 * captured). Any failure of a fast path falls back to the general path above, which decides and reports as before.
 */
import { execFile } from 'node:child_process';
import { access, constants } from 'node:fs/promises';
import {
  chooseBackend, INPOD, parseExisting, renderExpectedRemoval, renderFreshInstall, renderInstall, renderRemoval, renderRoutingRemoval,
  renderRoutingSetup, type InpodRuleOptions, type IpFamily, type IptablesBackend,
} from './rules.ts';
import { CaptureError } from './errors.ts';

/**
 * A slow iptables (a busy node, the legacy xtables lock held by another pod's install) must not hang a CNI
 * ADD: the plugin waits 10 s for the whole ADD, which runs three commands, so each gets under a third.
 */
const COMMAND_TIMEOUT_MS = 3_000;
/** Seconds iptables-restore waits for the (node-global, legacy) xtables lock instead of failing at once. */
const XTABLES_LOCK_WAIT_S = '2';

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

interface CommandResult {
  stdout: string;
  stderr: string;
}

function run(file: string, args: string[], stdin?: string): Promise<CommandResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, { timeout: COMMAND_TIMEOUT_MS, maxBuffer: 16 * 1024 * 1024 }, (error, stdout, stderr) => {
      if (error) {
        reject(Object.assign(error, { stderr: String(stderr) }));
        return;
      }
      resolve({ stdout: String(stdout), stderr: String(stderr) });
    });
    child.stdin?.on('error', () => { /* the exit status reports it */ });
    child.stdin?.end(stdin ?? '');
  });
}

function inNetns(netns: string, argv: string[], stdin?: string): Promise<CommandResult> {
  return run('nsenter', [`--net=${netns}`, '--', ...argv], stdin);
}

async function ensureNetns(netns: string): Promise<void> {
  try {
    await access(netns, constants.R_OK);
  } catch (error) {
    throw new CaptureError('NETNS_NOT_FOUND', `network namespace ${netns} does not exist (was the pod deleted?)`, { cause: error });
  }
}

function rulesError(what: string, netns: string, error: unknown): CaptureError {
  const stderr = String((error as { stderr?: unknown }).stderr ?? '').trim();
  const message = stderr || (error instanceof Error ? error.message : String(error));
  return new CaptureError('RULES_FAILED', `${what} in ${netns} failed: ${message}`, { cause: error });
}

/** The iptables-save (ip6tables-save for family 6) output of our backend inside the pod's namespace. */
export async function saveRules(netns: string, backend: IptablesBackend, family: IpFamily = 4): Promise<string> {
  await ensureNetns(netns);
  const { save } = BINARIES[family][backend];
  try {
    return (await inNetns(netns, [save])).stdout;
  } catch (error) {
    throw rulesError(save, netns, error);
  }
}

async function restore(netns: string, backend: IptablesBackend, family: IpFamily, text: string): Promise<void> {
  const binary = BINARIES[family][backend].restore;
  try {
    await inNetns(netns, [binary, '--noflush', '--wait', XTABLES_LOCK_WAIT_S], text);
  } catch (error) {
    throw rulesError(binary, netns, error);
  }
}

/** Exit status of a fast-path script for "not the simple case here": the caller takes the general path. */
const FAST_PATH_DECLINED = 75;
/** Ends the rules text fed to a restore inside a fast-path script (no rule line is ever this word). */
const HEREDOC_END = 'AMBIT_RULES_END';

function familiesOf(options: InpodRuleOptions): IpFamily[] {
  return options.ipv6 ? [4, 6] : [4];
}

/** Script lines that feed `text` to this family's restore and decline when the restore refuses it. */
function restoreOrDecline(backend: IptablesBackend, family: IpFamily, text: string): string {
  const binary = BINARIES[family][backend].restore;
  return `${binary} --noflush --wait ${XTABLES_LOCK_WAIT_S} <<'${HEREDOC_END}' || exit ${FAST_PATH_DECLINED}\n${text}${HEREDOC_END}\n`;
}

/** One shell in the namespace for a whole operation; false when it declined or failed (take the general path). */
async function fastPath(netns: string, script: string): Promise<boolean> {
  try {
    await inNetns(netns, ['sh', '-c', script]);
    return true;
  } catch {
    return false;
  }
}

/** Fresh install: both families' rules (renderFreshInstall refuses a namespace with anything of ours), then routing. */
export function freshInstallScript(backend: IptablesBackend, options: InpodRuleOptions): string {
  const families = familiesOf(options);
  return families.map((family) => restoreOrDecline(backend, family, renderFreshInstall(options, family))).join('')
    + renderRoutingSetup(families, options.procSysNet);
}

/** Removal of exactly what an install with `installed` left, then the routing. */
export function expectedRemovalScript(backend: IptablesBackend, installed: InpodRuleOptions): string {
  return familiesOf(installed).map((family) => restoreOrDecline(backend, family, renderExpectedRemoval(installed))).join('')
    + renderRoutingRemoval();
}

/**
 * For a pod this agent does not hold: declines when either family's rules name one of our chains (or IPv4's cannot
 * be read), else removes the routing. A node without IPv6 has no ip6tables state, as in the general path.
 */
export function nothingOfOursScript(backend: IptablesBackend): string {
  const ours = `*${INPOD.preroutingChain}*|*${INPOD.outputChain}*) exit ${FAST_PATH_DECLINED};;`;
  return [
    `rules=$(${BINARIES[4][backend].save}) || exit ${FAST_PATH_DECLINED}`,
    `case "$rules" in ${ours} esac`,
    `rules=$(${BINARIES[6][backend].save} 2>/dev/null) || rules=''`,
    `case "$rules" in ${ours} esac`,
  ].join('\n') + '\n' + renderRoutingRemoval();
}

/** Installs (or re-installs, replacing) the in-pod rules and their policy routing, for IPv6 too with `ipv6`. */
export async function installInpodRules(netns: string, backend: IptablesBackend, options: InpodRuleOptions): Promise<void> {
  if (await fastPath(netns, freshInstallScript(backend, options))) return;
  const families = familiesOf(options);
  for (const family of families) {
    const existing = parseExisting(await saveRules(netns, backend, family));
    await restore(netns, backend, family, renderInstall(options, existing, family));
  }
  try {
    await inNetns(netns, ['sh', '-c', renderRoutingSetup(families, options.procSysNet)]);
  } catch (error) {
    throw rulesError('policy routing setup', netns, error);
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
  if (await fastPath(netns, installed ? expectedRemovalScript(backend, installed) : nothingOfOursScript(backend))) return;
  for (const family of [4, 6] as const) {
    let saved: string;
    try {
      saved = await saveRules(netns, backend, family);
    } catch (error) {
      // A node without IPv6 (ipv6.disable=1) has no ip6tables state: nothing of ours can be there.
      if (family === 6) continue;
      throw error;
    }
    const text = renderRemoval(parseExisting(saved));
    if (text !== '') await restore(netns, backend, family, text);
  }
  try {
    await inNetns(netns, ['sh', '-c', renderRoutingRemoval()]);
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
      return (await run(BINARIES[4][backend].save, [])).stdout;
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
