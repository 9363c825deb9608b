// Seeded property runs for the fuzz tests (test/unit/fuzz-*.test.ts), on fast-check.
// Every run prints its seed; a failure prints the seed, the path and the shrunk input, and
//   FUZZ_ONLY='<property>' FUZZ_SEED=<seed> FUZZ_PATH=<path> npx tap test/unit/fuzz-x.test.ts
// replays exactly that input (FUZZ_ONLY skips the file's other properties; FUZZ_SEED alone
// reruns every property of the file with that seed). FUZZ_RUNS=<n> multiplies the default number of inputs
// (FUZZ_RUNS=10 runs ten times as many); the defaults keep all fuzz files together near 15 s.
import fc from 'fast-check';
import { performance } from 'node:perf_hooks';
import type { Test } from 'tap';

const scale = Number(process.env.FUZZ_RUNS ?? '1');
const fixedSeed = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED);
const replayPath = process.env.FUZZ_PATH;
const only = process.env.FUZZ_ONLY;

export function runsFor(defaultRuns: number): number {
  return Math.max(1, Math.round(defaultRuns * (Number.isFinite(scale) && scale > 0 ? scale : 1)));
}

function seedFor(): number {
  return fixedSeed ?? (Date.now() ^ (process.pid << 8)) | 0;
}

function report<Ts>(t: Test, name: string, numRuns: number, details: fc.RunDetails<Ts>): void {
  const replay = `FUZZ_ONLY='${name}' FUZZ_SEED=${details.seed}${details.counterexamplePath ? ` FUZZ_PATH=${details.counterexamplePath}` : ''}`;
  if (details.failed) {
    const input = fc.stringify(details.counterexample);
    const why = details.errorInstance instanceof Error ? details.errorInstance.stack ?? details.errorInstance.message : String(details.errorInstance);
    t.fail(`${name}: failed after ${details.numRuns} inputs; replay with ${replay}\n  input: ${input.slice(0, 4000)}\n  error: ${why}`);
    return;
  }
  t.pass(`${name}: ${details.numRuns} inputs passed (seed ${details.seed}; ${numRuns} requested)`);
}

/**
 * Runs a synchronous property; each input must also finish within `perInputMs` (a slow input
 * counts as a failure and is shrunk like any other). The bounds are generous (seconds for
 * inputs that take microseconds) because the machine is shared: they catch blow-ups, not jitter.
 * A synchronous endless loop cannot be interrupted in-process; tap's file timeout ends that.
 */
export function fuzz<T>(t: Test, name: string, arb: fc.Arbitrary<T>, check: (input: T) => void, opts: { runs: number; perInputMs?: number }): void {
  if (only !== undefined && only !== name) return void t.pass(`${name}: not run (FUZZ_ONLY)`);
  const numRuns = runsFor(opts.runs);
  const limit = opts.perInputMs ?? 2000;
  const property = fc.property(arb, (input) => {
    const t0 = performance.now();
    check(input);
    const ms = performance.now() - t0;
    if (ms > limit) throw new Error(`took ${ms.toFixed(0)} ms (bound ${limit} ms)`);
  });
  const details = fc.check(property, { seed: seedFor(), numRuns, path: replayPath, endOnFailure: false });
  report(t, name, numRuns, details);
}

/** The asynchronous form; `perInputMs` is enforced by fast-check's timeout (a hang fails). */
export async function fuzzAsync<T>(
  t: Test,
  name: string,
  arb: fc.Arbitrary<T>,
  check: (input: T) => Promise<void>,
  opts: { runs: number; perInputMs?: number },
): Promise<void> {
  if (only !== undefined && only !== name) return void t.pass(`${name}: not run (FUZZ_ONLY)`);
  const numRuns = runsFor(opts.runs);
  const property = fc.asyncProperty(arb, check);
  const details = await fc.check(property, { seed: seedFor(), numRuns, path: replayPath, timeout: opts.perInputMs ?? 5000, endOnFailure: false });
  report(t, name, numRuns, details);
}
