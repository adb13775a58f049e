/**
 * Edits a node's CNI network configuration list (conflist) text: find the primary one, add or remove ambit's
 * chained entry, leaving every other plugin entry and field as it was.
 *
 * Owns: the pure text-to-text edits and their errors.
 * Must not know about: files, directories, watching (install.ts) or what the plugin does at runtime.
 */
import { PLUGIN_TYPE, SUPPORTED_CNI_VERSIONS } from './config.ts';

export class ConflistError extends Error {
  readonly code: 'CONFLIST_NOT_FOUND' | 'CONFLIST_INVALID';
  constructor(code: ConflistError['code'], message: string) {
    super(message);
    this.name = 'ConflistError';
    this.code = code;
  }
}

/** Our entry in the conflist's `plugins` list. */
export interface AmbitPluginEntry {
  type: typeof PLUGIN_TYPE;
  agentSocket: string;
  clusterDir?: string;
  kubeconfig?: string;
  logLevel?: string;
  logFile?: string;
}

export interface ConflistEdit {
  text: string;
  changed: boolean;
  /** Things about the conflist an operator should know (a version a runtime may pick that the plugin cannot serve). */
  warnings: string[];
}

/** Like kubelet/libcni: the node's network is the lowest-sorted config file; we only chain into `.conflist`s. */
export function choosePrimaryConflist(fileNames: string[]): string | undefined {
  return fileNames.filter((name) => name.endsWith('.conflist') && !name.startsWith('.')).sort()[0];
}

function parseConflist(text: string, file: string): { conflist: Record<string, unknown>; plugins: Record<string, unknown>[] } {
  let conflist: unknown;
  try {
    conflist = JSON.parse(text);
  } catch (error) {
    throw new ConflistError('CONFLIST_INVALID', `${file} is not valid JSON: ${(error as Error).message}`);
  }
  if (conflist === null || typeof conflist !== 'object' || Array.isArray(conflist)) {
    throw new ConflistError('CONFLIST_INVALID', `${file} is not a JSON object`);
  }
  const plugins = (conflist as Record<string, unknown>).plugins;
  if (!Array.isArray(plugins) || plugins.length === 0) {
    throw new ConflistError('CONFLIST_INVALID', `${file} has no "plugins" list: ambit-cni must chain after a primary plugin`);
  }
  return { conflist: conflist as Record<string, unknown>, plugins: plugins as Record<string, unknown>[] };
}

function serialize(conflist: Record<string, unknown>): string {
  return `${JSON.stringify(conflist, null, 2)}\n`;
}

function sameEntry(a: Record<string, unknown>, b: AmbitPluginEntry): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** Adds our entry at the end of `plugins` (or updates it in place when its settings changed). */
export function addAmbitEntry(text: string, entry: AmbitPluginEntry, file = 'conflist'): ConflistEdit {
  const { conflist, plugins } = parseConflist(text, file);
  const version = conflist.cniVersion;
  if (typeof version === 'string' && !(SUPPORTED_CNI_VERSIONS as readonly string[]).includes(version)) {
    // Chaining in would fail every pod's ADD on the node (version refused); leaving the file alone fails none, and
    // the installer stops with this message (a DaemonSet's installer then shows it in its crash loop).
    throw new ConflistError(
      'CONFLIST_INVALID',
      `${file} uses cniVersion ${version}; ambit-cni serves ${SUPPORTED_CNI_VERSIONS.join(', ')}, so it was not chained in (every pod's ADD on this node would fail): no pod here is captured until ambit-cni supports ${version} or the conflist uses a version it serves`,
    );
  }
  const warnings = unservableListedVersions(conflist).map(
    (listed) => `${file} lists cniVersions ${listed}, which ambit-cni cannot serve (it serves ${SUPPORTED_CNI_VERSIONS.join(', ')}): a runtime that picks ${listed} would fail every pod's ADD on this node`,
  );
  const existing = plugins.findIndex((plugin) => plugin.type === PLUGIN_TYPE);
  if (existing !== -1) {
    if (sameEntry(plugins[existing] as Record<string, unknown>, entry)) return { text, changed: false, warnings };
    plugins[existing] = { ...entry };
  } else {
    plugins.push({ ...entry });
  }
  return { text: serialize(conflist), changed: true, warnings };
}

/** Removes our entry (every copy of it); other entries untouched. */
export function removeAmbitEntry(text: string, file = 'conflist'): ConflistEdit {
  const { conflist, plugins } = parseConflist(text, file);
  const kept = plugins.filter((plugin) => plugin.type !== PLUGIN_TYPE);
  if (kept.length === plugins.length) return { text, changed: false, warnings: [] };
  conflist.plugins = kept;
  return { text: serialize(conflist), changed: true, warnings: [] };
}

/**
 * Spec 1.1.0's `cniVersions` (a list the runtime picks the highest version it knows from, beside `cniVersion` for
 * older runtimes): the listed versions ambit-cni does not serve.
 */
function unservableListedVersions(conflist: Record<string, unknown>): string[] {
  const listed = conflist.cniVersions;
  if (!Array.isArray(listed)) return [];
  return listed.filter((version): version is string => typeof version === 'string' && !(SUPPORTED_CNI_VERSIONS as readonly string[]).includes(version));
}

export function hasAmbitEntry(text: string, file = 'conflist'): boolean {
  return parseConflist(text, file).plugins.some((plugin) => plugin.type === PLUGIN_TYPE);
}
