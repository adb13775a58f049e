/**
 * List and watch filters: label selectors (`a=b`, `a==b`, `a!=b`, `a`, `!a`, `a in (x,y)`, `a notin (x)`) and the
 * field selectors every kind supports (`metadata.name`, `metadata.namespace`, with `=`, `==` or `!=`), plus
 * `spec.nodeName` and `status.phase` for Pods, as kubectl and the clients send them.
 *
 * Owns: parsing selectors into predicates; a bad selector is a 400. Must not know about: storage or HTTP.
 */
import type { K8sObject } from '../../shared/k8s/objects.ts';
import { ApiError } from './errors.ts';

type Predicate = (object: K8sObject) => boolean;

/** Splits on commas outside parentheses. */
function terms(selector: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let current = '';
  for (const char of selector) {
    if (char === '(') depth++;
    if (char === ')') depth--;
    if (char === ',' && depth === 0) {
      out.push(current.trim());
      current = '';
    } else {
      current += char;
    }
  }
  if (current.trim() !== '') out.push(current.trim());
  return out.filter((term) => term !== '');
}

export function labelSelector(selector: string | null): Predicate {
  if (selector === null || selector.trim() === '') return () => true;
  const checks = terms(selector).map((term): Predicate => {
    const labels = (object: K8sObject): Record<string, string> => object.metadata?.labels ?? {};
    let match = /^([^\s!=]+)\s+(in|notin)\s+\(([^)]*)\)$/.exec(term);
    if (match) {
      const [, key, operator, list] = match;
      const values = new Set(list!.split(',').map((value) => value.trim()));
      return operator === 'in' ? (object) => values.has(labels(object)[key!] as string) : (object) => !values.has(labels(object)[key!] as string);
    }
    match = /^([^\s!=]+)\s*(==|=|!=)\s*([^\s]*)$/.exec(term);
    if (match) {
      const [, key, operator, value] = match;
      return operator === '!=' ? (object) => labels(object)[key!] !== value : (object) => labels(object)[key!] === value;
    }
    match = /^(!?)([^\s!=()]+)$/.exec(term);
    if (match) {
      const [, not, key] = match;
      return not === '!' ? (object) => !(key! in labels(object)) : (object) => key! in labels(object);
    }
    throw new ApiError('BadRequest', `unable to parse requirement "${term}" of label selector "${selector}"`);
  });
  return (object) => checks.every((check) => check(object));
}

const FIELDS: Record<string, (object: K8sObject) => unknown> = {
  'metadata.name': (object) => object.metadata?.name,
  'metadata.namespace': (object) => object.metadata?.namespace,
  'spec.nodeName': (object) => (object.spec as { nodeName?: string } | undefined)?.nodeName,
  'status.phase': (object) => (object.status as { phase?: string } | undefined)?.phase,
};

export function fieldSelector(selector: string | null): Predicate {
  if (selector === null || selector.trim() === '') return () => true;
  const checks = terms(selector).map((term): Predicate => {
    const match = /^([^!=]+)(==|=|!=)(.*)$/.exec(term);
    const field = match ? FIELDS[match[1]!.trim()] : undefined;
    if (!match || field === undefined) throw new ApiError('BadRequest', `field selector "${term}" is not supported: use ${Object.keys(FIELDS).join(', ')}`);
    const value = match[3]!.trim();
    return match[2] === '!=' ? (object) => String(field(object) ?? '') !== value : (object) => String(field(object) ?? '') === value;
  });
  return (object) => checks.every((check) => check(object));
}
