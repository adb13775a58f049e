/**
 * Strict reading of an Istio resource's spec for the compilers that refuse rather than ignore (DestinationRule,
 * VirtualService): an object with only known fields, an Istio field ambit does not implement named as such, a
 * misspelt field answered with the closest known name; every problem carries the path of the field.
 *
 * Owns: those checks and the error that carries the path. Must not know about: any one resource's fields.
 */
import { suggestField } from '../../shared/policy/validate.ts';

export type Json = Record<string, unknown>;

/** A field that makes the resource unservable, with its path (`spec.http[0].match[1].uri`). */
export class Invalid extends Error {
  readonly path: string;
  constructor(path: string, message: string) {
    super(message);
    this.path = path;
  }
}

export function isMapping(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** The object at `path`, with only `allowed` fields; `unsupported` fields are Istio's but not implemented here. */
export function fields(value: unknown, path: string, allowed: readonly string[], unsupported: readonly string[] = []): Json {
  if (!isMapping(value)) throw new Invalid(path, `must be an object, not ${JSON.stringify(value)}`);
  for (const field of Object.keys(value)) {
    if (allowed.includes(field)) continue;
    if (unsupported.includes(field)) throw new Invalid(`${path}.${field}`, 'is not supported by ambit waypoints yet (refused rather than ignored)');
    const suggestion = suggestField(field, [...allowed, ...unsupported]);
    throw new Invalid(`${path}.${field}`, `unknown field (${suggestion ? `did you mean ${suggestion}?` : `allowed: ${allowed.join(', ')}`})`);
  }
  return value;
}
