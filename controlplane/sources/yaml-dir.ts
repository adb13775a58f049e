/**
 * The embedded default source: a directory of Kubernetes YAML (several documents per file, subdirectories
 * allowed), watched with fs.watch and a polling backstop.
 *
 * Owns: reading and parsing the files, reporting each bad document (file, line, reason) and skipping only it,
 * reporting unknown kinds and unknown fields, and turning each re-read into add/update/delete events for the
 * store (a diff against the previous read, so unchanged objects produce nothing).
 * Must not know about: the model, xDS.
 */
import { lstat, readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { isMap, isScalar, LineCounter, parseAllDocuments, type Document } from 'yaml';
import { DirectoryWatcher } from '../../shared/k8s/dir-watcher.ts';
import type { K8sObject } from '../../shared/k8s/objects.ts';
import { objectKey, type ObjectStore, type SourceEvent } from '../store.ts';
import { checkObject } from './manifest-schema.ts';
import { formatProblem, type ConfigSource, type SourceProblem } from './source.ts';

/** Files read; dot-files (writers' temporary files for atomic renames) are skipped. */
const MANIFEST_EXTENSIONS = new Set(['.yaml', '.yml', '.json']);

/** A path (relative to the directory) under a dot-name: a writer's temporary file or a mount's internals. */
function isHidden(relative: string): boolean {
  return relative.split(path.sep).some((part) => part.startsWith('.'));
}

/** How objects are told apart across files: kind and namespace/name. */
function objectId(object: K8sObject): string {
  return `${object.kind}\u0000${objectKey(object)}`;
}

/** What stat says of a file, as the parse cache keys it: a replaced file (rename) has a new inode. */
function fileStamp(info: { mtimeMs: number; size: number; ino: number }): string {
  return `${info.mtimeMs}:${info.size}:${info.ino}`;
}

interface ParsedObject {
  object: K8sObject;
  file: string;
  line: number;
}

export interface ParseResult {
  objects: ParsedObject[];
  problems: SourceProblem[];
}

function linePosition(lineCounter: LineCounter, offset: number | undefined): { line: number; column: number } | undefined {
  if (offset === undefined) return undefined;
  const position = lineCounter.linePos(offset);
  return { line: position.line, column: position.col };
}

/** The position of the key at `fieldPath` in `document`, for pointing at an unknown field. */
function fieldPosition(document: Document, lineCounter: LineCounter, fieldPath: string[]): { line: number; column: number } | undefined {
  let node: unknown = document.contents;
  let position: { line: number; column: number } | undefined;
  for (const field of fieldPath) {
    if (!isMap(node)) break;
    const pair = node.items.find((item) => isScalar(item.key) && String(item.key.value) === field);
    if (!pair) break;
    position = linePosition(lineCounter, isScalar(pair.key) ? pair.key.range?.[0] : undefined) ?? position;
    node = pair.value;
  }
  return position;
}

/** Parses and checks one file's text. Bad documents become problems; the rest are returned. */
export function parseManifestFile(file: string, text: string): ParseResult {
  const objects: ParsedObject[] = [];
  const problems: SourceProblem[] = [];
  const lineCounter = new LineCounter();
  for (const document of parseAllDocuments(text, { lineCounter, prettyErrors: true })) {
    if (document.errors.length > 0) {
      const error = document.errors[0]!;
      const position = error.linePos?.[0];
      problems.push({ file, line: position?.line, column: position?.col, message: `invalid YAML: ${error.message.split('\n')[0] ?? error.message}` });
      continue;
    }
    const value: unknown = document.toJS();
    if (value === null || value === undefined) continue; // an empty document, e.g. after a trailing `---`
    const start = linePosition(lineCounter, document.contents?.range?.[0] ?? document.range[0])!;
    if (typeof value !== 'object' || Array.isArray(value)) {
      problems.push({ file, ...start, message: 'document is not a Kubernetes object (expected a mapping)' });
      continue;
    }
    const object = value as K8sObject;
    if (typeof object.kind !== 'string' || typeof object.metadata?.name !== 'string' || !object.metadata.name) {
      problems.push({ file, ...start, message: 'document has no kind or metadata.name' });
      continue;
    }
    const schemaProblems = checkObject(object);
    if (schemaProblems.length > 0) {
      for (const problem of schemaProblems) {
        const position = fieldPosition(document, lineCounter, problem.path) ?? start;
        problems.push({ file, ...position, kind: object.kind, name: object.metadata.name, message: `${problem.message} (document skipped)` });
      }
      continue;
    }
    objects.push({ object, file, line: start.line });
  }
  return { objects, problems };
}

async function listManifestFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return (
    entries
      // Symlinks count: a ConfigMap mounted as a directory is symlinks into a hidden `..<timestamp>` directory.
      .filter((entry) => (entry.isFile() || entry.isSymbolicLink()) && MANIFEST_EXTENSIONS.has(path.extname(entry.name)))
      .map((entry) => path.join(entry.parentPath, entry.name))
      // Dot-files and anything under a dot-directory are writers' temporaries or a mount's internals.
      .filter((file) => !isHidden(path.relative(dir, file)))
      .sort()
  );
}

