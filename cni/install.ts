/**
 * Installs ambit's CNI plugin on a node: the executable into the CNI bin dir and our entry into the node's
 * primary conflist; removes both on uninstall; in watch mode, re-adds the entry whenever the primary CNI
 * rewrites its conflist (they do, on their own restarts).
 *
 *   node cni/install.ts --bin-dir /opt/cni/bin --conf-dir /etc/cni/net.d
 *                       [--cluster-dir D | --kubeconfig F | --kubeconfig-from-service-account]
 *                       [--agent-socket S] [--log-level L] [--uninstall] [--watch]
 *                       [--host-runtime-dir DIR [--host-runtime-path PATH]]
 *
 * --kubeconfig-from-service-account (in a cluster): writes `<conf-dir>/ambit-cni-kubeconfig` from this pod's service
 * account (service-account-kubeconfig.ts) and points the plugin at it as `<host-conf-dir>/ambit-cni-kubeconfig`
 * (--host-conf-dir: where the host sees --conf-dir, which a container mounts elsewhere; default: the same); with
 * --watch it is rewritten when the token rotates.
 *
 * --host-runtime-dir (in a cluster): the container runtime execs the plugin on the host, where this container's node
 * and code do not exist. The installer copies a self-contained runtime into DIR (a hostPath mount, e.g.
 * /host/opt/ambit-cni; host-runtime.ts) and the wrapper runs it from PATH, the same directory as the host sees it
 * (e.g. /opt/ambit-cni; DIR by default). Without it (local mode) the wrapper runs this checkout with this node.
 *
 * Owns: file placement, atomic writes, the watch loop.
 * Must not know about: what the plugin does when run (plugin.ts) or conflist JSON details (conflist.ts).
 */
