/**
 * Writes a line whose fields are already JSON text through a pino logger's own output, exactly as pino frames it
 * (its level and time keys, the logger's bindings, the message key, its line end), so a hot path can build its
 * line with a string template instead of handing pino an object that pino walks key by key and JSON.stringifies
 * nested object by nested object. The line lands on the same stream as every other line of that logger, in order.
 *
 * Owns: reading pino's framing through its published `pino.symbols`, and refusing loggers whose framing it cannot
 * reproduce (a mixin, a log formatter, a nested key, a write hook, another message key): those get `undefined`
 * and their callers log objects as before.
 * Must not know about: what the fields mean (the agent's and the waypoint's access logs build them).
 */
import { pino } from 'pino';

const { streamSym, chindingsSym, lsCacheSym, timeSym, endSym, mixinSym, formattersSym, hooksSym, nestedKeySym, messageKeySym } = pino.symbols;

/** The parts of a pino logger this module reads, by pino's published symbols; pino sets them on every logger and child. */
interface PinoInternals {
  stream: { write(line: string): unknown } | undefined;
  chindings: string | undefined;
  levelStrings: Record<number, string> | undefined;
  time: (() => string) | undefined;
  end: string | undefined;
  mixin: unknown;
  formatters: { log?: unknown } | undefined;
  hooks: { streamWrite?: unknown } | undefined;
  nestedKey: unknown;
  messageKey: unknown;
}

function internalsOf(logger: object): PinoInternals {
  const bySymbol = logger as Record<symbol, unknown>;
  return {
    stream: bySymbol[streamSym] as PinoInternals['stream'],
    chindings: bySymbol[chindingsSym] as string | undefined,
    levelStrings: bySymbol[lsCacheSym] as PinoInternals['levelStrings'],
    time: bySymbol[timeSym] as PinoInternals['time'],
    end: bySymbol[endSym] as string | undefined,
    mixin: bySymbol[mixinSym],
    formatters: bySymbol[formattersSym] as PinoInternals['formatters'],
    hooks: bySymbol[hooksSym] as PinoInternals['hooks'],
    nestedKey: bySymbol[nestedKeySym],
    messageKey: bySymbol[messageKeySym],
  };
}

export interface RawLineLogger {
  /** Whether `level` ('info', 'error', ...) is written at the logger's current level (it can change at run time). */
  enabled(level: string): boolean;
  /**
   * Writes one line at `level`: `fields` is JSON object members with a leading comma (`,"a":1,"b":"x"`), the caller's
   * to escape; `messageJson` the message as a JSON string literal.
   */
  write(level: string, fields: string, messageJson: string): void;
  /**
   * Pino's framing in parts, for a writer that writes the whole line itself (the waypoint's access log, into a byte
   * buffer): the logger's stream, the level's opening (`{"level":30`), whether the time is pino's default
   * (`,"time":<Date.now()>`, which the writer may write itself), the time's text otherwise, the bindings (read per
   * line: a child's are its own) and the line's end.
   */
  readonly stream: unknown;
  levelJson(level: string): string;
  readonly epochTime: boolean;
  timeJson(): string;
  bindingsJson(): string;
  readonly end: string;
}

/** The raw writer for `logger`, or undefined when it is no plain pino logger (a test double, a custom framing). */
export function rawLineLogger(logger: object): RawLineLogger | undefined {
  const { stream, levelStrings, time, end, mixin, formatters, hooks, nestedKey, messageKey } = internalsOf(logger);
  const { levels, isLevelEnabled } = logger as { levels?: { values?: Record<string, number> }; isLevelEnabled?: (level: string) => boolean };
  const values = levels?.values;
  if (!stream || typeof stream.write !== 'function' || !levelStrings || typeof time !== 'function' || typeof end !== 'string' || !values || typeof isLevelEnabled !== 'function') return undefined;
  if (mixin || formatters?.log || hooks?.streamWrite || nestedKey || messageKey !== 'msg') return undefined;
  return {
    enabled: (level) => isLevelEnabled.call(logger, level),
    write(level, fields, messageJson) {
      // Pino's own framing, in its order: level, time, the logger's bindings (read per line: a child's are its
      // own), the fields, the message, the line end.
      const chindings = (logger as Record<symbol, unknown>)[chindingsSym] as string | undefined;
      stream.write(`${levelStrings[values[level]!]}${time.call(logger)}${chindings ?? ''}${fields},"msg":${messageJson}${end}`);
    },
    stream,
    levelJson: (level) => levelStrings[values[level]!]!,
    epochTime: time === pino.stdTimeFunctions.epochTime,
    timeJson: () => time.call(logger),
    bindingsJson: () => ((logger as Record<symbol, unknown>)[chindingsSym] as string | undefined) ?? '',
    end,
  };
}
