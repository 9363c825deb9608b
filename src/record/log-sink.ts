// Where every log line goes: one pino root logger (the process log) and a direct
// line writer for access events, both on the same non-blocking destination and under
// one level. JSON format is pino's output (level label, RFC3339 `time`, `scope`,
// `message`); plain format is written by us, never through a worker thread.
// Must never block the data path: the default destination is an async SonicBoom on
// fd 1 (shared by every Telemetry in the process, never closed by us).
// Invariant: callers check `enabled(level)` before building fields.
import pino from 'pino';
import type { DestinationStream, Logger } from 'pino';
import {
  LEVEL_VALUES,
  buildPinoLevel,
  buildPlainLine,
  buildTimestamp,
  getLogLevel,
  type LogLevelName,
} from './log-format.js';

export type LogFormat = 'plain' | 'json';

type Flushable = { flush(cb?: (err?: Error) => unknown): void };

let sharedStdout: ReturnType<typeof pino.destination> | undefined;

/** Lines buffered while stdout is not taking them; beyond this they are dropped, not kept. */
const MAX_BUFFERED_LOG_BYTES = 16 * 1024 * 1024;
/** At exit, how many 100 ms waits a stuck stdout gets before the tail is given up. */
const EXIT_FLUSH_RETRIES = 20;

/**
 * One async stdout writer per process: several ztunnels in one test process share it.
 * Bounded: a reader that stops reading (a full pipe) costs dropped lines, never unbounded
 * memory, and never a process that cannot exit (pino flushes synchronously at exit and
 * would otherwise retry EAGAIN forever).
 */
function findStdout(): ReturnType<typeof pino.destination> {
  if (sharedStdout) return sharedStdout;
  let exiting = false;
  let exitRetries = 0;
  process.once('exit', () => {
    exiting = true;
  });
  const d = pino.destination({
    dest: 1,
    sync: false,
    maxLength: MAX_BUFFERED_LOG_BYTES,
    retryEAGAIN: () => !exiting || ++exitRetries < EXIT_FLUSH_RETRIES,
  });
  const flushSync = d.flushSync.bind(d);
  d.flushSync = () => {
    try {
      flushSync();
    } catch {
      // stdout is stuck or gone: lose the tail rather than hang the exit.
    }
  };
  sharedStdout = d;
  return d;
}

const SCOPE_MARK = '"scope":';
const chindingsSym = pino.symbols.chindingsSym;

export class LogSink {
  readonly format: LogFormat;
  readonly log: Logger;
  private readonly out: NodeJS.WritableStream | DestinationStream;
  private levelName: LogLevelName;
  private levelValue: number;
  private readonly accessLogger: Logger;

  constructor(format: LogFormat, level: LogLevelName, destination?: NodeJS.WritableStream) {
    this.format = format;
    this.out = destination ?? findStdout();
    this.levelName = level;
    this.levelValue = LEVEL_VALUES[level];
    const out = this.out;
    // Plain: pino still does level filtering and child bindings; each (rare) process-log
    // line is re-read and printed in the plain layout. Access lines bypass this.
    const stream: DestinationStream =
      format === 'json'
        ? (out as DestinationStream)
        : { write: (json: string) => void out.write(transcodePlain(json)) };
    this.log = pino(
      {
        level: buildPinoLevel(level),
        base: undefined,
        messageKey: 'message',
        formatters: { level: (label: string) => ({ level: label }) },
        timestamp: () => `,"time":"${buildTimestamp()}"`,
        // Every line carries a scope; the root gets `ztunnel`. Checked on the bindings
        // string so a child's own `scope` is never duplicated in the JSON.
        mixin: (_obj: object, _level: number, logger: Logger) =>
          (logger as unknown as Record<symbol, string>)[chindingsSym]?.includes(SCOPE_MARK)
            ? {}
            : { scope: 'ztunnel' },
      },
      stream,
    );
    this.accessLogger = this.log.child({ scope: 'access' });
  }

  enabled(level: Exclude<LogLevelName, 'off'>): boolean {
    return LEVEL_VALUES[level] >= this.levelValue;
  }

  getLevel(): LogLevelName {
    return this.levelName;
  }

  /** Throws ZT_ERR_CONFIG_INVALID on a bad level, leaving the current level as it was. */
  setLevel(text: string): void {
    const level = getLogLevel(text);
    this.levelName = level;
    this.levelValue = LEVEL_VALUES[level];
    // Children inherit the level through their prototype, so this reaches them too.
    this.log.level = buildPinoLevel(level);
  }

  /** An access-scope line; the caller has already checked `enabled(level)`. */
  access(level: 'debug' | 'info' | 'warn' | 'error', message: string, fields: Record<string, unknown>): void {
    if (this.format === 'json') {
      this.accessLogger[level](fields, message);
      return;
    }
    this.out.write(buildPlainLine(buildTimestamp(), level, 'access', message, fields));
  }

  /** Lines already formatted elsewhere (a data-path worker thread's log) onto this destination. */
  writeRaw(text: string): void {
    this.out.write(text);
  }

  /** Resolves once buffered lines reached the destination (or after 1 s at most). */
  flush(): Promise<void> {
    const out = this.out as Partial<Flushable>;
    if (typeof out.flush !== 'function') return Promise.resolve();
    return new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 1000);
      timer.unref();
      try {
        out.flush!(() => {
          clearTimeout(timer);
          resolve();
        });
      } catch {
        // A SonicBoom that is not ready or already closed: nothing left to flush.
        clearTimeout(timer);
        resolve();
      }
    });
  }
}

const JSON_META = new Set(['level', 'time', 'scope', 'message']);

/** pino JSON line → plain line. Only used for the process log, never per packet. */
export function transcodePlain(json: string): string {
  let obj: Record<string, unknown>;
  try {
    obj = JSON.parse(json) as Record<string, unknown>;
  } catch {
    return json.endsWith('\n') ? json : json + '\n';
  }
  const fields: Record<string, unknown> = {};
  for (const key in obj) {
    if (JSON_META.has(key)) continue;
    const value = obj[key];
    // pino's serialised Error: the message is what a reader wants; the stack is noise here.
    if (key === 'err' && value !== null && typeof value === 'object' && 'message' in value) {
      fields['error'] = String((value as { message: unknown }).message);
      continue;
    }
    fields[key] = value;
  }
  return buildPlainLine(
    typeof obj['time'] === 'string' ? obj['time'] : buildTimestamp(),
    typeof obj['level'] === 'string' ? obj['level'] : 'info',
    typeof obj['scope'] === 'string' ? obj['scope'] : 'ztunnel',
    typeof obj['message'] === 'string' ? obj['message'] : '',
    fields,
  );
}
