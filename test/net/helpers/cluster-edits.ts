/**
 * What the net tests do to a local cluster's directory and how they wait for the mesh to follow: a file written
 * the way editors and kubectl-style tools replace one (a hidden temporary name, then a rename, so no reader sees
 * half a document), and a poll until a condition holds or a deadline passes with a message naming what was awaited.
 *
 * Owns: those two steps. Must not know about: what the files hold or what the checks look at.
 */
import { mkdir, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';

/** Writes `text` to `file` by a rename from a hidden temporary name beside it (readers of the directory skip it). */
export async function writeAtomically(file: string, text: string): Promise<void> {
  await mkdir(path.dirname(file), { recursive: true });
  const temporary = path.join(path.dirname(file), `.${path.basename(file)}.tmp`);
  await writeFile(temporary, text);
  await rename(temporary, file);
}

/** Polls `check` every 200 ms until it holds; throws naming `what` after `timeoutMs`. */
export async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not seen in ${timeoutMs / 1000} s: ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}
