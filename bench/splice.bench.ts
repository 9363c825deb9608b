// Side by side in one run: iperf3 on loopback directly, through a relay using the JS pipe
// loop (copyBidirectional) and through one using the kernel splice worker
// (spliceBidirectional), alternating, N rounds; medians of Gbit/s and relay CPU.
// Usage: node dist/bench/splice.bench.js [rounds=3] [seconds=5] [--out FILE]
// (internal: node dist/bench/splice.bench.js relay copy|splice LISTEN_PORT TARGET_PORT)
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { copyBidirectional, socketSide } from '../src/copy/copy.js';
import { spliceBidirectional, stopSpliceWorker } from '../src/copy/splice-copy.js';

const SELF = fileURLToPath(import.meta.url);
const TICKS = 100; // USER_HZ

async function runRelay(mode: string, listenPort: number, targetPort: number): Promise<void> {
  const server = net.createServer({ allowHalfOpen: true }, (down) => {
    const up = net.connect({ host: '127.0.0.1', port: targetPort, allowHalfOpen: true }, () => {
      const counters = { clientToServer: 0, serverToClient: 0 };
      void (mode === 'splice' ? spliceBidirectional(down, up, counters) : copyBidirectional(socketSide(down), socketSide(up), counters));
    });
    up.on('error', () => down.destroy());
    down.on('error', () => up.destroy());
  });
  server.listen(listenPort, '127.0.0.1', () => process.stdout.write('ready\n'));
  process.on('SIGTERM', () => {
    server.close();
    void stopSpliceWorker().then(() => process.exit(0));
  });
}

function cpuSeconds(pid: number): number {
  const f = (readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1] as string).split(' ');
  return (Number(f[11]) + Number(f[12])) / TICKS;
}

async function one(mode: 'direct' | 'copy' | 'splice', reverse: boolean, secs: number): Promise<{ gbps: number; cpu: number }> {
  let relay: ChildProcess | undefined;
  let port = 5301;
  if (mode !== 'direct') {
    port = 5302;
    relay = spawn(process.execPath, [SELF, 'relay', mode, String(port), '5301'], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise((r) => relay?.stdout?.once('data', r));
  }
  const c0 = relay?.pid ? cpuSeconds(relay.pid) : 0;
  const t0 = Date.now();
  const out = execFileSync('iperf3', ['-c', '127.0.0.1', '-p', String(port), '-t', String(secs), '-J', ...(reverse ? ['-R'] : [])], { encoding: 'utf8' });
  const wall = (Date.now() - t0) / 1000;
  const c1 = relay?.pid ? cpuSeconds(relay.pid) : 0;
  relay?.kill('SIGTERM');
  if (relay) await new Promise((r) => relay?.once('exit', r));
  const j = JSON.parse(out) as { end: { sum_received: { bits_per_second: number } } };
  return { gbps: j.end.sum_received.bits_per_second / 1e9, cpu: relay ? (100 * (c1 - c0)) / wall : Number.NaN };
}

const median = (a: number[]): number => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)] as number;

async function main(argv: string[]): Promise<void> {
  if (argv[0] === 'relay') return runRelay(argv[1] as string, Number(argv[2]), Number(argv[3]));
  const outIdx = argv.indexOf('--out');
  const out = outIdx >= 0 ? argv[outIdx + 1] : undefined;
  const nums = argv.filter((a, i) => !a.startsWith('--') && i !== outIdx + 1);
  const rounds = Number(nums[0] ?? 3);
  const secs = Number(nums[1] ?? 5);
  const server = spawn('iperf3', ['-s', '-p', '5301'], { stdio: 'ignore' });
  await new Promise((r) => setTimeout(r, 500));
  const res: Record<string, { gbps: number; cpu: number; reverse: boolean }[]> = { direct: [], copy: [], splice: [] };
  try {
    for (let i = 0; i < rounds; i++) {
      for (const mode of ['direct', 'copy', 'splice'] as const) {
        for (const reverse of [false, true]) {
          const r = await one(mode, reverse, secs);
          res[mode]?.push({ ...r, reverse });
          process.stderr.write(`round ${i} ${mode} ${reverse ? 'down' : 'up'} ${r.gbps.toFixed(2)} Gbit/s\n`);
        }
      }
    }
  } finally {
    server.kill();
  }
  const cpuModel = (/model name\s*:\s*(.*)/.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1] ?? '?').trim();
  const lines = [
    `# Splice vs the JS copy loop (TCP ↔ TCP relay on loopback)`,
    ``,
    `Date: ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC. Command: \`node dist/bench/splice.bench.js ${rounds} ${secs}\`. Machine: ${os.cpus().length} cores, ${cpuModel}, kernel ${os.release()}, node ${process.version}.`,
    `iperf3 single stream, ${secs} s each, ${rounds} rounds alternating the three paths; medians. Relay CPU is the relay process (worker included), 100 % = one core.`,
    ``,
    `| path | client → server Gbit/s | server → client Gbit/s | × copy loop (up / down) | relay CPU % (up / down) |`,
    `|---|---:|---:|---:|---:|`,
  ];
  const m = (mode: string, rev: boolean, k: 'gbps' | 'cpu'): number => median((res[mode] ?? []).filter((r) => r.reverse === rev).map((r) => r[k]));
  for (const mode of ['direct', 'copy', 'splice']) {
    const up = m(mode, false, 'gbps');
    const down = m(mode, true, 'gbps');
    const ratio = mode === 'direct' ? '–' : `${(up / m('copy', false, 'gbps')).toFixed(2)} / ${(down / m('copy', true, 'gbps')).toFixed(2)}`;
    const cpu = mode === 'direct' ? '–' : `${m(mode, false, 'cpu').toFixed(0)} / ${m(mode, true, 'cpu').toFixed(0)}`;
    lines.push(`| ${mode === 'direct' ? 'direct (no relay)' : mode === 'copy' ? 'JS copy loop (copyBidirectional)' : 'splice worker (spliceBidirectional)'} | ${up.toFixed(2)} | ${down.toFixed(2)} | ${ratio} | ${cpu} |`);
  }
  const text = `${lines.join('\n')}\n`;
  process.stdout.write(text);
  if (out) writeFileSync(out, text);
}

void main(process.argv.slice(2));
