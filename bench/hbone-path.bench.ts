// The HBONE data path alone, without root or namespaces: two ztunnel processes on loopback
// (A: the client's node, B: the server's), the client entering A through SOCKS5 from its
// workload address, A → B over HBONE (mTLS 1.3 + HTTP/2 CONNECT), B → local TCP servers run
// by this process. Reports per side (from /proc/<pid>/stat and VmRSS), so an A/B of two
// builds can compare CPU time rather than wall throughput on a busy machine:
//   bulk   one connection, MB each way: Gbit/s, CPU ms per GB on A and on B
//   rr     keep-alive request/response (100 B → 1 KiB) over 32 connections: req/s, CPU ms per 1k req
//   conn   new connections (1-byte echo), concurrency 20: conn/s, CPU ms per connection
//   idle   1000 idle connections: RSS added per connection on A and on B, and idle RSS
// Usage (after a build): node dist/bench/hbone-path.bench.js [--mb N] [--rr-seconds S] [--conns N] [--idle N] [--dist DIR] [--node-args '--flag ...']
//   [--only up,down,rr,conn,idle]   (the phases to run; e.g. `--only down` to profile one bulk direction)
// Each phase also prints the full / young GCs each side ran during it (count, main-thread ms).
//   --dist DIR  run the ztunnels from another build (e.g. a copy of dist/ made before a change)
// Must never: pass or fail on a timing (it prints figures), leave a child running.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const HERE = fileURLToPath(new URL('.', import.meta.url));
const CLIENT_IP = '127.0.1.2';
const SERVER_IP = '127.0.2.2';
const TICK = 100; // clock ticks per second on Linux

function yaml(): string {
  return `
workloads:
- name: client
  namespace: default
  serviceAccount: client
  workloadIps: ["${CLIENT_IP}"]
  protocol: HBONE
  node: node-a
- name: server
  namespace: default
  serviceAccount: server
  workloadIps: ["${SERVER_IP}"]
  protocol: HBONE
  node: node-b
services: []
`;
}

/** Child mode: one ztunnel, ports printed as one JSON line. */
async function runSide(node: string, hboneTarget: string | undefined, caDir: string, distDir: string): Promise<void> {
  const { App } = (await import(join(distDir, 'src/app.js'))) as typeof import('../src/app.js');
  const { loadConfig } = (await import(join(distDir, 'src/config/env.js'))) as typeof import('../src/config/env.js');
  const config = loadConfig({
    PROXY_MODE: 'node',
    NODE_NAME: node,
    UNSTABLE_ENABLE_SOCKS5: 'true',
    LOG_FORMAT: 'json',
    // Access logs go to /dev/null below, but are still built: as in production.
    ZTUNNEL_OUTBOUND_PORT: '0',
    ZTUNNEL_INBOUND_PLAINTEXT_PORT: '0',
    ZTUNNEL_INBOUND_PORT: '0',
    ZTUNNEL_SOCKS5_PORT: '0',
    ZTUNNEL_ADMIN_PORT: '0',
    ZTUNNEL_STATS_PORT: '0',
    ZTUNNEL_READINESS_PORT: '0',
    ZTUNNEL_BIND_ADDRESS: '0.0.0.0',
    XDS_ADDRESS: '',
    LOCAL_XDS: yaml(),
    LOCAL_CA_CERT: join(caDir, 'ca-cert.pem'),
    LOCAL_CA_KEY: join(caDir, 'ca-key.pem'),
    ...(hboneTarget ? { ZTUNNEL_HBONE_TARGET_PORT: hboneTarget } : {}),
  });
  const { createWriteStream } = await import('node:fs');
  const app = new App(config, { logDestination: createWriteStream('/dev/null') });
  const ports = await app.start();
  process.stdout.write(`PORTS ${JSON.stringify(ports)}\n`);
  // Cumulative GC counts and main-thread pause per kind, for the parent's per-phase figures.
  const { PerformanceObserver, constants } = await import('node:perf_hooks');
  const gcs: GcStats = { major: 0, majorMs: 0, minor: 0, minorMs: 0 };
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      if (((e as { detail?: { kind?: number } }).detail)?.kind === constants.NODE_PERFORMANCE_GC_MAJOR) {
        gcs.major += 1;
        gcs.majorMs += e.duration;
      } else {
        gcs.minor += 1;
        gcs.minorMs += e.duration;
      }
    }
  }).observe({ entryTypes: ['gc'] });
  // The parent asks for the heap after a full GC (children run with --expose-gc).
  process.on('message', (m) => {
    if (typeof m === 'string' && m.startsWith('snap ')) {
      void import('node:v8').then((v8) => process.send!({ file: v8.writeHeapSnapshot(m.slice(5)) }));
      return;
    }
    if (m === 'gc') return void process.send!({ ...gcs });
    if (m !== 'mem') return;
    (globalThis as { gc?: () => void }).gc?.();
    const u = process.memoryUsage();
    process.send!({ heapUsed: u.heapUsed, external: u.external, arrayBuffers: u.arrayBuffers, rss: u.rss });
  });
  process.stdin.resume();
  process.stdin.on('end', () => void app.stop().then(() => process.exit(0)));
}

