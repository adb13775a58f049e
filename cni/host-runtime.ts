/**
 * A self-contained copy of a Node program for another filesystem view: in a cluster the installer runs in a
 * container, but the container runtime execs the CNI plugin on the host, where the container's node binary, code
 * and node_modules do not exist. Istio's install-cni copies its (static Go) plugin binary into the host's
 * /opt/cni/bin; ours is a node binary plus the program's code and packages, copied into a hostPath directory:
 *
 *   <dir>/current -> v-<hash>            swapped with one rename, so it always names a complete runtime
 *   <dir>/v-<hash>/node                  the node binary the installer runs on
 *   <dir>/v-<hash>/package.json          {"type":"module"}: .ts files load as ESM
 *   <dir>/v-<hash>/cni/..., shared/...   every file reachable from the entry by relative imports, static or
 *                                        `import('./literal')`, in the same layout as the source tree
 *   <dir>/v-<hash>/node_modules/...      whole directories of the packages imported by bare specifier, and of
 *                                        their `dependencies` (and installed `optionalDependencies`), transitively
 *   <dir>/v-<hash>/MANIFEST.json         path, mode, size and sha256 of every file; written last
 *
 * The hash is over the manifest, so identical content is detected without writing anything; a changed file gives a
 * new version directory (built under a temporary name, renamed into place), `current` is re-pointed, and the
 * previous versions are removed after a grace period (a plugin started just before the swap is still loading them;
 * node resolves `current` to the real directory once, at start).
 *
 * Owns: the import closure, the manifest, the copy and the swap, removal.
 * Must not know about: CNI, wrappers or conflists (install.ts), or what the copied program does.
 * Not followed (an error says so, except for the last two): `import(expression)`, `#imports`, `require()`,
 * files read at run time through `import.meta`.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { chmod, copyFile, lstat, mkdir, readdir, readFile, readlink, rename, rm, rmdir, stat, symlink, writeFile } from 'node:fs/promises';
import { isBuiltin, stripTypeScriptTypes } from 'node:module';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** The link, inside the runtime directory, that names the complete current version. */
export const CURRENT_LINK = 'current';
/** The node binary's name inside a version directory. */
export const RUNTIME_NODE = 'node';
export const MANIFEST_NAME = 'MANIFEST.json';
const PACKAGE_JSON_TEXT = '{"type":"module"}\n';
const VERSION_PREFIX = 'v-';
/** Hex digits of the content hash in a version directory's name: 64 bits, no collision among a node's versions. */
const VERSION_HASH_CHARS = 16;
/**
 * How long previous versions stay after `current` moved on. A plugin exec'd just before the swap loads its modules
 * (static imports, then Kubernetes mode's one dynamic import) within about 0.3 s on an idle node; 5 s leaves room
 * for a node busy starting pods, and is paid only by an install that changed something.
 */
export const PREVIOUS_VERSION_GRACE_MS = 5_000;
/** Temporary directories older than this are leftovers of a killed installer (a copy takes about a second). */
const STALE_TEMP_MS = 10 * 60_000;
/** Files the closure scan reads for imports; anything else reachable (JSON) is copied, not scanned. */
const SCANNED_EXTENSIONS = new Set(['.ts', '.mts', '.js', '.mjs']);

export type HostRuntimeErrorCode = 'IMPORT_NOT_FOUND' | 'UNFOLLOWABLE_IMPORT' | 'PACKAGE_NOT_FOUND' | 'OUTSIDE_SOURCE_ROOT';

export class HostRuntimeError extends Error {
  readonly code: HostRuntimeErrorCode;
  constructor(code: HostRuntimeErrorCode, message: string) {
    super(message);
    this.name = 'HostRuntimeError';
    this.code = code;
  }
}

export interface RuntimeClosure {
  /** The entry and every file it reaches by relative imports, relative to the source root, sorted. */
  sourceFiles: string[];
  /** Package directories to copy whole, relative to the source root (`node_modules/pino`), sorted; none inside another. */
  packageDirs: string[];
}

export interface HostRuntimeOptions {
  /** The directory to write, as this process sees it (a hostPath mount in a cluster). */
  runtimeDir: string;
  /** The tree the layout is kept relative to: the entry, its imports and node_modules must be inside it. */
  sourceRoot: string;
  /** The program's entry file (absolute). */
  entry: string;
  /** The node binary to copy; this process's own by default. */
  nodePath?: string;
  previousVersionGraceMs?: number;
}

