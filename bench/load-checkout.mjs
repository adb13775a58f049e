// Loads a module of another checkout named at run time (bench/podcycle-ab.ts's --base): only a computed import() can,
// and the CNI host runtime's import scan (cni/host-runtime.ts, which follows literal specifiers only) reads .ts files.
// Never part of a program ambit ships.
import path from 'node:path';
import { pathToFileURL } from 'node:url';

export function importFromCheckout(checkout, file) {
  return import(pathToFileURL(path.join(checkout, file)).href);
}
