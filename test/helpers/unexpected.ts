// Every suite fails when a ztunnel it ran logged an "unexpected error" line (a bug that
// the process survived: a handler threw, an uncaught exception, an unhandled rejection),
// even if every assertion passed. Lines are collected as they are logged; the check runs
// when the test file's root test ends and sets a non-zero exit code, which tap reports as
// a failure of the file.
import t from 'tap';

const seen: string[] = [];
const allowed: string[] = [];
let armed = false;

/** A test that injects a fault on purpose names the text its lines carry. */
export function allowUnexpected(text: string): void {
  allowed.push(text);
}

/** Look at one log line of a ztunnel this test file started. */
export function noteLogLine(source: string, line: string): void {
  if (!armed) {
    armed = true;
    t.teardown(() => {
      if (seen.length === 0) return;
      process.stderr.write(`${seen.length} "unexpected error" line(s) were logged by the ztunnels of this file:\n${seen.join('\n')}\n`);
      process.exitCode = 1;
    });
  }
  if (line.includes('unexpected error') && !allowed.some((a) => line.includes(a))) seen.push(`${source}: ${line}`);
}
