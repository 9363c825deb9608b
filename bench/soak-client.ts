// Load generator of the soak (bench/soak.ts runs it inside the sleep pod's netns): from a
// start time to a deadline, all at once,
//   bulk   one transfer after another to the sink app (BULK_MB of buildBulkBlock data, then
//          FIN); the sink answers "<sha256> <bytes>", checked against buildBulkDigest;
//   ka     autocannon, keep-alive GET / on the productpage VIP, rate-limited;
//   nc     autocannon with reconnectRate 2: each connection carries two requests and is then
//          closed. autocannon records no response for the request that closes a connection
//          (httpClient.js returns before emitting it), so the latencies it reports are those
//          of the first request of each new connection, connection setup included;
//   churn  at a steady rate: connect to the echo app, send 16 bytes, read them back, close.
// autocannon runs one instance per soak minute (duration and maxOverallRequests both set), so
// each minute has its own p99. Output is JSON lines on stdout:
//   {"k":"tick","at":ms,...}                per second: completions since the last tick
//   {"k":"err","src":"churn","s":ms,"e":ms,"why":"..."}   one per failed operation, with the
//          interval in which it failed (autocannon errors: s = e - request timeout)
//   {"k":"http","mode":"ka"|"nc","minute":i,...}   one per autocannon instance (per minute)
//   {"k":"done"}
// Must never: run unbounded (every loop stops at the deadline, autocannon instances are
// bounded in time and in count, every operation has a timeout, and a hard exit timer
// fires a minute after the deadline), or connect anywhere but the addresses it is given.

import autocannon from 'autocannon';
import net from 'node:net';
import { pathToFileURL } from 'node:url';
import { buildBulkBlock, buildBulkDigest } from '../src/demo/apps.js';

/** The load each part of the soak applies (also recorded in the report). */
export interface SoakRates {
  bulkMb: number;
  kaRate: number;
  kaConnections: number;
  ncRate: number;
  ncConnections: number;
  churnRate: number;
}

export interface SoakClientConfig extends SoakRates {
  /** Epoch ms at which the load starts; minute i is [t0 + 60 s·i, t0 + 60 s·(i+1)). */
  t0: number;
  minutes: number;
  /** productpage service VIP and port (short HTTP requests). */
  vip: string;
  httpPort: number;
  /** productpage pod IP, echo and sink ports. */
  podIp: string;
  echoPort: number;
  sinkPort: number;
  /** The page must name this client address (the original source IP kept through the mesh). */
  clientIp: string;
}

const BLOCK = 64 * 1024;
const OP_TIMEOUT_MS = 5000;
const BULK_TIMEOUT_MS = 60_000;
const HTTP_TIMEOUT_S = 5;

const emit = (o: Record<string, unknown>): void => void process.stdout.write(`${JSON.stringify(o)}\n`);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const errText = (e: unknown): string => ((e as NodeJS.ErrnoException)?.code ?? (e as Error)?.message ?? String(e)).slice(0, 120);

const counts = { bulkOk: 0, bulkBytes: 0, churnOk: 0, kaOk: 0, ncOk: 0 };

function fail(src: string, s: number, why: string): void {
  emit({ k: 'err', src, s, e: Date.now(), why });
}

