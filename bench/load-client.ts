// Load generator the throughput bench runs inside a pod netns; prints one JSON line per result.
//   node dist/bench/load-client.js connect HOST PORT COUNT CONCURRENCY
//       a new TCP connection per request: connect, send 1 byte, await the echo, close (FIN), await close
//   node dist/bench/load-client.js idle HOST PORT COUNT HOLD_MS
//       opens COUNT connections (1 byte echoed on each), prints {"ready":...}, holds them HOLD_MS, closes, exits
//   node dist/bench/load-client.js http HOST PORT CONNECTIONS SECONDS
//       keep-alive GET / load (fallback when wrk is not installed): req/s, p50, p99
// Must never: run unbounded (every mode has a count or a deadline, and a hard exit timer),
// or connect anywhere but HOST:PORT.

import http from 'node:http';
import net from 'node:net';
import { pathToFileURL } from 'node:url';

export function buildPercentile(sortedMs: readonly number[], p: number): number {
  if (sortedMs.length === 0) return NaN;
  const i = Math.min(sortedMs.length - 1, Math.max(0, Math.ceil((p / 100) * sortedMs.length) - 1));
  return sortedMs[i]!;
}

function summarise(latMs: number[], elapsedMs: number, errors: number): Record<string, number> {
  latMs.sort((a, b) => a - b);
  return {
    count: latMs.length,
    errors,
    seconds: elapsedMs / 1000,
    perSec: latMs.length / (elapsedMs / 1000),
    p50Ms: buildPercentile(latMs, 50),
    p99Ms: buildPercentile(latMs, 99),
    p999Ms: buildPercentile(latMs, 99.9),
    maxMs: latMs[latMs.length - 1] ?? NaN,
    over200msCount: latMs.filter((ms) => ms >= 200).length,
    over1sCount: latMs.filter((ms) => ms >= 1000).length,
  };
}

function oneConnection(host: string, port: number, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    let echoed = false;
    const s = net.connect({ host, port, noDelay: true });
    const timer = setTimeout(() => s.destroy(), timeoutMs);
    s.on('connect', () => s.write('x'));
    s.on('data', () => {
      echoed = true;
      s.end();
    });
    s.on('error', () => undefined);
    s.on('close', () => {
      clearTimeout(timer);
      resolve(echoed);
    });
  });
}

async function runConnect(host: string, port: number, count: number, concurrency: number): Promise<Record<string, number>> {
  const lat: number[] = [];
  let errors = 0;
  let next = 0;
  const t0 = performance.now();
  const worker = async (): Promise<void> => {
    while (next < count) {
      next += 1;
      const s = performance.now();
      if (await oneConnection(host, port, 5000)) lat.push(performance.now() - s);
      else errors += 1;
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return summarise(lat, performance.now() - t0, errors);
}

async function runIdle(host: string, port: number, count: number, holdMs: number): Promise<void> {
  const sockets: net.Socket[] = [];
  let errors = 0;
  let next = 0;
  const open = (): Promise<void> =>
    new Promise((resolve) => {
      const s = net.connect({ host, port });
      const timer = setTimeout(() => {
        errors += 1;
        s.destroy();
        resolve();
      }, 10_000);
      s.on('error', () => undefined);
      s.on('connect', () => s.write('x'));
      s.once('data', () => {
        clearTimeout(timer);
        sockets.push(s);
        resolve();
      });
    });
  const t0 = performance.now();
  // Bounded concurrency so the SYN backlog of the listeners on the way is not the thing measured.
  await Promise.all(
    Array.from({ length: 50 }, async () => {
      while (next < count) {
        next += 1;
        await open();
      }
    }),
  );
  process.stdout.write(`${JSON.stringify({ ready: sockets.length, errors, openMs: performance.now() - t0 })}\n`);
  await new Promise((r) => setTimeout(r, holdMs));
  for (const s of sockets) s.destroy();
}

async function runHttp(host: string, port: number, connections: number, seconds: number): Promise<Record<string, number>> {
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
  const lat: number[] = [];
  let errors = 0;
  const deadline = performance.now() + seconds * 1000;
  const get = (): Promise<boolean> =>
    new Promise((resolve) => {
      const req = http.get({ host, port, path: '/', agent, timeout: 5000 }, (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode === 200));
        res.on('error', () => resolve(false));
      });
      req.on('timeout', () => req.destroy());
      req.on('error', () => resolve(false));
    });
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: connections }, async () => {
      while (performance.now() < deadline) {
        const s = performance.now();
        if (await get()) lat.push(performance.now() - s);
        else errors += 1;
      }
    }),
  );
  agent.destroy();
  return summarise(lat, performance.now() - t0, errors);
}

async function main(argv: string[]): Promise<number> {
  const [mode, host, portText, aText, bText] = argv;
  const port = Number(portText);
  const a = Number(aText);
  const b = Number(bText);
  if (host === undefined || !(port > 0 && port < 65536) || !(a > 0) || !(b > 0)) {
    process.stderr.write('usage: load-client.js connect|idle|http HOST PORT N M\n');
    return 2;
  }
  // Hard stop whatever happens (a wedged connection must not hang the bench).
  const hardMs = mode === 'idle' ? b + 120_000 : mode === 'http' ? b * 1000 + 30_000 : 300_000;
  setTimeout(() => process.exit(3), hardMs).unref();
  switch (mode) {
    case 'connect':
      process.stdout.write(`${JSON.stringify(await runConnect(host, port, a, b))}\n`);
      return 0;
    case 'idle':
      await runIdle(host, port, a, b);
      return 0;
    case 'http':
      process.stdout.write(`${JSON.stringify(await runHttp(host, port, a, b))}\n`);
      return 0;
    default:
      process.stderr.write(`unknown mode '${mode}'\n`);
      return 2;
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (err: unknown) => {
      process.stderr.write(`${String(err)}\n`);
      process.exit(1);
    },
  );
}