/** Cumulative since start: full (major) and young (minor, incremental steps included) GCs, main-thread ms. */
interface GcStats {
  major: number;
  majorMs: number;
  minor: number;
  minorMs: number;
}

interface Side {
  child: ChildProcess;
  ports: { socks5?: number | undefined; inbound: number };
}

async function spawnSide(args: string[], nodeArgs: string[]): Promise<Side> {
  const child = spawn(process.execPath, ['--expose-gc', ...nodeArgs, join(HERE, 'hbone-path.bench.js'), ...args], {
    stdio: ['pipe', 'pipe', 'inherit', 'ipc'],
  });
  child.channel?.unref();
  const line = await new Promise<string>((resolve, reject) => {
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      // Anything else the child prints (e.g. --trace-gc) goes to stderr.
      const other = d.toString().replace(/^PORTS .*\n/m, '');
      if (other) process.stderr.write(other);
      buf += d.toString();
      const m = /^PORTS (.*)$/m.exec(buf);
      if (m) resolve(m[1]!);
    });
    child.once('exit', (c) => reject(new Error(`side exited ${c}`)));
  });
  return { child, ports: JSON.parse(line) as Side['ports'] };
}

interface Mem {
  heapUsed: number;
  external: number;
  arrayBuffers: number;
  rss: number;
}

function memOf(child: ChildProcess): Promise<Mem> {
  return new Promise((resolve) => {
    child.once('message', (m) => resolve(m as Mem));
    child.send('mem');
  });
}

function gcOf(child: ChildProcess): Promise<GcStats> {
  return new Promise((resolve) => {
    child.once('message', (m) => resolve(m as GcStats));
    child.send('gc');
  });
}

function cpuMs(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const rest = f.slice(f.lastIndexOf(')') + 2).split(' ');
  return ((Number(rest[11]) + Number(rest[12])) * 1000) / TICK;
}
function rssKb(pid: number): number {
  return Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0);
}

function socks(port: number, host: string, dport: number): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const s = net.connect({ host: '127.0.0.1', port, localAddress: CLIENT_IP });
    s.setNoDelay(true);
    let stage = 0;
    let buf = Buffer.alloc(0);
    s.once('error', reject);
    s.on('connect', () => {
      const req = Buffer.alloc(10);
      req.set([5, 1, 0, 1]);
      req.set(host.split('.').map(Number), 4);
      req.writeUInt16BE(dport, 8);
      s.write(Buffer.concat([Buffer.from([5, 1, 0]), req]));
    });
    const onData = (d: Buffer): void => {
      buf = Buffer.concat([buf, d]);
      if (stage === 0 && buf.length >= 2) {
        buf = buf.subarray(2);
        stage = 1;
      }
      if (stage === 1 && buf.length >= 10) {
        s.removeListener('data', onData);
        s.removeListener('error', reject);
        if (buf[1] !== 0) return reject(new Error(`SOCKS5 reply ${buf[1]}`));
        s.pause();
        if (buf.length > 10) s.unshift(buf.subarray(10));
        resolve(s);
      }
    };
    s.on('data', onData);
  });
}