import { chmod, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { watch, type FSWatcher } from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { DEFAULT_AGENT_SOCKET } from '../shared/cni-protocol.ts';
import { PLUGIN_TYPE } from './config.ts';
import { addAmbitEntry, choosePrimaryConflist, ConflistError, removeAmbitEntry, type AmbitPluginEntry } from './conflist.ts';
import { CURRENT_LINK, installHostRuntime, removeHostRuntime, RUNTIME_NODE, type HostRuntime } from './host-runtime.ts';
import { PLUGIN_KUBECONFIG_NAME, renderServiceAccountKubeconfig } from './service-account-kubeconfig.ts';

/** The cni/ directory this file lives in: what an installed wrapper runs. */
const CNI_SOURCE_DIR = import.meta.dirname;
/** The checkout cni/ is in: a host runtime keeps the plugin's files at their paths relative to it (`../shared`). */
const SOURCE_ROOT = path.dirname(CNI_SOURCE_DIR);
/** The plugin's entry, as the wrapper runs it (`$AMBIT_CNI_HOME/main.ts`). */
const PLUGIN_ENTRY = path.join(CNI_SOURCE_DIR, 'main.ts');
/**
 * fs.watch misses events on some filesystems (overlay, NFS, bind mounts from the host) and while the
 * directory is being replaced; a periodic check bounds how long a missed rewrite leaves pods uncaptured.
 */
export const WATCH_RECHECK_INTERVAL_MS = 5_000;
/** Writers often rewrite in several steps; wait for them to settle before re-checking. */
const WATCH_DEBOUNCE_MS = 100;

export interface InstallOptions {
  binDir: string;
  confDir: string;
  entry: AmbitPluginEntry;
  /** Node binary the installed wrapper runs (or, with hostRuntime, that is copied); this process's own by default. */
  nodePath?: string;
  /** Copy a self-contained plugin runtime for the host instead of pointing the wrapper at this checkout. */
  hostRuntime?: HostRuntimeTarget;
}

export interface HostRuntimeTarget {
  /** Where this process writes the runtime (a hostPath mount in the installer's container). */
  dir: string;
  /** The same directory as the host, which runs the plugin, sees it; `dir` by default. */
  hostPath?: string;
  /** See host-runtime.ts PREVIOUS_VERSION_GRACE_MS. */
  previousVersionGraceMs?: number;
}

async function writeAtomically(file: string, text: string, mode?: number): Promise<void> {
  const temp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  await writeFile(temp, text, mode === undefined ? undefined : { mode });
  if (mode !== undefined) await chmod(temp, mode);
  await rename(temp, file);
}

/** The wrapper script with its AMBIT_CNI_HOME / AMBIT_NODE lines pointing at a cni/ directory (this one by default) and node. */
export async function renderInstalledWrapper(nodePath: string, cniHome = CNI_SOURCE_DIR): Promise<string> {
  const wrapper = await readFile(path.join(CNI_SOURCE_DIR, PLUGIN_TYPE), 'utf8');
  return wrapper
    .replace(/^AMBIT_CNI_HOME=""$/m, `AMBIT_CNI_HOME='${cniHome}'`)
    .replace(/^AMBIT_NODE=""$/m, `AMBIT_NODE='${nodePath}'`);
}

export async function installBinary(binDir: string, nodePath = process.execPath): Promise<string> {
  const target = path.join(binDir, PLUGIN_TYPE);
  await writeAtomically(target, await renderInstalledWrapper(nodePath), 0o755);
  return target;
}

async function primaryConflist(confDir: string): Promise<string> {
  const name = choosePrimaryConflist(await readdir(confDir));
  if (name === undefined) {
    throw new ConflistError('CONFLIST_NOT_FOUND', `no *.conflist in ${confDir}: install the primary CNI (e.g. the cluster's network plugin) first`);
  }
  return path.join(confDir, name);
}

/** Adds (or updates) our entry in the primary conflist. Returns the file and whether it was rewritten. */
export async function ensureConflistEntry(confDir: string, entry: AmbitPluginEntry): Promise<{ file: string; changed: boolean; warnings: string[] }> {
  const file = await primaryConflist(confDir);
  const edit = addAmbitEntry(await readFile(file, 'utf8'), entry, file);
  if (edit.changed) await writeAtomically(file, edit.text);
  return { file, changed: edit.changed, warnings: edit.warnings };
}

/** Writes `file` only when its content differs (atomically, mode 0600 by default). Returns whether it was written. */
export async function writeIfChanged(file: string, text: string, mode = 0o600): Promise<boolean> {
  const current = await readFile(file, 'utf8').catch(() => undefined);
  if (current === text) return false;
  await writeAtomically(file, text, mode);
  return true;
}

/**
 * Copies the plugin's runtime into target.dir, then points the wrapper in binDir at it as the host sees it: after
 * the copy, so the wrapper never names a runtime that is not there. Rewrites nothing when nothing changed.
 */
export async function installHostBinary(binDir: string, target: HostRuntimeTarget, nodePath?: string): Promise<{ binary: string; runtime: HostRuntime }> {
  const runtime = await installHostRuntime({
    runtimeDir: target.dir,
    sourceRoot: SOURCE_ROOT,
    entry: PLUGIN_ENTRY,
    ...(nodePath !== undefined ? { nodePath } : {}),
    ...(target.previousVersionGraceMs !== undefined ? { previousVersionGraceMs: target.previousVersionGraceMs } : {}),
  });
  const current = path.join(path.resolve(target.hostPath ?? target.dir), CURRENT_LINK);
  const binary = path.join(binDir, PLUGIN_TYPE);
  const wrapper = await renderInstalledWrapper(path.join(current, RUNTIME_NODE), path.join(current, path.relative(SOURCE_ROOT, CNI_SOURCE_DIR)));
  await writeIfChanged(binary, wrapper, 0o755);
  return { binary, runtime };
}

/** The plugin's kubeconfig from this pod's service account, written into confDir; returns its path. */
export async function writePluginKubeconfig(confDir: string, env: NodeJS.ProcessEnv, serviceAccountDir?: string): Promise<{ file: string; changed: boolean }> {
  const file = path.join(confDir, PLUGIN_KUBECONFIG_NAME);
  const changed = await writeIfChanged(file, await renderServiceAccountKubeconfig(env, serviceAccountDir));
  return { file, changed };
}

export async function install(options: InstallOptions): Promise<{ binary: string; conflist: string; warnings: string[]; hostRuntime?: HostRuntime }> {
  let binary: string;
  let hostRuntime: HostRuntime | undefined;
  if (options.hostRuntime !== undefined) {
    ({ binary, runtime: hostRuntime } = await installHostBinary(options.binDir, options.hostRuntime, options.nodePath));
  } else {
    binary = await installBinary(options.binDir, options.nodePath);
  }
  const { file, warnings } = await ensureConflistEntry(options.confDir, options.entry);
  return { binary, conflist: file, warnings, ...(hostRuntime !== undefined ? { hostRuntime } : {}) };
}

/**
 * Removes our entry from every conflist in confDir (a rewrite may have moved it) and the binary, then the host
 * runtime directory when given (last: until then the wrapper may still run it).
 */
export async function uninstall(binDir: string, confDir: string, hostRuntimeDir?: string): Promise<string[]> {
  const edited: string[] = [];
  for (const name of (await readdir(confDir)).filter((n) => n.endsWith('.conflist') && !n.startsWith('.')).sort()) {
    const file = path.join(confDir, name);
    let edit;
    try {
      edit = removeAmbitEntry(await readFile(file, 'utf8'), file);
    } catch (error) {
      if (error instanceof ConflistError) continue; // not ours to judge; leave it
      throw error;
    }
    if (edit.changed) {
      await writeAtomically(file, edit.text);
      edited.push(file);
    }
  }
  await rm(path.join(binDir, PLUGIN_TYPE), { force: true });
  await rm(path.join(confDir, PLUGIN_KUBECONFIG_NAME), { force: true });
  if (hostRuntimeDir !== undefined) await removeHostRuntime(hostRuntimeDir);
  return edited;
}

export interface ConflistWatcher {
  close(): void;
}

/** Keeps our entry in the primary conflist: re-adds it after any rewrite, noticed by fs.watch or the periodic check. */
export function watchConflist(
  confDir: string,
  entry: AmbitPluginEntry,
  options: { recheckIntervalMs?: number; onReAdd?: (file: string) => void; onError?: (error: Error) => void } = {},
): ConflistWatcher {
  let debounce: NodeJS.Timeout | undefined;
  let running = false;
  let closed = false;
  const check = async (): Promise<void> => {
    if (running || closed) return;
    running = true;
    try {
      const { file, changed } = await ensureConflistEntry(confDir, entry);
      if (changed) options.onReAdd?.(file);
    } catch (error) {
      options.onError?.(error as Error);
    } finally {
      running = false;
    }
  };
  const schedule = (): void => {
    clearTimeout(debounce);
    debounce = setTimeout(() => void check(), WATCH_DEBOUNCE_MS);
  };
  let watcher: FSWatcher | undefined;
  try {
    watcher = watch(confDir, schedule);
    watcher.on('error', (error) => options.onError?.(error));
  } catch (error) {
    options.onError?.(error as Error); // the periodic check still covers us
  }
  const interval = setInterval(() => void check(), options.recheckIntervalMs ?? WATCH_RECHECK_INTERVAL_MS);
  return {
    close() {
      closed = true;
      clearTimeout(debounce);
      clearInterval(interval);
      watcher?.close();
    },
  };
}

/** What the command line asks for, checked before anything is touched. */
export interface InstallCommand {
  binDir: string;
  confDir: string;
  /** confDir as the host sees it (the installer runs in a container with the host's directory mounted elsewhere). */
  hostConfDir: string;
  hostRuntime?: HostRuntimeTarget;
  uninstall: boolean;
  watch: boolean;
  /** Write the plugin's kubeconfig from this pod's service account (Kubernetes mode). */
  fromServiceAccount: boolean;
  /** The conflist entry; its kubeconfig (when written from the service account) is named as the host sees it. */
  entry: AmbitPluginEntry;
}

const USAGE =
  'usage: node cni/install.ts --bin-dir DIR --conf-dir DIR [--host-conf-dir DIR] [--cluster-dir DIR | --kubeconfig FILE | --kubeconfig-from-service-account] [--uninstall] [--watch] [--host-runtime-dir DIR [--host-runtime-path PATH]]';

export function parseInstallArgs(argv: string[]): InstallCommand {
  const { values } = parseArgs({
    args: argv,
    options: {
      'bin-dir': { type: 'string' },
      'conf-dir': { type: 'string' },
      'host-conf-dir': { type: 'string' },
      'agent-socket': { type: 'string', default: DEFAULT_AGENT_SOCKET },
      'cluster-dir': { type: 'string' },
      kubeconfig: { type: 'string' },
      'kubeconfig-from-service-account': { type: 'boolean', default: false },
      'log-level': { type: 'string' },
      uninstall: { type: 'boolean', default: false },
      watch: { type: 'boolean', default: false },
      'host-runtime-dir': { type: 'string' },
      'host-runtime-path': { type: 'string' },
    },
  });
  const binDir = values['bin-dir'];
  const confDir = values['conf-dir'];
  if (binDir === undefined || confDir === undefined) throw new Error(USAGE);
  const hostRuntimeDir = values['host-runtime-dir'];
  if (values['host-runtime-path'] !== undefined && hostRuntimeDir === undefined) {
    throw new Error('--host-runtime-path names where the host sees --host-runtime-dir: set --host-runtime-dir too');
  }
  const hostRuntime = hostRuntimeDir !== undefined ? { dir: path.resolve(hostRuntimeDir), hostPath: path.resolve(values['host-runtime-path'] ?? hostRuntimeDir) } : undefined;
  const hostConfDir = path.resolve(values['host-conf-dir'] ?? confDir);
  const fromServiceAccount = values['kubeconfig-from-service-account'];
  const sources = [values['cluster-dir'] !== undefined, values.kubeconfig !== undefined, fromServiceAccount].filter(Boolean).length;
  if (sources !== 1 && !values.uninstall) {
    throw new Error('set one of --cluster-dir (local mode), --kubeconfig FILE or --kubeconfig-from-service-account (Kubernetes mode)');
  }
  const kubeconfig = fromServiceAccount ? path.join(hostConfDir, PLUGIN_KUBECONFIG_NAME) : values.kubeconfig !== undefined ? path.resolve(values.kubeconfig) : undefined;
  return {
    binDir,
    confDir,
    hostConfDir,
    ...(hostRuntime !== undefined ? { hostRuntime } : {}),
    uninstall: values.uninstall,
    watch: values.watch,
    fromServiceAccount,
    entry: {
      type: PLUGIN_TYPE,
      agentSocket: path.resolve(values['agent-socket']),
      ...(values['cluster-dir'] !== undefined ? { clusterDir: path.resolve(values['cluster-dir']) } : {}),
      ...(kubeconfig !== undefined ? { kubeconfig } : {}),
      ...(values['log-level'] !== undefined ? { logLevel: values['log-level'] } : {}),
    },
  };
}

async function main(): Promise<void> {
  const { binDir, confDir, hostRuntime, entry, fromServiceAccount, ...command } = parseInstallArgs(process.argv.slice(2));
  if (command.uninstall) {
    const edited = await uninstall(binDir, confDir, hostRuntime?.dir);
    console.log(`ambit-cni removed from ${binDir}${edited.length > 0 ? ` and ${edited.join(', ')}` : ''}${hostRuntime !== undefined ? `; ${hostRuntime.dir} removed` : ''}`);
    return;
  }
  // Written where this container sees confDir; the entry names it where the host's runtime will read it.
  if (fromServiceAccount) await writePluginKubeconfig(confDir, process.env);
  const result = await install({ binDir, confDir, entry, ...(hostRuntime !== undefined ? { hostRuntime } : {}) });
  console.log(`ambit-cni installed: ${result.binary}, entry in ${result.conflist}`);
  for (const warning of result.warnings) console.warn(`ambit-cni install: warning: ${warning}`);
  if (hostRuntime !== undefined && result.hostRuntime !== undefined) {
    const { changed, version, files, bytes } = result.hostRuntime;
    console.log(
      `plugin runtime ${hostRuntime.dir}/${CURRENT_LINK} -> ${version} (${changed ? 'copied' : 'unchanged'}, ${files} files, ${(bytes / 1e6).toFixed(1)} MB), run by the host from ${hostRuntime.hostPath}`,
    );
  }
  if (command.watch) {
    const watcher = watchConflist(confDir, entry, {
      onReAdd: (file) => console.log(`conflist ${file} was rewritten: ambit-cni entry re-added`),
      onError: (error) => console.error(`watching ${confDir}: ${error.message}`),
    });
    // Projected tokens rotate: keep the plugin's copy current.
    const refresh = fromServiceAccount
      ? setInterval(() => {
          writePluginKubeconfig(confDir, process.env).then(
            ({ file, changed }) => changed && console.log(`service account token rotated: ${file} rewritten`),
            (error: Error) => console.error(`refreshing the plugin's kubeconfig: ${error.message}`),
          );
        }, WATCH_RECHECK_INTERVAL_MS)
      : undefined;
    const stop = (): void => {
      watcher.close();
      clearInterval(refresh);
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  }
}

if (import.meta.main) {
  main().catch((error: Error) => {
    console.error(`ambit-cni install: ${error.message}`);
    process.exitCode = 1;
  });
}
