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
 */
import { execFile } from 'node:child_process';
import { access, constants } from 'node:fs/promises';
import {
  chooseBackend, parseExisting, renderInstall, renderRemoval, renderRoutingRemoval, renderRoutingSetup,
  type InpodRuleOptions, type IpFamily, type IptablesBackend,
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

/** Installs (or re-installs, replacing) the in-pod rules and their policy routing, for IPv6 too with `ipv6`. */
export async function installInpodRules(netns: string, backend: IptablesBackend, options: InpodRuleOptions): Promise<void> {
  const families: IpFamily[] = options.ipv6 ? [4, 6] : [4];
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

/** Removes our rules (both families) and policy routing from a namespace that still exists; a gone one is a no-op. */
export async function removeInpodRules(netns: string, backend: IptablesBackend): Promise<void> {
  try {
    await access(netns, constants.R_OK);
  } catch {
    return;
  }
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
