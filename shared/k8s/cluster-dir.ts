/**
 * Reads a local cluster state directory: Kubernetes YAML manifests (several documents per file, subdirectories
 * allowed) that stand in for the API server in local mode.
 *
 * Owns: walking the directory, parsing every document, reporting bad ones with file and position, and lookups
 * over what parsed.
 * Must not know about: who writes the directory (the local runtime, a user) or what the objects mean to the mesh.
 */
import { readdir, readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { LineCounter, parseAllDocuments } from 'yaml';
import { isNamespace, isPod, podNamespace, type K8sObject, type NamespaceObject, type PodObject } from './objects.ts';

/** Manifest files we read; everything else (and dot-files, which writers use for atomic temp files) is skipped. */
const MANIFEST_EXTENSIONS = new Set(['.yaml', '.yml', '.json']);

export interface ClusterDirProblem {
  file: string;
  /** 1-based line of the problem when known. */
  line?: number;
  column?: number;
  message: string;
}

export class ClusterDirError extends Error {
  readonly code = 'CLUSTER_DIR_UNREADABLE';
  readonly dir: string;
  constructor(dir: string, cause: unknown) {
    super(`cannot read cluster directory ${dir}: ${(cause as Error).message}`, { cause });
    this.name = 'ClusterDirError';
    this.dir = dir;
  }
}

/** Where each parsed object came from (file and 1-based line), for messages that point at a user's YAML. */
const objectSources = new WeakMap<object, { file: string; line: number }>();

/** The file and line an object of a snapshot was read from, when it came from parseManifests. */
export function objectSource(object: object): { file: string; line: number } | undefined {
  return objectSources.get(object);
}

export class ClusterSnapshot {
  /** False when read with a parse cache and no file changed since the previous read (callers can skip work). */
  changed = true;
  readonly objects: K8sObject[];
  readonly errors: ClusterDirProblem[];
  readonly #podsByKey = new Map<string, PodObject>();
  readonly #namespacesByName = new Map<string, NamespaceObject>();

  constructor(objects: K8sObject[], errors: ClusterDirProblem[]) {
    this.objects = objects;
    this.errors = errors;
    for (const object of objects) {
      // Later documents win, as a later `kubectl apply` would.
      if (isPod(object)) this.#podsByKey.set(`${podNamespace(object)}/${object.metadata.name}`, object);
      else if (isNamespace(object)) this.#namespacesByName.set(object.metadata.name, object);
    }
  }

  findPod(namespace: string, name: string): PodObject | undefined {
    return this.#podsByKey.get(`${namespace}/${name}`);
  }

  findNamespace(name: string): NamespaceObject | undefined {
    return this.#namespacesByName.get(name);
  }
}

/** Parses one manifest file's text; exported for tests and for readers of single files. */
export function parseManifests(file: string, text: string): { objects: K8sObject[]; errors: ClusterDirProblem[] } {
  const objects: K8sObject[] = [];
  const errors: ClusterDirProblem[] = [];
  const lineCounter = new LineCounter();
  for (const document of parseAllDocuments(text, { lineCounter, prettyErrors: true })) {
    if (document.errors.length > 0) {
      for (const error of document.errors) {
        const position = error.linePos?.[0];
        errors.push({ file, line: position?.line, column: position?.col, message: error.message.split('\n')[0] ?? error.message });
      }
      continue;
    }
    const value: unknown = document.toJS();
    if (value === null || value === undefined) continue; // empty document, e.g. a trailing `---`
    const start = lineCounter.linePos(document.range[0]);
    if (typeof value !== 'object' || Array.isArray(value)) {
      errors.push({ file, line: start.line, column: start.col, message: 'document is not a Kubernetes object (expected a mapping)' });
      continue;
    }
    const object = value as K8sObject;
    if (typeof object.kind !== 'string' || typeof object.metadata?.name !== 'string') {
      errors.push({ file, line: start.line, column: start.col, message: 'document has no kind or metadata.name' });
      continue;
    }
    objectSources.set(object, { file, line: start.line });
    objects.push(object);
  }
  return { objects, errors };
}

async function listManifestFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries
    .filter((entry) => entry.isFile() && !entry.name.startsWith('.') && MANIFEST_EXTENSIONS.has(path.extname(entry.name)))
    .map((entry) => path.join(entry.parentPath, entry.name))
    .sort();
}

/**
 * Parsed files by path with the (mtime, size, inode) they were parsed at, so a re-read (every poll) stats every
 * file but parses only those that changed: parsing thousands of manifests costs seconds, stat-ing them milliseconds.
 */
export type ClusterDirParseCache = Map<string, { stamp: string; objects: K8sObject[]; errors: ClusterDirProblem[] }>;

/** Reads every manifest under `dir`. Bad documents are reported in `errors` and skipped; good ones are kept. */
export async function readClusterDir(dir: string, cache?: ClusterDirParseCache): Promise<ClusterSnapshot> {
  let files: string[];
  try {
    files = await listManifestFiles(dir);
  } catch (error) {
    throw new ClusterDirError(dir, error);
  }
  const objects: K8sObject[] = [];
  const errors: ClusterDirProblem[] = [];
  const seen = new Set<string>();
  let changed = cache === undefined;
  // Stat every file at once (libuv's pool runs them in parallel): one by one, thousands of awaits dominate a re-read.
  const stats = await Promise.all(files.map((file) => stat(file).catch((error: unknown) => error as NodeJS.ErrnoException)));
  for (const [index, file] of files.entries()) {
    let parsed: { objects: K8sObject[]; errors: ClusterDirProblem[] };
    try {
      const info = stats[index]!;
      if (info instanceof Error) throw info;
      const stamp = `${info.mtimeMs}:${info.size}:${info.ino}`;
      const cached = cache?.get(file);
      if (cached && cached.stamp === stamp) {
        parsed = cached;
      } else {
        parsed = parseManifests(file, await readFile(file, 'utf8'));
        cache?.set(file, { stamp, ...parsed });
        changed = true;
      }
      seen.add(file);
    } catch (error) {
      // A file removed between listing and reading is a normal race with a writer, not a problem to report.
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue;
      errors.push({ file, message: (error as Error).message });
      continue;
    }
    objects.push(...parsed.objects);
    errors.push(...parsed.errors);
  }
  if (cache) {
    for (const file of cache.keys()) {
      if (seen.has(file)) continue;
      cache.delete(file);
      changed = true;
    }
  }
  const snapshot = new ClusterSnapshot(objects, errors);
  snapshot.changed = changed;
  return snapshot;
}
