/**
 * What a relay does between the kernel handing it bytes and its write of them onward, from syscall timestamps:
 * `perf record -e raw_syscalls:sys_enter,raw_syscalls:sys_exit` of the relays (and, where found, the load and target
 * processes beside them), read back with `perf script`. Per thread, a *wake-up* starts when a poll (`epoll_pwait`,
 * `epoll_wait`, `poll`, `ppoll`) returns events and ends when the thread enters a poll that may block (timeout not 0);
 * libuv's zero-timeout polls inside it (idle-time metrics, or events found at once) keep it awake. Per wake-up:
 *   - poll -> first write: from the poll's return to the entry of the first write-type syscall (the bytes leaving);
 *   - read -> first write: from the return of the first read that got bytes to that write;
 *   - awake: from the poll's return to the entry of the poll that sleeps (everything the turn did, the write's
 *     completion and the empty polls included);
 *   - syscalls per wake-up by kind.
 * Per write, across wake-ups (a relay that polls for writability between its read and its write, as stunnel does,
 * spends two wake-ups on one forwarded chunk): *forwarding*, from the first poll that returned events, and from the
 * first read that got bytes, since the thread's previous write, to this write.
 * Across processes (one perf session, one clock): a *hop* is a write by one process and the next wake-up of another
 * that it caused, taken as the latest write before the wake-up by a process the caller names as its neighbour on the
 * path (within HOP_WINDOW_US), for wake-ups that read bytes: the kernel's delivery plus the scheduler's wake-up. Timings are perf's clock (tracepoints cost ~1 us per syscall).
 *
 * Owns: parsing that perf script output and these figures. Must not know about: which process is which relay (the
 * caller names the pids), the mesh.
 */

/** x86-64 syscall numbers by kind. */
const POLLS = new Set([7, 232, 271, 281, 441]);
const READS = new Set([0, 17, 19, 45, 47, 295]);
const WRITES = new Set([1, 18, 20, 44, 46, 296]);
const NAMES: Record<number, string> = {
  0: 'read', 1: 'write', 3: 'close', 7: 'poll', 17: 'pread64', 18: 'pwrite64', 19: 'readv', 20: 'writev', 44: 'sendto', 45: 'recvfrom',
  46: 'sendmsg', 47: 'recvmsg', 202: 'futex', 228: 'clock_gettime', 232: 'epoll_wait', 233: 'epoll_ctl', 271: 'ppoll', 281: 'epoll_pwait',
  291: 'epoll_create1', 295: 'preadv', 296: 'pwritev', 441: 'epoll_pwait2', 54: 'setsockopt', 55: 'getsockopt', 16: 'ioctl', 72: 'fcntl',
};
/** A write more than this before a wake-up is not taken as its cause. */
const HOP_WINDOW_US = 2_000;

interface Wake {
  pid: number;
  tid: number;
  start: number;
  firstReadEnd: number | undefined;
  firstWrite: number | undefined;
  end: number | undefined;
  syscalls: Map<string, number>;
  emptyPolls: number;
}

interface ThreadState {
  wake: Wake | undefined;
  /** Since this thread's last write: when the first poll returned events, when the first read got bytes. */
  firstPollSinceWrite: number | undefined;
  firstReadSinceWrite: number | undefined;
  /** The syscall entered and not yet exited: its number and first args. */
  pendingNr: number;
  pendingArgs: string[];
}

export interface TimelineFigures {
  wakes: number;
  /** Medians and 90th percentiles in microseconds. */
  pollToWrite: { p50: number; p90: number; n: number };
  readToWrite: { p50: number; p90: number; n: number };
  awake: { p50: number; p90: number; n: number };
  /** Per write: from the first poll with events / the first read with bytes since the thread's last write. */
  pollToWriteAcrossWakes: { p50: number; p90: number; n: number };
  readToWriteAcrossWakes: { p50: number; p90: number; n: number };
  /** Wake-ups with no write at all (a completion, a timer, a FIN...), share of all. */
  withoutWrite: number;
  /** Mean syscalls per wake-up by name (those over 0.05), `all` for every syscall, `empty polls` for polls that returned 0. */
  perWake: Record<string, number>;
}

export interface Timeline {
  /** Per process label. */
  processes: Record<string, TimelineFigures>;
  /** `from -> to`: median and p90 in microseconds of write -> the other's wake-up, and how many. */
  hops: Record<string, { p50: number; p90: number; n: number }>;
}

