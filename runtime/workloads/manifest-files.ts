/**
 * Edits of a user's manifest directory, document by document, for writes that arrive through the Kubernetes API:
 * find the document that defines an object, replace it or take it out of its file (the file's other documents and
 * their comments stay as they were), or add a new file for a new object. Every edit returns its undo, so a change
 * the cluster refuses leaves the directory as it was.
 *
 * Owns: locating documents and rewriting files atomically.
 * Must not know about: HTTP, the API server, or what the objects mean.
 */
import { readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseAllDocuments, stringify, type Document } from 'yaml';
import { objectSource, readClusterDir } from '../../shared/k8s/cluster-dir.ts';
import type { K8sObject } from '../../shared/k8s/objects.ts';

export interface DocumentRef {
  file: string;
  /** Index among the file's documents (empty ones included). */
  index: number;
  /** The document's object as the user wrote it. */
  object: K8sObject;
}

export type Undo = () => Promise<void>;

function matches(object: unknown, kind: string, namespace: string | undefined, name: string): boolean {
  const candidate = object as K8sObject | null;
  if (candidate?.kind !== kind || candidate.metadata?.name !== name) return false;
  return namespace === undefined || (candidate.metadata.namespace || 'default') === namespace;
}

/** The document defining `kind` `namespace/name` (namespace undefined for cluster-scoped kinds); the last one wins, as in a read. */
export async function findDocument(dir: string, kind: string, namespace: string | undefined, name: string): Promise<DocumentRef | undefined> {
  const snapshot = await readClusterDir(dir);
  const object = snapshot.objects.findLast((candidate) => matches(candidate, kind, namespace, name));
  const file = object === undefined ? undefined : objectSource(object)?.file;
  if (object === undefined || file === undefined) return undefined;
  const documents = parseAllDocuments(await readFile(file, 'utf8'));
  const index = documents.findLastIndex((document) => matches(document.toJS(), kind, namespace, name));
  return index === -1 ? undefined : { file, index, object };
}

function render(documents: Document[]): string {
  return documents
    .map((document, index) => {
      const text = document.toString();
      return index > 0 && !text.startsWith('---') ? `---\n${text}` : text;
    })
    .join('');
}

/** Writes next to the file and renames over it: the runtime's directory watch never reads half a file. */
async function writeAtomically(file: string, text: string): Promise<void> {
  const temp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.tmp`);
  await writeFile(temp, text);
  await rename(temp, file);
}

async function rewrite(file: string, edit: (documents: Document[]) => void): Promise<Undo> {
  const before = await readFile(file, 'utf8');
  if (file.endsWith('.json')) {
    // A JSON file holds one object: the edit leaves one or none.
    const documents = parseAllDocuments(before) as Document[];
    edit(documents);
    if (documents.length === 0) await rm(file);
    else await writeAtomically(file, `${JSON.stringify(documents[0]!.toJS(), null, 2)}\n`);
  } else {
    const documents = parseAllDocuments(before) as Document[];
    edit(documents);
    if (documents.every((document) => document.contents === null)) await rm(file);
    else await writeAtomically(file, render(documents));
  }
  return () => writeAtomically(file, before);
}

/** Replaces the document with `object`. */
export function replaceDocument(ref: DocumentRef, object: K8sObject): Promise<Undo> {
  return rewrite(ref.file, (documents) => {
    const document = documents[ref.index]!;
    const previous = document.contents as { commentBefore?: string | null; comment?: string | null; items?: { key?: { commentBefore?: string | null } }[] } | null;
    const node = document.createNode(object) as NonNullable<Document['contents']> & { commentBefore?: string | null; comment?: string | null };
    // The comments around the object stay (the parser hangs a document's header comment on its first key).
    node.commentBefore = previous?.commentBefore ?? previous?.items?.[0]?.key?.commentBefore ?? null;
    node.comment = previous?.comment ?? null;
    document.contents = node;
  });
}

/** Takes the document out of its file (the file goes when nothing is left in it). */
export function removeDocument(ref: DocumentRef): Promise<Undo> {
  return rewrite(ref.file, (documents) => {
    documents.splice(ref.index, 1);
  });
}

/** Writes a new object as a file of its own, `<namespace>.<kind>.<name>.yaml` (no namespace for cluster-scoped kinds). */
export async function addDocumentFile(dir: string, object: K8sObject, namespaced: boolean): Promise<Undo> {
  const base = [...(namespaced ? [object.metadata?.namespace || 'default'] : []), object.kind!.toLowerCase(), object.metadata!.name!].join('.').replace(/[^A-Za-z0-9._-]/g, '_');
  let file = path.join(dir, `${base}.yaml`);
  for (let suffix = 2; await readFile(file).then(() => true, () => false); suffix++) file = path.join(dir, `${base}-${suffix}.yaml`);
  await writeAtomically(file, stringify(object));
  return () => rm(file, { force: true });
}