export interface HostRuntime {
  /** Whether anything was written (false: the current version already had this content). */
  changed: boolean;
  /** The version directory's name (`v-<hash>`), which `current` now names. */
  version: string;
  files: number;
  bytes: number;
  /** Versions removed after the swap. */
  removed: string[];
}

interface ManifestEntry {
  path: string;
  mode: number;
  size: number;
  sha256: string;
}

/** A file to place in the runtime: copied from `source`, or written from `text`. */
interface PlannedFile {
  entry: ManifestEntry;
  source?: string;
  text?: string;
}

// ---------------------------------------------------------------------------------------------------------------
// The import closure

/**
 * The source with its comments and the contents of its string, template and regular expression literals blanked
 * (quotes, line breaks and offsets kept), so an `import` written in a comment or a string is not taken for one. Code
 * inside a template's `${...}` is kept.
 */
export function maskLiterals(source: string): string {
  const out: string[] = [];
  /** For each open `${`, the brace depth at which its closing `}` returns to the template text. */
  const templateDepths: number[] = [];
  let braceDepth = 0;
  let previous = ''; // last significant code character: tells a regular expression from a division
  let word = ''; // the identifier that ends at `previous`, if any
  let i = 0;
  const length = source.length;
  const blank = (text: string): string => text.replace(/[^\n]/g, ' ');
  /** Emits source[i, end) with its inside (all but `open` leading and `close` trailing characters) blanked. */
  const literal = (end: number, open: number, close: number): void => {
    const stop = Math.min(end, length);
    const closing = Math.max(i + open, stop - close);
    out.push(source.slice(i, i + open), blank(source.slice(i + open, closing)), source.slice(closing, stop));
    i = stop;
    word = '';
  };
  const templateText = (): void => {
    let j = i;
    while (j < length && source[j] !== '`' && !(source[j] === '$' && source[j + 1] === '{')) j += source[j] === '\\' ? 2 : 1;
    if (source[j] === '`') {
      literal(j + 1, 0, 1);
      previous = '`';
    } else {
      literal(j + 2, 0, 2);
      templateDepths.push(braceDepth);
      previous = '{';
    }
  };
  while (i < length) {
    const c = source[i] as string;
    const next = source[i + 1];
    if (c === '/' && next === '/') {
      const end = source.indexOf('\n', i);
      literal(end === -1 ? length : end, 0, 0);
    } else if (c === '/' && next === '*') {
      const end = source.indexOf('*/', i + 2);
      literal(end === -1 ? length : end + 2, 0, 0);
    } else if (c === '"' || c === "'") {
      let j = i + 1;
      while (j < length && source[j] !== c && source[j] !== '\n') j += source[j] === '\\' ? 2 : 1;
      literal(j + 1, 1, 1);
      previous = c;
    } else if (c === '`' || (c === '}' && templateDepths.length > 0 && templateDepths.at(-1) === braceDepth)) {
      if (c === '}') templateDepths.pop();
      out.push(c);
      i += 1;
      templateText();
    } else if (c === '/' && regexAllowedAfter(previous, word)) {
      let j = i + 1;
      let inClass = false;
      while (j < length && source[j] !== '\n' && (inClass || source[j] !== '/')) {
        if (source[j] === '\\') j += 1;
        else if (source[j] === '[') inClass = true;
        else if (source[j] === ']') inClass = false;
        j += 1;
      }
      literal(j + 1, 1, 1);
      previous = '/';
    } else {
      if (c === '{') braceDepth += 1;
      else if (c === '}') braceDepth -= 1;
      if (/[\w$]/.test(c)) word = /[\w$]/.test(source[i - 1] ?? '') ? word + c : c;
      else if (!/\s/.test(c)) word = '';
      if (!/\s/.test(c)) previous = c;
      out.push(c);
      i += 1;
    }
  }
  return out.join('');
}

/** Keywords after which `/` starts a regular expression, not a division. */
const REGEX_AFTER_WORDS = new Set(['return', 'typeof', 'case', 'do', 'else', 'in', 'of', 'new', 'delete', 'void', 'throw', 'yield', 'await', 'instanceof']);

function regexAllowedAfter(previous: string, word: string): boolean {
  if (previous === '') return true;
  if (/[\w$]/.test(previous)) return REGEX_AFTER_WORDS.has(word);
  return !/[)\]}"'`]/.test(previous);
}

/** `import ... from '.'`, `import '.'`, `export ... from '.'` on masked code; group 1 is the (blanked) specifier. */
const STATIC_IMPORT = /(?<![\w$.])(?:import|export)\b\s*(?:[\w$*{},\s]*?\bfrom\s*)?['"]([^'"\n]+)['"]/dg;
const DYNAMIC_IMPORT = /(?<![\w$.])import\s*\(/g;
const LITERAL_ARGUMENT = /^\s*['"]([^'"\n]+)['"]\s*[,)]/d;