/** One bulk transfer; resolves with undefined on success, else the reason. */
function bulkOnce(c: SoakClientConfig, blocks: readonly Buffer[], bytes: number, digest: string): Promise<string | undefined> {
  return new Promise((resolve) => {
    let answer = '';
    let settled = false;
    const s = net.connect({ host: c.podIp, port: c.sinkPort, allowHalfOpen: true });
    const done = (why: string | undefined): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      s.destroy();
      resolve(why);
    };
    const timer = setTimeout(() => done(`timeout after ${BULK_TIMEOUT_MS} ms (answer '${answer.trim()}')`), BULK_TIMEOUT_MS);
    s.on('connect', () => {
      let i = 0;
      const pump = (): void => {
        while (i < blocks.length) {
          if (!s.write(blocks[i++]!)) {
            s.once('drain', pump);
            return;
          }
        }
        s.end();
      };
      pump();
    });
    s.on('data', (d: Buffer) => void (answer += d.toString()));
    s.on('end', () => {
      const expected = `${digest} ${bytes}`;
      done(answer.trim() === expected ? undefined : `sink answered '${answer.trim().slice(0, 80)}', expected '${expected.slice(0, 16)}… ${bytes}'`);
    });
    s.on('error', (e) => done(errText(e)));
    s.on('close', () => done(`closed before the answer ('${answer.trim()}')`));
  });
}

async function runBulk(c: SoakClientConfig, deadline: number): Promise<void> {
  const bytes = c.bulkMb * 1024 * 1024;
  const blocks = Array.from({ length: Math.ceil(bytes / BLOCK) }, (_, i) => buildBulkBlock(i).subarray(0, Math.min(BLOCK, bytes - i * BLOCK)));
  const digest = buildBulkDigest(bytes);
  while (Date.now() < deadline) {
    const s = Date.now();
    const why = await bulkOnce(c, blocks, bytes, digest);
    if (why === undefined) {
      counts.bulkOk += 1;
      counts.bulkBytes += bytes;
    } else fail('bulk', s, why);
    await sleep(why === undefined ? 200 : 1000);
  }
}

/** One churn connection: 16 bytes out, the same 16 back, FIN, close. */
function churnOnce(c: SoakClientConfig, seq: number): Promise<string | undefined> {
  return new Promise((resolve) => {
    const payload = `churn-${String(seq).padStart(10, '0')}`;
    let got = '';
    let settled = false;
    const s = net.connect({ host: c.podIp, port: c.echoPort, noDelay: true });
    const done = (why: string | undefined): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (why !== undefined) s.destroy();
      resolve(why);
    };
    const timer = setTimeout(() => done(`timeout after ${OP_TIMEOUT_MS} ms (got ${got.length} bytes)`), OP_TIMEOUT_MS);
    s.on('connect', () => s.write(payload));
    s.on('data', (d: Buffer) => {
      got += d.toString();
      if (got.length >= payload.length) s.end();
    });
    s.on('error', (e) => done(errText(e)));
    s.on('close', () => done(got === payload ? undefined : `echo '${got.slice(0, 40)}' instead of '${payload}'`));
  });
}

async function runChurn(c: SoakClientConfig, deadline: number): Promise<void> {
  const every = 1000 / c.churnRate;
  let seq = 0;
  let next = Date.now();
  const inFlight = new Set<Promise<void>>();
  while (Date.now() < deadline) {
    if (inFlight.size < 500) {
      const s = Date.now();
      const p: Promise<void> = churnOnce(c, seq++).then((why) => {
        inFlight.delete(p);
        if (why === undefined) counts.churnOk += 1;
        else fail('churn', s, why);
      });
      inFlight.add(p);
    } else fail('churn', Date.now(), 'skipped: 500 churn connections already in flight');
    next += every;
    await sleep(Math.max(0, next - Date.now()));
  }
  await Promise.all(inFlight);
}

interface CannonSpec {
  mode: 'ka' | 'nc';
  rate: number;
  connections: number;
  reconnectRate?: number | undefined;
}