/**
 * Parsed files by path, with the (mtime, size, inode) they were parsed at: a re-read stats every file but parses
 * only the ones that changed. Parsing is the expensive part (a cluster of 3,000 files costs seconds to parse, a
 * few milliseconds to stat), and writers replace files by rename, so a changed file always has a new inode.
 */
export type ManifestParseCache = Map<string, { stamp: string; parsed: ParseResult }>;

/** Reads every manifest under `dir`: objects by `<kind>\0<key>` (later files win) and every problem found. */
export async function readManifestDir(dir: string, cache?: ManifestParseCache): Promise<{ objects: Map<string, ParsedObject>; problems: SourceProblem[] }> {
  const objects = new Map<string, ParsedObject>();
  const problems: SourceProblem[] = [];
  const seen = new Set<string>();
  const files = await listManifestFiles(dir);
  // Stat every file at once (libuv's pool runs them in parallel): one by one, thousands of awaits dominate a re-read.
  const stats = await Promise.all(files.map((file) => stat(file).catch((error: unknown) => error as NodeJS.ErrnoException)));
  for (const [index, file] of files.entries()) {
    let parsed: ParseResult;
    try {
      const info = stats[index]!;
      if (info instanceof Error) throw info;
      if (info.isDirectory()) continue; // a symlink to a directory, not a manifest
      const stamp = fileStamp(info);
      const cached = cache?.get(file);
      if (cached && cached.stamp === stamp) {
        parsed = cached.parsed;
      } else {
        parsed = parseManifestFile(file, await readFile(file, 'utf8'));
        cache?.set(file, { stamp, parsed });
      }
      seen.add(file);
    } catch (error) {
      // A file removed between listing and reading is a normal race with a writer.
      // EISDIR: a symlink to a directory, not a manifest.
      const code = (error as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' && code !== 'EISDIR') problems.push({ file, message: (error as Error).message });
      continue;
    }
    problems.push(...parsed.problems);
    for (const entry of parsed.objects) {
      const id = objectId(entry.object);
      const earlier = objects.get(id);
      if (earlier) {
        problems.push({
          file: entry.file,
          line: entry.line,
          kind: entry.object.kind,
          name: objectKey(entry.object),
          message: `also defined at ${earlier.file}:${earlier.line}; this later definition wins`,
        });
      }
      objects.set(id, entry);
    }
  }
  if (cache) for (const file of cache.keys()) if (!seen.has(file)) cache.delete(file);
  return { objects, problems };
}

export interface YamlDirSourceOptions {
  dir: string;
  store: ObjectStore;
  /** Each problem is reported once per appearance (not again on every poll while it persists). */
  onProblem?: (problem: SourceProblem) => void;
  pollIntervalMs?: number;
}

export class YamlDirSource implements ConfigSource {
  readonly #dir: string;
  readonly #store: ObjectStore;
  readonly #onProblem: (problem: SourceProblem) => void;
  #objects = new Map<string, K8sObject>();
  /** Which file each object came from, and the objects and problems of each file: what a single-file update touches. */
  #fileById = new Map<string, string>();
  #byFile = new Map<string, { ids: string[]; problems: string[] }>();
  readonly #parseCache: ManifestParseCache = new Map();
  #reportedProblems = new Set<string>();
  readonly #watcher: DirectoryWatcher;
  #stopped = false;
  readonly #reads = { whole: 0, singleFiles: 0 };

  constructor(options: YamlDirSourceOptions) {
    this.#dir = options.dir;
    this.#store = options.store;
    this.#onProblem = options.onProblem ?? (() => {});
    this.#watcher = new DirectoryWatcher({
      dir: this.#dir,
      read: () => (this.#stopped ? Promise.resolve() : this.#readOnce()),
      readChanged: (paths) => (this.#stopped ? Promise.resolve(true) : this.#readChanged(paths)),
      onError: (error) => this.#onProblem({ file: this.#dir, message: `cannot read the directory: ${error.message}` }),
      ...(options.pollIntervalMs !== undefined ? { pollIntervalMs: options.pollIntervalMs } : {}),
    });
  }

  start(): Promise<void> {
    return this.#watcher.start();
  }

  stop(): void {
    this.#stopped = true;
    this.#watcher.stop();
  }

  /** How often the directory was read whole and how many changed files were applied alone (tests, debugging). */
  get reads(): Readonly<{ whole: number; singleFiles: number }> {
    return this.#reads;
  }

  /** Re-reads the directory now and applies the difference; concurrent calls coalesce. */
  refresh(): Promise<void> {
    return this.#watcher.refresh();
  }

  async #readOnce(): Promise<void> {
    this.#reads.whole++;
    const { objects, problems } = await readManifestDir(this.#dir, this.#parseCache);
    const reported = new Set<string>();
    for (const problem of problems) {
      const text = formatProblem(problem);
      reported.add(text);
      if (!this.#reportedProblems.has(text)) this.#onProblem(problem);
    }
    this.#reportedProblems = reported;
    const events: SourceEvent[] = [];
    const next = new Map<string, K8sObject>();
    const fileById = new Map<string, string>();
    const byFile = new Map<string, { ids: string[]; problems: string[] }>();
    const fileEntry = (file: string): { ids: string[]; problems: string[] } => {
      let entry = byFile.get(file);
      if (!entry) byFile.set(file, (entry = { ids: [], problems: [] }));
      return entry;
    };
    for (const problem of problems) if (problem.file !== undefined) fileEntry(problem.file).problems.push(formatProblem(problem));
    for (const [id, entry] of objects) {
      next.set(id, entry.object);
      fileById.set(id, entry.file);
      fileEntry(entry.file).ids.push(id);
      const previous = this.#objects.get(id);
      // Unchanged files hand back the very same parsed objects: identity is the cheap, common answer.
      if (!previous || (previous !== entry.object && !isDeepStrictEqual(previous, entry.object))) events.push({ type: 'upsert', object: entry.object });
    }
    for (const [id, object] of this.#objects) if (!next.has(id)) events.push({ type: 'delete', object });
    this.#objects = next;
    this.#fileById = fileById;
    this.#byFile = byFile;
    if (events.length > 0 && !this.#stopped) this.#store.apply(events);
  }

  /**
   * Applies just the files fs.watch named (a pod's file written, a service's file removed): a change costs one
   * stat and one parse instead of a walk of the whole directory. Declines (false: a whole re-read follows) for
   * anything it cannot attribute exactly: a directory, a symlink, or an object that another file also defines
   * (which file wins is the whole read's rule).
   */
  async #readChanged(relativePaths: string[]): Promise<boolean> {
    const updates: Array<{ file: string; parsed: ParseResult | undefined; stamp?: string }> = [];
    for (const relative of new Set(relativePaths)) {
      if (isHidden(relative)) continue;
      if (!MANIFEST_EXTENSIONS.has(path.extname(relative))) return false;
      const file = path.join(this.#dir, relative);
      let info;
      try {
        info = await lstat(file);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') return false;
        updates.push({ file, parsed: undefined });
        continue;
      }
      if (!info.isFile()) return false;
      const stamp = fileStamp(info);
      const cached = this.#parseCache.get(file);
      if (cached && cached.stamp === stamp) continue; // an event without a change (a touch of the directory, a chmod)
      let text: string;
      try {
        text = await readFile(file, 'utf8');
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'ENOENT') return false;
        updates.push({ file, parsed: undefined });
        continue;
      }
      updates.push({ file, parsed: parseManifestFile(file, text), stamp });
    }
    // Objects whose id another file also defines: the whole read settles which definition wins.
    for (const { file, parsed } of updates) {
      for (const entry of parsed?.objects ?? []) {
        const owner = this.#fileById.get(objectId(entry.object));
        if (owner !== undefined && owner !== file) return false;
      }
      const ids = (parsed?.objects ?? []).map((entry) => objectId(entry.object));
      if (new Set(ids).size !== ids.length) return false;
    }
    const events: SourceEvent[] = [];
    for (const { file, parsed, stamp } of updates) {
      const before = this.#byFile.get(file) ?? { ids: [], problems: [] };
      const after = { ids: [] as string[], problems: (parsed?.problems ?? []).map(formatProblem) };
      for (const problem of parsed?.problems ?? []) {
        const text = formatProblem(problem);
        if (!this.#reportedProblems.has(text)) this.#onProblem(problem);
      }
      for (const text of before.problems) this.#reportedProblems.delete(text);
      for (const text of after.problems) this.#reportedProblems.add(text);
      for (const entry of parsed?.objects ?? []) {
        const id = objectId(entry.object);
        after.ids.push(id);
        const previous = this.#objects.get(id);
        if (!previous || !isDeepStrictEqual(previous, entry.object)) events.push({ type: 'upsert', object: entry.object });
        this.#objects.set(id, entry.object);
        this.#fileById.set(id, file);
      }
      const kept = new Set(after.ids);
      for (const id of before.ids) {
        if (kept.has(id)) continue;
        const object = this.#objects.get(id);
        this.#objects.delete(id);
        this.#fileById.delete(id);
        if (object) events.push({ type: 'delete', object });
      }
      if (parsed && stamp !== undefined) {
        this.#parseCache.set(file, { stamp, parsed });
        this.#byFile.set(file, after);
      } else {
        this.#parseCache.delete(file);
        this.#byFile.delete(file);
      }
    }
    this.#reads.singleFiles += updates.length;
    if (events.length > 0 && !this.#stopped) this.#store.apply(events);
    return true;
  }
}
