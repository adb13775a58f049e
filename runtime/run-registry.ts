/**
 * Records each local-runtime run in /run/ambit-runtime/<runId>.json and removes what crashed runs left behind
 * (their namespaces, the processes inside them, their temp directory) the next time a cluster is created.
 *
 * Owns: the record format and the "is that run still alive" test (pid plus its start time, so a reused pid is
 * not mistaken for the run).
 * Must not know about: cluster topology beyond the run's namespace prefix.
 */
import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { NETNS_ETC_DIR, removeResolvConfsWithPrefix } from './cluster-dns.ts';
import { deleteNetns, listNetns } from './netns.ts';
import { NETNS_PREFIX, runPrefix } from './topology.ts';

/** On tmpfs, so records vanish on reboot together with the namespaces they describe. */
export const REGISTRY_DIR = '/run/ambit-runtime';

export interface RunRecord {
  runId: string;
  pid: number;
  /** /proc/<pid>/stat start time (clock ticks since boot), to tell the creator from a later process with its pid. */
  pidStartTime: string;
  tmpDir: string;
  createdAt: string;
}

export function processStartTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 22; the command name (field 2) may contain spaces, so count from the closing parenthesis.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

export function isRunAlive(record: RunRecord): boolean {
  return processStartTime(record.pid) === record.pidStartTime;
}

export function recordFile(runId: string): string {
  return path.join(REGISTRY_DIR, `${runId}.json`);
}

export async function writeRecord(record: RunRecord): Promise<void> {
  await mkdir(REGISTRY_DIR, { recursive: true });
  const temp = path.join(REGISTRY_DIR, `.${record.runId}.${process.pid}.tmp`);
  await writeFile(temp, JSON.stringify(record));
  await rename(temp, recordFile(record.runId));
}

export async function removeRecord(runId: string): Promise<void> {
  await rm(recordFile(runId), { force: true });
}

/** Removes one run's namespaces (killing the processes inside) and temp dir, then its record. */
export async function removeRun(record: RunRecord): Promise<void> {
  const prefix = runPrefix(record.runId);
  const leftovers = (await listNetns()).filter((name) => name.startsWith(prefix));
  await Promise.all(leftovers.map((name) => deleteNetns(name)));
  await removeResolvConfsWithPrefix(prefix);
  if (record.tmpDir !== '' && path.isAbsolute(record.tmpDir)) await rm(record.tmpDir, { recursive: true, force: true });
  await removeRecord(record.runId);
}

/** A record being reaped is renamed to `.<runId>.reaping.<reaperPid>.json`, so only one process reaps a run. */
const REAPING_PATTERN = /^\.([^.]+)\.reaping\.(\d+)\.json$/;

/**
 * Claims a dead run's record by renaming it: rename is atomic, so when several test processes start clusters at
 * once exactly one of them cleans up each dead run (concurrent recursive deletes of one tree fail spuriously).
 */
async function claim(file: string, runId: string): Promise<boolean> {
  try {
    await rename(path.join(REGISTRY_DIR, file), path.join(REGISTRY_DIR, `.${runId}.reaping.${process.pid}.json`));
    return true;
  } catch {
    return false; // another process claimed it first
  }
}

/**
 * Cleans up after every recorded run whose creator is dead (and every reap whose reaper died). Returns the run
 * ids removed. Never throws for another run's leftovers: a failed reap is retried by the next createCluster.
 */
export async function reapDeadRuns(): Promise<string[]> {
  let files: string[];
  try {
    files = await readdir(REGISTRY_DIR);
  } catch {
    return [];
  }
  const reaped: string[] = [];
  for (const file of files) {
    const abandoned = REAPING_PATTERN.exec(file);
    if (!file.endsWith('.json') || (file.startsWith('.') && abandoned === null)) continue;
    if (abandoned !== null && processStartTime(Number(abandoned[2])) !== undefined) continue; // its reaper is at work
    let record: RunRecord;
    try {
      record = JSON.parse(await readFile(path.join(REGISTRY_DIR, file), 'utf8')) as RunRecord;
    } catch {
      continue; // claimed by a concurrent reaper, or not ours
    }
    if (isRunAlive(record) || !(await claim(file, record.runId))) continue;
    try {
      await removeRun(record);
      await rm(path.join(REGISTRY_DIR, `.${record.runId}.reaping.${process.pid}.json`), { force: true });
      reaped.push(record.runId);
    } catch {
      // left for the next createCluster: the claim file names a reaper that will be dead by then
    }
  }
  await sweepOrphanEtcEntries().catch(() => undefined);
  return reaped;
}

/**
 * Removes the `/etc/netns/ambit-<runId>-*` entries of runs that have no record (neither alive nor being reaped) and
 * no namespace left: what a lost record, or a reaper that predates them, leaves behind. Safe against a run starting
 * meanwhile: a run writes its record before any such entry, and the entries are listed before the records.
 */
async function sweepOrphanEtcEntries(): Promise<void> {
  const ours = (await readdir(NETNS_ETC_DIR).catch(() => [] as string[])).filter((name) => name.startsWith(NETNS_PREFIX));
  if (ours.length === 0) return;
  const records = await readdir(REGISTRY_DIR).catch(() => [] as string[]);
  const namespaces = await listNetns();
  for (const name of ours) {
    const runId = /^ambit-([^-]+)-/.exec(name)?.[1];
    if (runId === undefined) continue;
    if (records.some((file) => file === `${runId}.json` || file.startsWith(`.${runId}.`))) continue;
    if (namespaces.some((namespace) => namespace.startsWith(runPrefix(runId)))) continue;
    await rm(path.join(NETNS_ETC_DIR, name), { recursive: true, force: true });
  }
}
