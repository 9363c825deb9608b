// Duration strings as ztunnel's env vars take them: "250ms", "5s", "5m", "1h", "1m30s",
// or a plain number meaning seconds. Pure; never throws (callers name the variable).
// Invariant: the result is a whole, non-negative, safe-integer number of milliseconds.

const UNIT_MS: Readonly<Record<string, number>> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000 };

const PLAIN_SECONDS = /^\d+(?:\.\d+)?$/;
const COMPONENT = /(\d+(?:\.\d+)?)(ms|s|m|h)/y;

/** Milliseconds for a duration string, or undefined when it is not one. */
export function parseDurationMs(text: string): number | undefined {
  const s = text.trim();
  if (s === '') return undefined;
  let ms: number;
  if (PLAIN_SECONDS.test(s)) {
    ms = Number(s) * 1000;
  } else {
    ms = 0;
    COMPONENT.lastIndex = 0;
    while (COMPONENT.lastIndex < s.length) {
      const at = COMPONENT.lastIndex;
      const m = COMPONENT.exec(s);
      if (m === null || m.index !== at) return undefined;
      ms += Number(m[1]) * (UNIT_MS[m[2] as string] as number);
    }
  }
  const rounded = Math.round(ms);
  return Number.isSafeInteger(rounded) ? rounded : undefined;
}
