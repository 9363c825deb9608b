// Log levels, timestamps and the plain line format shared by the process log and the
// access log. Pure helpers: nothing here writes anywhere.
// Plain format (ztunnel's own): `<RFC3339 UTC, µs>\t<level>\t<scope>\t<message>\t<k=v ...>`,
// string values double-quoted (JSON-escaped, so a value can never forge a new line).
import { ZtError } from '../errors.js';

export type LogLevelName = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'off';

/** Numeric order as pino's; `off` silences everything. */
export const LEVEL_VALUES: Readonly<Record<LogLevelName, number>> = {
  trace: 10,
  debug: 20,
  info: 30,
  warn: 40,
  error: 50,
  off: Number.POSITIVE_INFINITY,
};

/** Parses a LOG_LEVEL / admin `?level=` value; throws ZT_ERR_CONFIG_INVALID on anything else. */
export function getLogLevel(text: string): LogLevelName {
  const level = text.trim().toLowerCase();
  if (Object.prototype.hasOwnProperty.call(LEVEL_VALUES, level)) return level as LogLevelName;
  throw new ZtError(
    'ZT_ERR_CONFIG_INVALID',
    `invalid log level ${JSON.stringify(text)}: expected one of error, warn, info, debug, trace, off`,
  );
}

/** pino's name for a level (`off` is `silent` there). */
export function buildPinoLevel(level: LogLevelName): string {
  return level === 'off' ? 'silent' : level;
}

// Wall clock = monotonic clock + an offset re-read from Date.now() once a second, so
// timestamps have µs digits, never run backwards, and follow wall-clock changes.
let clockOffsetMs = Date.now() - performance.now();
let clockSyncedAt = performance.now();
let lastTimeMs = 0;

/** RFC3339 UTC with microseconds, e.g. 2024-05-01T10:00:00.123456Z. */
export function buildTimestamp(): string {
  const mono = performance.now();
  if (mono - clockSyncedAt > 1000) {
    clockOffsetMs = Date.now() - mono;
    clockSyncedAt = mono;
  }
  const nowMs = Math.max(lastTimeMs, clockOffsetMs + mono);
  lastTimeMs = nowMs;
  const wholeMs = Math.floor(nowMs);
  const micros = Math.min(999, Math.floor((nowMs - wholeMs) * 1000));
  return new Date(wholeMs).toISOString().slice(0, 23) + String(micros).padStart(3, '0') + 'Z';
}

/** `k=v` pairs: strings quoted, numbers and booleans bare, objects as quoted JSON. */
export function buildPlainFields(fields: Readonly<Record<string, unknown>>): string {
  let out = '';
  for (const key in fields) {
    const value = fields[key];
    if (value === undefined) continue;
    let text: string;
    switch (typeof value) {
      case 'string':
        text = JSON.stringify(value);
        break;
      case 'number':
      case 'boolean':
      case 'bigint':
        text = String(value);
        break;
      default:
        text = JSON.stringify(safeJson(value));
        break;
    }
    out += (out === '' ? '' : ' ') + key + '=' + text;
  }
  return out;
}

export function buildPlainLine(
  time: string,
  level: string,
  scope: string,
  message: string,
  fields: Readonly<Record<string, unknown>>,
): string {
  const kv = buildPlainFields(fields);
  return `${time}\t${level}\t${scope}\t${message}${kv === '' ? '' : '\t' + kv}\n`;
}

function safeJson(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}
