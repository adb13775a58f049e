/**
 * Libraries only some waypoints use, loaded on first use instead of at start: jose (JWT verification, for a
 * RequestAuthentication) and re2js (RE2 regular expressions, for a route or policy match that has one). A waypoint
 * that serves plain routes never loads them (about 5 MB of its RSS).
 *
 * Owns: when those modules load. Must not know about: what they are used for.
 */
import { createRequire } from 'node:module';

type Jose = typeof import('jose');
type Re2 = typeof import('re2js');

const load = createRequire(import.meta.url);
let jose: Jose | undefined;
let re2: Re2 | undefined;

/** The jose module, loaded on the first call. */
export function joseModule(): Jose {
  return (jose ??= load('jose') as Jose);
}

/** re2js's RE2JS class, loaded on the first call. */
export function re2Module(): Re2['RE2JS'] {
  return (re2 ??= load('re2js') as Re2).RE2JS;
}