function runCannonMinute(c: SoakClientConfig, spec: CannonSpec, minute: number, seconds: number): Promise<void> {
  const mark = `Served by productpage to ${c.clientIp}:`;
  return new Promise((resolve) => {
    const inst = autocannon(
      {
        url: `http://${c.vip}:${c.httpPort}/`,
        connections: spec.connections,
        duration: seconds,
        overallRate: spec.rate,
        // Bounded in count too: never more than the rate allows, plus a little.
        maxOverallRequests: Math.ceil(spec.rate * seconds * 1.05) + spec.connections,
        reconnectRate: spec.reconnectRate,
        timeout: HTTP_TIMEOUT_S,
        verifyBody: (body) => typeof body === 'string' && body.includes(mark),
        skipAggregateResult: false,
      },
      (err, r) => {
        if (err) {
          fail(spec.mode, Date.now(), `autocannon: ${errText(err)}`);
          resolve();
          return;
        }
        emit({
          k: 'http',
          mode: spec.mode,
          minute,
          seconds: r.duration,
          sent: r.requests.sent,
          ok: r['2xx'],
          non2xx: r.non2xx,
          errors: r.errors,
          timeouts: r.timeouts,
          mismatches: r.mismatches,
          p50: r.latency.p50,
          p99: r.latency.p99,
          max: r.latency.max,
        });
        resolve();
      },
    );
    inst.on('response', (_client, status) => {
      if (status >= 200 && status < 300) counts[spec.mode === 'ka' ? 'kaOk' : 'ncOk'] += 1;
      else fail(spec.mode, Date.now() - HTTP_TIMEOUT_S * 1000, `HTTP ${status}`);
    });
    inst.on('reqError', (e) => fail(spec.mode, Date.now() - HTTP_TIMEOUT_S * 1000, errText(e)));
    // 'reqMismatch' is emitted by autocannon's run.js but missing from @types/autocannon.
    (inst as NodeJS.EventEmitter).on('reqMismatch', (body: unknown) => fail(spec.mode, Date.now() - HTTP_TIMEOUT_S * 1000, `unexpected body: ${String(body).slice(0, 60)}`));
  });
}

async function runCannon(c: SoakClientConfig, spec: CannonSpec): Promise<void> {
  for (let m = 0; m < c.minutes; m++) {
    const end = c.t0 + (m + 1) * 60_000;
    const seconds = Math.floor((end - Date.now()) / 1000);
    if (seconds < 1) continue;
    await runCannonMinute(c, spec, m, seconds);
  }
}

export async function runSoakClient(c: SoakClientConfig): Promise<void> {
  const deadline = c.t0 + c.minutes * 60_000;
  await sleep(Math.max(0, c.t0 - Date.now()));
  let last = { ...counts };
  const tick = setInterval(() => {
    const now = { ...counts };
    emit({
      k: 'tick',
      at: Date.now(),
      bulkOk: now.bulkOk - last.bulkOk,
      bulkBytes: now.bulkBytes - last.bulkBytes,
      churnOk: now.churnOk - last.churnOk,
      kaOk: now.kaOk - last.kaOk,
      ncOk: now.ncOk - last.ncOk,
    });
    last = now;
  }, 1000);
  await Promise.all([
    runBulk(c, deadline),
    runChurn(c, deadline),
    runCannon(c, { mode: 'ka', rate: c.kaRate, connections: c.kaConnections }),
    runCannon(c, { mode: 'nc', rate: c.ncRate, connections: c.ncConnections, reconnectRate: 2 }),
  ]);
  clearInterval(tick);
  emit({ k: 'done', at: Date.now() });
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  let c: SoakClientConfig;
  try {
    c = JSON.parse(process.argv[2] ?? '') as SoakClientConfig;
    if (!(c.minutes > 0) || !(c.t0 > 0)) throw new Error('minutes and t0 are required');
  } catch (err) {
    process.stderr.write(`usage: node dist/bench/soak-client.js '<SoakClientConfig JSON>' (${(err as Error).message})\n`);
    process.exit(2);
  }
  // Hard stop whatever happens: a wedged connection must not keep the soak waiting.
  setTimeout(() => process.exit(3), Math.max(0, c.t0 - Date.now()) + c.minutes * 60_000 + 60_000).unref();
  runSoakClient(c).then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`${String(err)}\n`);
      process.exit(1);
    },
  );
}
