/**
 * Local mode's bootstrap token file, read by one reader for both callers of the control plane: the xDS server and
 * the CA service. One `<token> <node-name>` per line (`#` comments); a token alone on a line is accepted as a token
 * of no node (tools; the CA refuses it, having no node to authorize). Reloaded when the file changes (its inode,
 * size or modification time, checked on each lookup), so adding a node or rotating a token takes effect for xDS and
 * the CA at once, without a restart. A file that becomes invalid is reported and the last good table kept.
 *
 * Owns: parsing, reloading, and the token -> node lookup (tokens kept only as SHA-256 digests, compared by digest).
 * Must not know about: gRPC, xDS, certificates.
 */
import { createHash } from 'node:crypto';
import { readFile, stat } from 'node:fs/promises';

export interface BootstrapTokenMatch {
  /** The node the token belongs to; undefined for a token listed alone. */
  node: string | undefined;
}

function digest(token: string): string {
  return createHash('sha256').update(token).digest('hex');
}

/** Parses the file's text; `source` names it in error messages. Token digest -> node ('' for a token alone). */
export function parseBootstrapTokens(text: string, source: string): Map<string, string> {
  const nodeByTokenDigest = new Map<string, string>();
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/#.*/, '').trim();
    if (line === '') continue;
    const fields = line.split(/\s+/);
    if (fields.length > 2) throw new Error(`${source}:${i + 1}: expected "<token> <node-name>", found ${fields.length} fields`);
    const key = digest(fields[0]!);
    if (nodeByTokenDigest.has(key)) throw new Error(`${source}:${i + 1}: this token is already given to ${nodeByTokenDigest.get(key) || 'another line'}`);
    nodeByTokenDigest.set(key, fields[1] ?? '');
  }
  return nodeByTokenDigest;
}

export class BootstrapTokenFile {
  readonly file: string;
  readonly #onError: (error: Error) => void;
  #table: Map<string, string>;
  #stamp: string;
  #reloading: Promise<void> | undefined;
  /** Times the file was (re)read, for tests. */
  loads = 1;

  private constructor(file: string, table: Map<string, string>, stamp: string, onError: (error: Error) => void) {
    this.file = file;
    this.#table = table;
    this.#stamp = stamp;
    this.#onError = onError;
  }

  /** Reads the file now; throws if it is missing or invalid (the control plane should not start on it). */
  static async open(file: string, options: { onError?: (error: Error) => void } = {}): Promise<BootstrapTokenFile> {
    const stamp = await BootstrapTokenFile.#stampOf(file);
    const table = parseBootstrapTokens(await readFile(file, 'utf8'), file);
    return new BootstrapTokenFile(file, table, stamp, options.onError ?? (() => {}));
  }

  /** The token's entry, after reloading the file if it changed; undefined when the token is not listed. */
  async lookup(token: string): Promise<BootstrapTokenMatch | undefined> {
    await this.#reloadIfChanged();
    const node = this.#table.get(digest(token));
    return node === undefined ? undefined : { node: node || undefined };
  }

  static async #stampOf(file: string): Promise<string> {
    const info = await stat(file);
    return `${info.ino}:${info.size}:${info.mtimeMs}`;
  }

  #reloadIfChanged(): Promise<void> {
    // Concurrent lookups share one check.
    this.#reloading ??= (async () => {
      try {
        const stamp = await BootstrapTokenFile.#stampOf(this.file);
        if (stamp === this.#stamp) return;
        const table = parseBootstrapTokens(await readFile(this.file, 'utf8'), this.file);
        this.#table = table;
        this.#stamp = stamp;
        this.loads++;
      } catch (error) {
        this.#onError(new Error(`bootstrap token file ${this.file} not reloaded, the last good one stays: ${(error as Error).message}`, { cause: error }));
      } finally {
        this.#reloading = undefined;
      }
    })();
    return this.#reloading;
  }
}
