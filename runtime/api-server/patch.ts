/**
 * The patch types kubectl sends: JSON merge patch (RFC 7386), strategic merge patch for the kinds served (lists of
 * objects merged by their merge key, `$patch: delete` and `$setElementOrder`/`$retainKeys` directives honoured or
 * dropped), and JSON patch (RFC 6902: add, remove, replace, test, move, copy).
 *
 * Owns: applying a patch document to an object. Must not know about: where objects are stored.
 */
import { ApiError } from './errors.ts';

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** RFC 7386: a mapping merges key by key, null deletes, anything else replaces. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (!isRecord(patch)) return patch;
  const result: Record<string, unknown> = isRecord(target) ? { ...target } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (value === null) delete result[key];
    else result[key] = mergePatch(result[key], value);
  }
  return result;
}

/**
 * The merge keys of the lists Kubernetes' strategic merge patch merges element by element (from the API types'
 * `patchMergeKey` tags); other lists are replaced whole, as in a merge patch.
 */
const MERGE_KEYS: Record<string, string> = {
  containers: 'name',
  initContainers: 'name',
  ephemeralContainers: 'name',
  env: 'name',
  volumes: 'name',
  volumeMounts: 'mountPath',
  imagePullSecrets: 'name',
  ownerReferences: 'uid',
  conditions: 'type',
  hostAliases: 'ip',
  tolerations: 'key',
};

/** Ports merge on containerPort in a container and on port in a Service, as the API types say. */
function mergeKeyFor(field: string, elements: unknown[]): string | undefined {
  if (field === 'ports') return elements.some((element) => isRecord(element) && 'containerPort' in element) ? 'containerPort' : 'port';
  return MERGE_KEYS[field];
}

function mergeList(field: string, target: unknown, patch: unknown[]): unknown[] {
  const current = Array.isArray(target) ? target : [];
  const key = mergeKeyFor(field, [...current, ...patch]);
  if (key === undefined || !patch.every(isRecord)) return patch.filter((element) => !(isRecord(element) && element.$patch === 'delete'));
  const result = current.map((element) => element);
  for (const element of patch as Record<string, unknown>[]) {
    const index = result.findIndex((candidate) => isRecord(candidate) && candidate[key] === element[key]);
    if (element.$patch === 'delete') {
      if (index !== -1) result.splice(index, 1);
    } else if (element.$patch === 'replace') {
      return patch.filter((entry) => isRecord(entry) && entry.$patch !== 'replace');
    } else if (index === -1) {
      result.push(strategicMergePatch(undefined, element));
    } else {
      result[index] = strategicMergePatch(result[index], element);
    }
  }
  return result;
}

/** Kubernetes' strategic merge patch, for the built-in kinds served and (as merge patch) for the rest. */
export function strategicMergePatch(target: unknown, patch: unknown): unknown {
  if (!isRecord(patch)) return patch;
  if (patch.$patch === 'replace') {
    const { $patch: _directive, ...rest } = patch;
    return rest;
  }
  if (patch.$patch === 'delete') return undefined;
  const result: Record<string, unknown> = isRecord(target) ? { ...target } : {};
  for (const [key, value] of Object.entries(patch)) {
    if (key.startsWith('$setElementOrder/') || key === '$retainKeys' || key === '$patch') continue;
    if (key.startsWith('$deleteFromPrimitiveList/')) {
      const field = key.slice('$deleteFromPrimitiveList/'.length);
      const drop = new Set(Array.isArray(value) ? value : []);
      if (Array.isArray(result[field])) result[field] = (result[field] as unknown[]).filter((element) => !drop.has(element));
      continue;
    }
    if (value === null) delete result[key];
    else if (Array.isArray(value)) result[key] = mergeList(key, result[key], value);
    else {
      const merged = strategicMergePatch(result[key], value);
      if (merged === undefined) delete result[key];
      else result[key] = merged;
    }
  }
  return result;
}

interface JsonPatchOperation {
  op: string;
  path: string;
  from?: string;
  value?: unknown;
}

