/**
 * The image map: which command a container runs when its Pod names an `image` and no `command` (a local pod runs
 * processes, not images). The default map is images.yaml next to this file; `ambitctl local up --image-map FILE`
 * adds or overrides entries.
 *
 * Owns: reading the map and resolving an image (or a container's own command) to argv.
 * Must not know about: pods, namespaces or how processes are started.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { parse } from 'yaml';
import { WorkloadError } from './errors.ts';

export const DEFAULT_IMAGE_MAP = path.join(import.meta.dirname, 'images.yaml');

export interface ImageEntry {
  command: string[];
  args: string[];
}

export type ImageMap = Map<string, ImageEntry>;

function stringList(value: unknown): value is string[] {
  return Array.isArray(value) && value.every((item) => typeof item === 'string');
}

/** Reads an image map file; `node` becomes this Node.js and `./`/`../` words paths relative to the file. */
export async function readImageMap(file: string, into: ImageMap = new Map()): Promise<ImageMap> {
  const parsed: unknown = parse(await readFile(file, 'utf8'));
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) {
    throw new WorkloadError('BAD_IMAGE_MAP', `${file}: expected a mapping of image name to { command, args }`);
  }
  const resolveWord = (word: string, index: number): string =>
    index === 0 && word === 'node' ? process.execPath : word.startsWith('./') || word.startsWith('../') ? path.resolve(path.dirname(file), word) : word;
  for (const [image, entry] of Object.entries(parsed as Record<string, unknown>)) {
    const { command, args = [] } = (entry ?? {}) as { command?: unknown; args?: unknown };
    if (!stringList(command) || command.length === 0 || !stringList(args)) {
      throw new WorkloadError('BAD_IMAGE_MAP', `${file}: image ${image} needs command (a list of strings) and optional args`);
    }
    into.set(image, { command: command.map(resolveWord), args: args.map((word) => resolveWord(word, 1)) });
  }
  return into;
}

/** The image name without a `:tag` or `@digest` (`ambit/echo-server:1.0` is `ambit/echo-server`). */
export function imageName(image: string): string {
  const withoutDigest = image.split('@')[0]!;
  const lastColon = withoutDigest.lastIndexOf(':');
  return lastColon > withoutDigest.lastIndexOf('/') ? withoutDigest.slice(0, lastColon) : withoutDigest;
}

/**
 * The argv a container runs, as Kubernetes combines them: `command` replaces the image's entrypoint and `args` its
 * arguments. Undefined when neither the container nor the map gives a command.
 */
export function containerArgv(map: ImageMap, container: { image?: string; command?: string[]; args?: string[] }): string[] | undefined {
  const entry = container.image !== undefined ? map.get(imageName(container.image)) : undefined;
  const command = container.command ?? entry?.command;
  if (command === undefined || command.length === 0) return undefined;
  const args = container.args ?? (container.command === undefined ? entry?.args : undefined) ?? [];
  return [...command, ...args];
}