function listen(handler: (s: net.Socket) => void): Promise<number> {
  return new Promise((resolve) => {
    const srv = net.createServer({ noDelay: true }, handler);
    srv.listen(0, SERVER_IP, () => resolve((srv.address() as net.AddressInfo).port));
    srv.unref();
  });
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      side: { type: 'string' },
      target: { type: 'string' },
      ca: { type: 'string' },
      dist: { type: 'string' },
      mb: { type: 'string', default: '1000' },
      'rr-seconds': { type: 'string', default: '5' },
      conns: { type: 'string', default: '2000' },
      idle: { type: 'string', default: '1000' },
      label: { type: 'string', default: '' },
      'node-args': { type: 'string', default: '' },
      only: { type: 'string', default: 'up,down,rr,conn,idle' },
    },
  });
  const distDir = values.dist ?? join(HERE, '..');
  const want = (phase: string): boolean => values.only.split(',').includes(phase);
  if (values.side) return runSide(values.side, values.target, values.ca!, distDir);

  const caDir = mkdtempSync(join(os.tmpdir(), 'hbone-bench-'));
  const mk = spawn(process.execPath, [join(distDir, 'src/main.js'), 'ca', 'create', '--out', caDir], { stdio: 'ignore' });
  await new Promise((r) => mk.once('exit', r));
  const nodeArgs = values['node-args'] ? values['node-args'].split(' ') : [];
  const b = await spawnSide(['--side', 'node-b', '--ca', caDir, '--dist', distDir], nodeArgs);
  const a = await spawnSide(['--side', 'node-a', '--ca', caDir, '--dist', distDir, '--target', String(b.ports.inbound)], nodeArgs);
  const pa = a.child.pid!;
  const pb = b.child.pid!;
  const out = (s: string): void => void process.stdout.write(`${values.label}${s}\n`);
  try {
    const chunk = Buffer.alloc(64 * 1024, 7);
    const discardPort = await listen((s) => {
      s.on('data', () => undefined);
      s.on('end', () => s.end());
      s.on('error', () => undefined);
    });
    const sourcePort = await listen((s) => {
      s.on('error', () => undefined);
      s.once('data', (d) => {
        let left = d.readUInt32BE(0) * 1024 * 1024;
        const pump = (): void => {
          while (left > 0) {
            left -= chunk.length;
            if (!s.write(chunk)) return void s.once('drain', pump);
          }
          s.end();
        };
        pump();
      });
      s.resume();
    });
    const echoPort = await listen((s) => {
      s.on('error', () => undefined);
      s.pipe(s);
    });
    const mb = Number(values.mb);
    const gb = mb / 1024;
    const socksPort = a.ports.socks5!;
    // Warm-up: the pooled HBONE session and the certificates.
    for (let i = 0; i < 20; i++) {
      const s = await socks(socksPort, SERVER_IP, echoPort);
      s.resume();
      s.end('x');
      await new Promise((r) => s.once('close', r));
    }

    out(`start     RSS after start-up and 20 warm-up connections: A ${(rssKb(pa) / 1024).toFixed(0)} MB B ${(rssKb(pb) / 1024).toFixed(0)} MB`);
    const measure = async <T>(fn: () => Promise<T>): Promise<{ r: T; ms: number; a: number; b: number; gc: string }> => {
      const [ga0, gb0] = [await gcOf(a.child), await gcOf(b.child)];
      const [ca0, cb0, t0] = [cpuMs(pa), cpuMs(pb), performance.now()];
      const r = await fn();
      const res = { r, ms: performance.now() - t0, a: cpuMs(pa) - ca0, b: cpuMs(pb) - cb0 };
      const [ga1, gb1] = [await gcOf(a.child), await gcOf(b.child)];
      const d = (x: GcStats, y: GcStats): string =>
        `${y.major - x.major} full (${(y.majorMs - x.majorMs).toFixed(0)} ms) ${y.minor - x.minor} young (${(y.minorMs - x.minorMs).toFixed(0)} ms)`;
      return { ...res, gc: `  GC A ${d(ga0, ga1)} B ${d(gb0, gb1)}` };
    };

    // bulk upload
    if (want('up')) {
    const up = await measure(async () => {
      const s = await socks(socksPort, SERVER_IP, discardPort);
      let left = mb * 1024 * 1024;
      await new Promise<void>((resolve) => {
        const pump = (): void => {
          while (left > 0) {
            left -= chunk.length;
            if (!s.write(chunk)) return void s.once('drain', pump);
          }
          s.end();
        };
        s.resume();
        s.once('close', () => resolve());
        pump();
      });
    });
    out(`bulk up   ${((mb * 8 * 1.048576) / up.ms).toFixed(2)} Gbit/s  CPU ms/GB A ${(up.a / gb).toFixed(0)} B ${(up.b / gb).toFixed(0)}${up.gc}`);
    }
    if (want('down')) {
    const down = await measure(async () => {
      const s = await socks(socksPort, SERVER_IP, sourcePort);
      const hdr = Buffer.alloc(4);
      hdr.writeUInt32BE(mb);
      s.write(hdr);
      let got = 0;
      s.on('data', (d: Buffer) => (got += d.length));
      s.on('end', () => s.end());
      s.resume();
      await new Promise((r) => s.once('close', r));
      return got;
    });
    out(`bulk down ${((mb * 8 * 1.048576) / down.ms).toFixed(2)} Gbit/s  CPU ms/GB A ${(down.a / gb).toFixed(0)} B ${(down.b / gb).toFixed(0)}${down.gc}`);
    }

    // request/response
    if (want('rr')) {
    const rrSeconds = Number(values['rr-seconds']);
    const req = Buffer.alloc(100, 1);
    const rr = await measure(async () => {
      const respPortSock = await Promise.all(Array.from({ length: 32 }, () => socks(socksPort, SERVER_IP, echoPort)));
      let n = 0;
      const until = performance.now() + rrSeconds * 1000;
      await Promise.all(
        respPortSock.map(
          (s) =>
            new Promise<void>((resolve) => {
              let pending = 0;
              s.on('data', (d: Buffer) => {
                pending -= d.length;
                if (pending > 0) return;
                n += 1;
                if (performance.now() > until) {
                  s.end();
                  s.once('close', () => resolve());
                  return;
                }
                pending = req.length;
                s.write(req);
              });
              s.resume();
              pending = req.length;
              s.write(req);
            }),
        ),
      );
      return n;
    });
    out(`rr        ${((rr.r * 1000) / rr.ms).toFixed(0)} req/s  CPU ms/1k req A ${((rr.a * 1000) / rr.r).toFixed(1)} B ${((rr.b * 1000) / rr.r).toFixed(1)}${rr.gc}`);
    }

    // new connections
    if (want('conn')) {
    const conns = Number(values.conns);
    const cc = await measure(async () => {
      let next = 0;
      let failed = 0;
      const worker = async (): Promise<void> => {
        while (next < conns) {
          next += 1;
          try {
            const s = await socks(socksPort, SERVER_IP, echoPort);
            s.resume();
            await new Promise<void>((resolve) => {
              s.once('data', () => s.end());
              s.once('close', () => resolve());
              s.once('error', () => undefined);
              s.write('x');
            });
          } catch {
            failed += 1;
          }
        }
      };
      await Promise.all(Array.from({ length: 20 }, worker));
      return failed;
    });
    out(`conn      ${((conns * 1000) / cc.ms).toFixed(0)} conn/s  CPU ms/conn A ${(cc.a / conns).toFixed(3)} B ${(cc.b / conns).toFixed(3)}  failed ${cc.r}${cc.gc}`);
    }

    // idle connections
    if (want('idle')) {
    await new Promise((r) => setTimeout(r, 1500));
    const idleN = Number(values.idle);
    // HBONE_BENCH_SNAP=/tmp/x: heap snapshots of both sides before (0) and with (1) the idle connections.
    const snap = async (when: string): Promise<void> => {
      if (!process.env.HBONE_BENCH_SNAP) return;
      for (const [c, n] of [[a.child, 'a'], [b.child, 'b']] as const) {
        c.send(`snap ${process.env.HBONE_BENCH_SNAP}-${n}${when}.heapsnapshot`);
        await new Promise((r) => c.once('message', r));
      }
    };
    await snap('0');
    const [ma0, mb0] = [await memOf(a.child), await memOf(b.child)];
    const [ra0, rb0] = [rssKb(pa), rssKb(pb)];
    const idle: net.Socket[] = [];
    for (let i = 0; i < idleN; i += 50) {
      const batch = await Promise.all(Array.from({ length: Math.min(50, idleN - i) }, () => socks(socksPort, SERVER_IP, echoPort)));
      await Promise.all(
        batch.map(
          (s) =>
            new Promise<void>((resolve) => {
              s.once('data', () => resolve());
              s.resume();
              s.write('x');
            }),
        ),
      );
      idle.push(...batch);
    }
    await new Promise((r) => setTimeout(r, 3000));
    const [ra1, rb1] = [rssKb(pa), rssKb(pb)];
    await snap('1');
    const [ma1, mb1] = [await memOf(a.child), await memOf(b.child)];
    const per = (x: number, y: number): string => ((y - x) / 1024 / idleN).toFixed(2);
    out(`idle      after GC, per idle conn: JS heap A ${per(ma0.heapUsed, ma1.heapUsed)} KB B ${per(mb0.heapUsed, mb1.heapUsed)} KB; external A ${per(ma0.external, ma1.external)} KB B ${per(mb0.external, mb1.external)} KB; heap before A ${(ma0.heapUsed / 2 ** 20).toFixed(1)} MB B ${(mb0.heapUsed / 2 ** 20).toFixed(1)} MB`);
    out(`idle      RSS before A ${(ra0 / 1024).toFixed(0)} MB B ${(rb0 / 1024).toFixed(0)} MB; KB per idle conn A ${((ra1 - ra0) / idleN).toFixed(1)} B ${((rb1 - rb0) / idleN).toFixed(1)}`);
    for (const s of idle) s.destroy();
    }
  } finally {
    a.child.stdin!.end();
    b.child.stdin!.end();
    const gone = (c: ChildProcess): Promise<unknown> => new Promise((r) => (c.exitCode !== null ? r(0) : c.once('exit', r)));
    const timer = setTimeout(() => {
      a.child.kill('SIGKILL');
      b.child.kill('SIGKILL');
    }, 10_000);
    await Promise.all([gone(a.child), gone(b.child)]);
    clearTimeout(timer);
    rmSync(caDir, { recursive: true, force: true });
  }
}

await main();