/**
 * The module specifiers a file loads at run time. TypeScript is first stripped of its types by node's own stripper
 * (what node runs), so `import type` and type-level `import('x').T` are not followed; patterns are matched on the
 * masked code (maskLiterals) and the specifiers read from the same offsets of the unmasked code.
 */
export function importSpecifiers(source: string, file = '<source>'): string[] {
  const code = /\.m?ts$/.test(file) ? stripTypeScriptTypes(source) : source;
  const masked = maskLiterals(code);
  const textAt = (range: [number, number] | undefined, offset = 0): string => (range === undefined ? '' : code.slice(range[0] + offset, range[1] + offset));
  const specifiers: string[] = [];
  for (const match of masked.matchAll(STATIC_IMPORT)) specifiers.push(textAt(match.indices?.[1]));
  for (const match of masked.matchAll(DYNAMIC_IMPORT)) {
    const after = match.index + match[0].length;
    const argument = LITERAL_ARGUMENT.exec(masked.slice(after));
    if (argument === null) {
      const line = code.slice(0, match.index).split('\n').length;
      throw new HostRuntimeError('UNFOLLOWABLE_IMPORT', `${file}:${line}: import() of a computed specifier cannot be followed; import a string literal`);
    }
    specifiers.push(textAt(argument.indices?.[1], after));
  }
  return specifiers;
}

/** `@scope/name/sub` -> `@scope/name`, `pino/file` -> `pino`. */
function packageName(specifier: string): string {
  const parts = specifier.split('/');
  return (specifier.startsWith('@') ? parts.slice(0, 2) : parts.slice(0, 1)).join('/');
}

function isInside(root: string, file: string): boolean {
  const relative = path.relative(root, file);
  return relative !== '' && !relative.startsWith('..') && !path.isAbsolute(relative);
}

async function isDirectory(dir: string): Promise<boolean> {
  return (await stat(dir).catch(() => undefined))?.isDirectory() ?? false;
}

/** Node's lookup: `<dir>/node_modules/<name>` from `from` upwards, stopping at the source root. */
async function findPackage(sourceRoot: string, from: string, name: string, requiredBy: string): Promise<string> {
  for (let dir = from; ; dir = path.dirname(dir)) {
    if (path.basename(dir) !== 'node_modules') {
      const candidate = path.join(dir, 'node_modules', name);
      if (await isDirectory(candidate)) return candidate;
    }
    if (dir === sourceRoot || !isInside(sourceRoot, dir)) break;
  }
  throw new HostRuntimeError('PACKAGE_NOT_FOUND', `package "${name}" (needed by ${requiredBy}) is not installed in ${path.join(sourceRoot, 'node_modules')} or beside it`);
}

interface PackageJson {
  dependencies?: Record<string, string>;
  optionalDependencies?: Record<string, string>;
}

