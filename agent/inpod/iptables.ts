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
  type InpodRuleOptions, type IptablesBackend,
} from './rules.ts';
import { CaptureError } from './errors.ts';

/**
 * A slow iptables (a busy node, the legacy xtables lock held by another pod's install) must not hang a CNI
 * ADD: the plugin waits 10 s for the whole ADD, which runs three commands, so each gets under a third.
 */
const COMMAND_TIMEOUT_MS = 3_000;
/** Seconds iptables-restore waits for the (node-global, legacy) xtables lock instead of failing at once. */
const XTABLES_LOCK_WAIT_S = '2';

const BINARIES: Record<IptablesBackend, { save: string; restore: string }> = {
  nft: { save: 'iptables-nft-save', restore: 'iptables-nft-restore' },
  legacy: { save: 'iptables-legacy-save', restore: 'iptables-legacy-restore' },
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

/** The iptables-save output of our backend inside the pod's namespace (diagnostics and tests). */
export async function saveRules(netns: string, backend: IptablesBackend): Promise<string> {
  await ensureNetns(netns);
  try {
    return (await inNetns(netns, [BINARIES[backend].save])).stdout;
  } catch (error) {
    throw rulesError(BINARIES[backend].save, netns, error);
  }
}

/** Installs (or re-installs, replacing) the in-pod rules and their policy routing. */
export async function installInpodRules(netns: string, backend: IptablesBackend, options: InpodRuleOptions): Promise<void> {
  const existing = parseExisting(await saveRules(netns, backend));
  const text = renderInstall(options, existing);
  try {
    await inNetns(netns, [BINARIES[backend].restore, '--noflush', '--wait', XTABLES_LOCK_WAIT_S], text);
  } catch (error) {
    throw rulesError(BINARIES[backend].restore, netns, error);
  }
  try {
    await inNetns(netns, ['sh', '-c', renderRoutingSetup()]);
  } catch (error) {
    throw rulesError('policy routing setup', netns, error);
  }
}

/** Removes our rules and policy routing from a namespace that still exists; a gone namespace is a no-op. */
export async function removeInpodRules(netns: string, backend: IptablesBackend): Promise<void> {
  try {
    await access(netns, constants.R_OK);
  } catch {
    return;
  }
  const text = renderRemoval(parseExisting(await saveRules(netns, backend)));
  try {
    if (text !== '') await inNetns(netns, [BINARIES[backend].restore, '--noflush', '--wait', XTABLES_LOCK_WAIT_S], text);
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
      return (await run(BINARIES[backend].save, [])).stdout;
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