function pointer(path: string): string[] {
  if (path === '') return [];
  if (!path.startsWith('/')) throw new ApiError('BadRequest', `JSON patch path "${path}" must start with /`);
  return path.slice(1).split('/').map((token) => token.replaceAll('~1', '/').replaceAll('~0', '~'));
}

function parentOf(document: unknown, tokens: string[], path: string): { parent: Record<string, unknown> | unknown[]; key: string } {
  let node: unknown = document;
  for (const token of tokens.slice(0, -1)) {
    node = Array.isArray(node) ? node[Number(token)] : isRecord(node) ? node[token] : undefined;
    if (node === undefined) throw new ApiError('Invalid', `JSON patch path "${path}" does not exist`);
  }
  if (!Array.isArray(node) && !isRecord(node)) throw new ApiError('Invalid', `JSON patch path "${path}" does not exist`);
  return { parent: node, key: tokens.at(-1)! };
}

function read(document: unknown, path: string): unknown {
  let node = document;
  for (const token of pointer(path)) node = Array.isArray(node) ? node[Number(token)] : isRecord(node) ? node[token] : undefined;
  return node;
}

/** RFC 6902 JSON patch, applied to a copy. */
export function jsonPatch(target: unknown, operations: unknown): unknown {
  if (!Array.isArray(operations)) throw new ApiError('BadRequest', 'a JSON patch must be a list of operations');
  let document: unknown = structuredClone(target);
  for (const operation of operations as JsonPatchOperation[]) {
    if (typeof operation !== 'object' || operation === null || typeof operation.op !== 'string' || typeof operation.path !== 'string') {
      throw new ApiError('BadRequest', 'each JSON patch operation needs a string op and path');
    }
    const tokens = pointer(operation.path);
    const value = operation.op === 'move' || operation.op === 'copy' ? structuredClone(read(document, operation.from ?? '')) : operation.value;
    if (operation.op === 'test') {
      if (JSON.stringify(read(document, operation.path)) !== JSON.stringify(operation.value)) throw new ApiError('Invalid', `JSON patch test of "${operation.path}" failed`);
      continue;
    }
    if (operation.op === 'move') document = jsonPatch(document, [{ op: 'remove', path: operation.from }]);
    if (tokens.length === 0) {
      if (operation.op === 'remove') throw new ApiError('Invalid', 'JSON patch cannot remove the whole object');
      document = value;
      continue;
    }
    const { parent, key } = parentOf(document, tokens, operation.path);
    if (operation.op === 'remove' || operation.op === 'replace') {
      const present = Array.isArray(parent) ? Number(key) < parent.length : key in parent;
      if (!present) throw new ApiError('Invalid', `JSON patch ${operation.op} of "${operation.path}": no such member`);
    }
    if (Array.isArray(parent)) {
      const index = key === '-' ? parent.length : Number(key);
      if (operation.op === 'remove') parent.splice(index, 1);
      else if (operation.op === 'replace') parent[index] = value;
      else if (operation.op === 'add' || operation.op === 'move' || operation.op === 'copy') parent.splice(index, 0, value);
      else throw new ApiError('BadRequest', `unknown JSON patch operation "${operation.op}"`);
    } else {
      if (operation.op === 'remove') delete parent[key];
      else if (operation.op === 'add' || operation.op === 'replace' || operation.op === 'move' || operation.op === 'copy') parent[key] = value;
      else throw new ApiError('BadRequest', `unknown JSON patch operation "${operation.op}"`);
    }
  }
  return document;
}

/** Applies a PATCH body by its content type; an unsupported type (server-side apply) is a 415. */
export function applyPatch(contentType: string, target: unknown, patch: unknown): unknown {
  const type = contentType.split(';')[0]!.trim();
  switch (type) {
    case 'application/merge-patch+json':
      return mergePatch(target, patch);
    case 'application/strategic-merge-patch+json':
      return strategicMergePatch(target, patch);
    case 'application/json-patch+json':
      return jsonPatch(target, patch);
    default:
      throw new ApiError('UnsupportedMediaType', `patch type "${type}" is not supported by the local cluster (server-side apply is not: use kubectl apply without --server-side)`);
  }
}