function quantiles(values: number[]): { p50: number; p90: number; n: number } {
  if (values.length === 0) return { p50: Number.NaN, p90: Number.NaN, n: 0 };
  const sorted = values.slice().sort((a, b) => a - b);
  const at = (q: number): number => +sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!.toFixed(1);
  return { p50: at(0.5), p90: at(0.9), n: values.length };
}

/**
 * Reads `perf script -F pid,tid,time,event,trace --ns` output of raw_syscalls events for the processes in `labels`
 * (pid -> label) and returns the figures; `path` lists the labels in the order the bytes pass them (load, relays,
 * target): a hop is counted only between neighbours on it.
 */
export function syscallTimeline(script: string, labels: ReadonlyMap<number, string>, path: readonly string[]): Timeline {
  const threads = new Map<number, ThreadState>();
  const wakes: Wake[] = [];
  /** Every write entry, in time order: [time us, pid]. */
  const writes: Array<[number, number]> = [];
  /** Per write: [pid, us since the first poll with events / the first read with bytes after the thread's last write]. */
  const forwardFromPoll: Array<[number, number]> = [];
  const forwardFromRead: Array<[number, number]> = [];
  // "  1234/  1240 81234.123456789: raw_syscalls:sys_enter: NR 281 (5, 7ffd, 400, ffffffff, 0, 8)"
  // "  1234/  1240 81234.123456789: raw_syscalls:sys_exit: NR 281 = 1"
  const pattern = /^\s*(\d+)\/\s*(\d+)\s+([\d.]+):\s+raw_syscalls:sys_(enter|exit):\s+NR (\d+) (?:\(([^)]*)\)|= (-?\d+))/;
  for (const line of script.split('\n')) {
    const match = pattern.exec(line);
    if (match === null) continue;
    const pid = Number(match[1]);
    if (!labels.has(pid)) continue;
    const tid = Number(match[2]);
    const time = Number(match[3]) * 1e6;
    const nr = Number(match[5]);
    let state = threads.get(tid);
    if (state === undefined) {
      threads.set(tid, (state = { wake: undefined, firstPollSinceWrite: undefined, firstReadSinceWrite: undefined, pendingNr: -1, pendingArgs: [] }));
    }
    if (match[4] === 'enter') {
      state.pendingNr = nr;
      state.pendingArgs = (match[6] ?? '').split(',').map((arg) => arg.trim());
      const wake = state.wake;
      if (POLLS.has(nr)) {
        // epoll_pwait/epoll_wait/epoll_pwait2(epfd, events, max, timeout...), poll/ppoll(fds, n, timeout)
        const timeoutArg = nr === 7 ? state.pendingArgs[2] : nr === 271 || nr === 441 ? state.pendingArgs[2] : state.pendingArgs[3];
        const zero = nr === 271 || nr === 441 ? false : parseInt(timeoutArg ?? '1', 16) === 0;
        if (wake !== undefined && !zero) {
          wake.end = time;
          state.wake = undefined;
        }
      } else if (wake !== undefined) {
        const name = NAMES[nr] ?? `nr ${nr}`;
        wake.syscalls.set(name, (wake.syscalls.get(name) ?? 0) + 1);
      }
      if (WRITES.has(nr)) {
        writes.push([time, pid]);
        if (wake !== undefined && wake.firstWrite === undefined) wake.firstWrite = time;
        if (state.firstPollSinceWrite !== undefined) forwardFromPoll.push([pid, time - state.firstPollSinceWrite]);
        if (state.firstReadSinceWrite !== undefined) forwardFromRead.push([pid, time - state.firstReadSinceWrite]);
        state.firstPollSinceWrite = undefined;
        state.firstReadSinceWrite = undefined;
      }
      continue;
    }
    const result = Number(match[7]);
    if (POLLS.has(nr)) {
      if (result > 0) state.firstPollSinceWrite ??= time;
      let wake = state.wake;
      if (result > 0 && wake === undefined) {
        wake = { pid, tid, start: time, firstReadEnd: undefined, firstWrite: undefined, end: undefined, syscalls: new Map(), emptyPolls: 0 };
        wakes.push(wake);
        state.wake = wake;
      }
      if (wake !== undefined) {
        const name = NAMES[nr] ?? `nr ${nr}`;
        wake.syscalls.set(name, (wake.syscalls.get(name) ?? 0) + 1);
        if (result === 0) wake.emptyPolls++;
      }
    } else if (READS.has(nr) && result > 0) {
      state.firstReadSinceWrite ??= time;
      const wake = state.wake;
      if (wake !== undefined && wake.firstReadEnd === undefined) wake.firstReadEnd = time;
    }
  }

  const processes: Record<string, TimelineFigures> = {};
  for (const label of new Set(labels.values())) {
    const own = wakes.filter((wake) => labels.get(wake.pid) === label && wake.end !== undefined);
    if (own.length === 0) continue;
    const totals = new Map<string, number>();
    let all = 0;
    let empty = 0;
    for (const wake of own) {
      for (const [name, count] of wake.syscalls) {
        totals.set(name, (totals.get(name) ?? 0) + count);
        all += count;
      }
      empty += wake.emptyPolls;
    }
    const perWake: Record<string, number> = { all: +(all / own.length).toFixed(2), 'empty polls': +(empty / own.length).toFixed(2) };
    for (const [name, count] of [...totals].sort((a, b) => b[1] - a[1])) if (count / own.length >= 0.05) perWake[name] = +(count / own.length).toFixed(2);
    const written = own.filter((wake) => wake.firstWrite !== undefined);
    processes[label] = {
      wakes: own.length,
      pollToWrite: quantiles(written.map((wake) => wake.firstWrite! - wake.start)),
      readToWrite: quantiles(written.filter((wake) => wake.firstReadEnd !== undefined && wake.firstReadEnd < wake.firstWrite!).map((wake) => wake.firstWrite! - wake.firstReadEnd!)),
      awake: quantiles(own.map((wake) => wake.end! - wake.start)),
      pollToWriteAcrossWakes: quantiles(forwardFromPoll.filter(([pid]) => labels.get(pid) === label).map(([, us]) => us)),
      readToWriteAcrossWakes: quantiles(forwardFromRead.filter(([pid]) => labels.get(pid) === label).map(([, us]) => us)),
      withoutWrite: +(1 - written.length / own.length).toFixed(3),
      perWake,
    };
  }

  // Hops: the latest write by a neighbour on the path before each wake-up.
  const neighbours = new Map<string, Set<string>>();
  for (let index = 0; index < path.length; index++) {
    neighbours.set(path[index]!, new Set([path[index - 1], path[index + 1]].filter((label) => label !== undefined)));
  }
  const hops = new Map<string, number[]>();
  let cursor = 0;
  const lastWriteBy = new Map<number, number>();
  // Only wake-ups that read bytes: a relay that polls for writability (stunnel) wakes a second time per chunk, for
  // no neighbour's write.
  for (const wake of wakes.filter((candidate) => candidate.firstReadEnd !== undefined).sort((a, b) => a.start - b.start)) {
    while (cursor < writes.length && writes[cursor]![0] <= wake.start) {
      lastWriteBy.set(writes[cursor]![1], writes[cursor]![0]);
      cursor++;
    }
    let cause: number | undefined;
    let at = -Infinity;
    const near = neighbours.get(labels.get(wake.pid)!);
    for (const [pid, time] of lastWriteBy) {
      if (pid !== wake.pid && near?.has(labels.get(pid)!) === true && time > at) {
        at = time;
        cause = pid;
      }
    }
    if (cause === undefined || wake.start - at > HOP_WINDOW_US) continue;
    const key = `${labels.get(cause)} -> ${labels.get(wake.pid)}`;
    let list = hops.get(key);
    if (list === undefined) hops.set(key, (list = []));
    list.push(wake.start - at);
  }
  return { processes, hops: Object.fromEntries([...hops].filter(([, list]) => list.length >= 20).map(([key, list]) => [key, quantiles(list)])) };
}

/** The pids of `root`'s descendants whose command line contains `needle` (bench tools started inside pods). */
export function descendantsMatching(root: number, needle: string, readProc: (path: string) => string, listProc: () => string[]): number[] {
  const children = new Map<number, number[]>();
  for (const entry of listProc()) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = readProc(`/proc/${entry}/stat`);
    } catch {
      continue;
    }
    // pid (comm) state ppid ...: comm may hold spaces and parentheses, so read after the last ')'.
    const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
    let list = children.get(ppid);
    if (list === undefined) children.set(ppid, (list = []));
    list.push(Number(entry));
  }
  const found: number[] = [];
  const queue = [root];
  while (queue.length > 0) {
    const pid = queue.pop()!;
    for (const child of children.get(pid) ?? []) {
      queue.push(child);
      let cmdline: string;
      try {
        cmdline = readProc(`/proc/${child}/cmdline`).replaceAll('\0', ' ');
      } catch {
        continue;
      }
      if (cmdline.includes(needle) && cmdline.includes(process.execPath)) found.push(child);
    }
  }
  return found;
}
