// HTTP load client of the perf bench, run inside the client pod's netns: autocannon's programmatic
// API, keep-alive, GET URL; prints one JSON line.
//   node dist/bench/autocannon-client.js URL CONNECTIONS SECONDS [RATE]
//     RATE (optional): autocannon `overallRate`, total requests per second over all connections.
// Latency percentiles are computed here from every 2xx response's own time (autocannon's
// 'response' event, hrtime, sub-millisecond); autocannon's own histogram keeps whole
// milliseconds, too coarse for "added p99 ≤ 0.5 ms" (its figures are printed too, as ac*).
// Must never: run unbounded (autocannon's duration plus a hard exit timer), or load anything but URL.

import autocannon from 'autocannon';
import { pathToFileURL } from 'node:url';

/** Nearest-rank percentile of an ascending array. */
export function buildPercentile(sorted: Float64Array | readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

export interface HttpLoadResult {
  requests: number;
  seconds: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  p999Ms: number;
  maxMs: number;
  errors: number;
  timeouts: number;
  non2xx: number;
  acP50Ms: number;
  acP99Ms: number;
  acP999Ms: number;
}

async function run(url: string, connections: number, seconds: number, rate: number | undefined): Promise<HttpLoadResult> {
  let lat = new Float64Array(1 << 16);
  let n = 0;
  let done: (r: autocannon.Result) => void = () => undefined;
  let fail: (e: unknown) => void = () => undefined;
  const finished = new Promise<autocannon.Result>((res, rej) => {
    done = res;
    fail = rej;
  });
  const opts = { url, connections, duration: seconds, pipelining: 1, timeout: 10, ...(rate === undefined ? {} : { overallRate: rate }) };
  const inst = autocannon(opts, (err: unknown, result: autocannon.Result) => (err ? fail(err) : done(result)));
  inst.on('response', (_client, statusCode, _bytes, ms) => {
    if (statusCode < 200 || statusCode > 299) return;
    if (n === lat.length) {
      const bigger = new Float64Array(lat.length * 2);
      bigger.set(lat);
      lat = bigger;
    }
    lat[n++] = ms;
  });
  const r = await finished;
  const sorted = lat.subarray(0, n).sort();
  return {
    requests: n,
    seconds: r.duration,
    rps: n / r.duration,
    p50Ms: buildPercentile(sorted, 50),
    p99Ms: buildPercentile(sorted, 99),
    p999Ms: buildPercentile(sorted, 99.9),
    maxMs: n > 0 ? sorted[n - 1]! : NaN,
    errors: r.errors,
    timeouts: r.timeouts,
    non2xx: r.non2xx,
    acP50Ms: r.latency.p50,
    acP99Ms: r.latency.p99,
    acP999Ms: r.latency.p99_9,
  };
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const [url, cText, sText, rText] = process.argv.slice(2);
  const connections = Number(cText);
  const seconds = Number(sText);
  const rate = rText === undefined ? undefined : Number(rText);
  if (url === undefined || !/^http:\/\//.test(url) || !(connections > 0) || !(seconds > 0) || (rate !== undefined && !(rate > 0))) {
    process.stderr.write('usage: node dist/bench/autocannon-client.js http://HOST:PORT/ CONNECTIONS SECONDS [RATE]\n');
    process.exit(2);
  }
  setTimeout(() => process.exit(3), seconds * 1000 + 30_000).unref();
  run(url, connections, seconds, rate).then(
    (res) => {
      process.stdout.write(`${JSON.stringify(res)}\n`);
      process.exit(0);
    },
    (err: unknown) => {
      process.stderr.write(`${String(err)}\n`);
      process.exit(1);
    },
  );
}