/** The files reachable from `entry` by relative imports, and the packages they and their dependencies need. */
export async function computeClosure(sourceRoot: string, entry: string): Promise<RuntimeClosure> {
  const root = path.resolve(sourceRoot);
  const files = new Set<string>();
  const packages = new Set<string>();
  const pending = [path.resolve(entry)];
  const pendingPackages: { name: string; from: string; requiredBy: string }[] = [];
  for (let file = pending.pop(); file !== undefined; file = pending.pop()) {
    if (files.has(file)) continue;
    if (!isInside(root, file)) throw new HostRuntimeError('OUTSIDE_SOURCE_ROOT', `${file} is outside ${root}: the runtime keeps paths relative to it`);
    files.add(file);
    if (!SCANNED_EXTENSIONS.has(path.extname(file))) continue;
    for (const specifier of importSpecifiers(await readFile(file, 'utf8'), path.relative(root, file))) {
      if (specifier.startsWith('./') || specifier.startsWith('../')) {
        const target = path.resolve(path.dirname(file), specifier);
        if (!(await stat(target).catch(() => undefined))?.isFile()) {
          throw new HostRuntimeError('IMPORT_NOT_FOUND', `${path.relative(root, file)} imports "${specifier}", which is not a file`);
        }
        pending.push(target);
      } else if (specifier.startsWith('#') || specifier.startsWith('/') || (specifier.includes(':') && !isBuiltin(specifier))) {
        throw new HostRuntimeError('UNFOLLOWABLE_IMPORT', `${path.relative(root, file)} imports "${specifier}": only relative paths, packages and node builtins are followed`);
      } else if (!isBuiltin(specifier)) {
        pendingPackages.push({ name: packageName(specifier), from: path.dirname(file), requiredBy: path.relative(root, file) });
      }
    }
  }
  for (let wanted = pendingPackages.pop(); wanted !== undefined; wanted = pendingPackages.pop()) {
    const dir = await findPackage(root, wanted.from, wanted.name, wanted.requiredBy);
    if (packages.has(dir)) continue;
    if (!isInside(root, dir)) throw new HostRuntimeError('OUTSIDE_SOURCE_ROOT', `package ${dir} is outside ${root}`);
    packages.add(dir);
    const manifest = JSON.parse(await readFile(path.join(dir, 'package.json'), 'utf8')) as PackageJson;
    const requiredBy = `package ${wanted.name}`;
    for (const name of Object.keys(manifest.dependencies ?? {})) pendingPackages.push({ name, from: dir, requiredBy });
    for (const name of Object.keys(manifest.optionalDependencies ?? {})) {
      // Optional: npm skips them on platforms they do not support; copy the ones that are there.
      if (await findPackage(root, dir, name, requiredBy).catch(() => undefined)) pendingPackages.push({ name, from: dir, requiredBy });
    }
  }
  const packageDirs = [...packages].filter((dir) => ![...packages].some((other) => isInside(other, dir)));
  return {
    sourceFiles: [...files].map((file) => path.relative(root, file)).sort(),
    packageDirs: packageDirs.map((dir) => path.relative(root, dir)).sort(),
  };
}

// ---------------------------------------------------------------------------------------------------------------
// The manifest

async function sha256File(file: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(file)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

/** Every regular file under `dir` (symbolic links followed), relative to `dir`. */
async function filesUnder(dir: string, prefix = ''): Promise<string[]> {
  const found: string[] = [];
  for (const name of (await readdir(path.join(dir, prefix))).sort()) {
    const relative = path.join(prefix, name);
    const info = await stat(path.join(dir, relative));
    if (info.isDirectory()) found.push(...(await filesUnder(dir, relative)));
    else if (info.isFile()) found.push(relative);
  }
  return found;
}

async function plannedCopy(source: string, target: string, mode?: number): Promise<PlannedFile> {
  const info = await stat(source);
  return {
    source,
    entry: { path: target, mode: mode ?? ((info.mode & 0o111) !== 0 ? 0o755 : 0o644), size: info.size, sha256: await sha256File(source) },
  };
}

async function plan(options: HostRuntimeOptions): Promise<PlannedFile[]> {
  const root = path.resolve(options.sourceRoot);
  const closure = await computeClosure(root, options.entry);
  const planned: PlannedFile[] = [
    await plannedCopy(options.nodePath ?? process.execPath, RUNTIME_NODE, 0o755),
    {
      text: PACKAGE_JSON_TEXT,
      entry: { path: 'package.json', mode: 0o644, size: Buffer.byteLength(PACKAGE_JSON_TEXT), sha256: createHash('sha256').update(PACKAGE_JSON_TEXT).digest('hex') },
    },
  ];
  for (const file of closure.sourceFiles) planned.push(await plannedCopy(path.join(root, file), file));
  for (const dir of closure.packageDirs) {
    for (const file of await filesUnder(path.join(root, dir))) planned.push(await plannedCopy(path.join(root, dir, file), path.join(dir, file)));
  }
  return planned.sort((a, b) => (a.entry.path < b.entry.path ? -1 : 1));
}

function manifestText(entries: ManifestEntry[]): { version: string; text: string } {
  const files = JSON.stringify(entries);
  const version = VERSION_PREFIX + createHash('sha256').update(files).digest('hex').slice(0, VERSION_HASH_CHARS);
  return { version, text: `${JSON.stringify({ version, files: entries }, null, 1)}\n` };
}

/** Whether `dir` holds this manifest and files of its sizes (a crash before the data reached the disk leaves them short). */
async function isComplete(dir: string, text: string, entries: ManifestEntry[]): Promise<boolean> {
  if ((await readFile(path.join(dir, MANIFEST_NAME), 'utf8').catch(() => undefined)) !== text) return false;
  for (const entry of entries) {
    if ((await stat(path.join(dir, entry.path)).catch(() => undefined))?.size !== entry.size) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------------------------
// Copy and swap

function temporaryName(base: string): string {
  return `.${base}.${process.pid}-${randomBytes(4).toString('hex')}.tmp`;
}

async function copyInto(dir: string, planned: PlannedFile[], manifest: string): Promise<void> {
  const made = new Set<string>();
  for (const { entry, source, text } of planned) {
    const target = path.join(dir, entry.path);
    const parent = path.dirname(target);
    if (!made.has(parent)) {
      await mkdir(parent, { recursive: true });
      made.add(parent);
    }
    if (source !== undefined) await copyFile(source, target);
    else await writeFile(target, text ?? '');
    await chmod(target, entry.mode);
  }
  await writeFile(path.join(dir, MANIFEST_NAME), manifest); // last: its presence means the rest is there
}

/** Points `current` at `version` with one rename: a reader sees the old or the new target, never no link. */
async function pointCurrentAt(runtimeDir: string, version: string): Promise<void> {
  const link = path.join(runtimeDir, temporaryName(CURRENT_LINK));
  await symlink(version, link); // relative: the same link works at the host's path and at the mount's
  await rename(link, path.join(runtimeDir, CURRENT_LINK));
}

/** Leftovers of killed installers; recent ones may belong to an installer still copying. */
async function removeStaleTemporaries(runtimeDir: string): Promise<void> {
  for (const name of await readdir(runtimeDir)) {
    if (!name.startsWith('.') || !name.endsWith('.tmp')) continue;
    const info = await lstat(path.join(runtimeDir, name)).catch(() => undefined);
    if (info !== undefined && Date.now() - info.mtimeMs > STALE_TEMP_MS) await rm(path.join(runtimeDir, name), { recursive: true, force: true });
  }
}

/** Copies the runtime into `runtimeDir/v-<hash>` unless it is already there, and points `current` at it. */
export async function installHostRuntime(options: HostRuntimeOptions): Promise<HostRuntime> {
  const runtimeDir = path.resolve(options.runtimeDir);
  const planned = await plan(options);
  const entries = planned.map((file) => file.entry);
  const { version, text } = manifestText(entries);
  const summary = { version, files: entries.length + 1, bytes: entries.reduce((sum, entry) => sum + entry.size, 0) + Buffer.byteLength(text) };
  await mkdir(runtimeDir, { recursive: true });
  await removeStaleTemporaries(runtimeDir);
  const versionDir = path.join(runtimeDir, version);
  const current = await readlink(path.join(runtimeDir, CURRENT_LINK)).catch(() => undefined);
  const complete = await isComplete(versionDir, text, entries);
  const older = (await readdir(runtimeDir)).filter((name) => name.startsWith(VERSION_PREFIX) && name !== version);
  if (current === version && complete) {
    // Nothing changed. Versions left by an installer killed during its grace period are unused by now.
    for (const name of older) await rm(path.join(runtimeDir, name), { recursive: true, force: true });
    return { changed: false, ...summary, removed: older };
  }
  if (!complete) {
    const temporary = path.join(runtimeDir, temporaryName(version));
    try {
      await copyInto(temporary, planned, text);
      await rename(temporary, versionDir).catch(async (error: NodeJS.ErrnoException) => {
        if (error.code !== 'ENOTEMPTY' && error.code !== 'EEXIST') throw error;
        if (await isComplete(versionDir, text, entries)) return; // another installer got there first
        // A damaged copy (only a crash leaves one) may be `current`: replaced, it is broken anyway.
        await rm(versionDir, { recursive: true, force: true });
        await rename(temporary, versionDir);
      });
    } finally {
      await rm(temporary, { recursive: true, force: true });
    }
  }
  await pointCurrentAt(runtimeDir, version);
  if (older.length > 0) await sleep(options.previousVersionGraceMs ?? PREVIOUS_VERSION_GRACE_MS);
  for (const name of older) await rm(path.join(runtimeDir, name), { recursive: true, force: true });
  return { changed: true, ...summary, removed: older };
}

/**
 * Removes the runtime. The directory itself may be a mount point (a hostPath volume mounted at exactly this path),
 * which cannot be removed from inside the container: then it is left empty.
 */
export async function removeHostRuntime(runtimeDir: string): Promise<void> {
  const entries = await readdir(runtimeDir).catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined;
    throw error;
  });
  if (entries === undefined) return;
  // `current` first: nothing names a version while it is being removed.
  for (const name of [CURRENT_LINK, ...entries.filter((name) => name !== CURRENT_LINK)]) {
    await rm(path.join(runtimeDir, name), { recursive: true, force: true });
  }
  await rmdir(runtimeDir).catch((error: NodeJS.ErrnoException) => {
    if (error.code !== 'EBUSY' && error.code !== 'ENOENT') throw error;
  });
}
