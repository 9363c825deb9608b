// Root-only, end to end on the kernel capture path (MeshHarness: two nodes, one ztunnel-ts
// per node), about scale and leaks:
// (1) SCALE_CONNS (default 10,000) concurrent connections sleep → productpage over HBONE,
//     opened by this process from inside the sleep netns with a bounded number of connects
//     in flight (socket fds made in the netns up front, each wrapped in a net.Socket only as
//     it connects: see createSocketFdsIn), all kept open, then each sends a few bytes and
//     gets them echoed, then all close. Both ztunnels count all of them in
//     istio_tcp_sockets_open while open (source on ztunnel 1, destination on ztunnel 2). Afterwards each ztunnel's fd count is back to its baseline plus its pooled
//     HBONE session sockets, istio_tcp_sockets_open is 0 and RSS has settled.
// (2) A slow reader: SLOW_READER_BYTES (default 64 MiB; 1 GiB for the manual long run) from
//     productpage's source app, read at SLOW_READER_RATE bytes/s (default 2 MiB/s): nothing
//     lost (sha256 and length), and neither ztunnel's RSS grows beyond what the HTTP/2
//     windows allow it to buffer (stream 4 MiB + connection 16 MiB, both directions) plus
//     a fixed allowance for the runtime.
// Every figure is printed as a test comment.
// Must never: touch anything outside the `zs<pid>` namespaces, or leave them behind (the
// harness is stopped in teardown, the Topology also cleans up on exit and signals).

import t from 'tap';
import { createHash } from 'node:crypto';
import type net from 'node:net';
import { prepareMeshSuite } from '../helpers/mesh-suite.js';
import { closeFds, connectFd, connectFrom, createSocketFdsIn } from '../helpers/netns-client.js';
import { countEstablished, countOpenFds, fmtMiB, MiB, readRssBytes, scrapeMetrics, sumMetric } from '../helpers/proc-stats.js';
import { waitUntil } from '../../src/demo/mesh-harness.js';
import { buildBulkDigest } from '../../src/demo/apps.js';
import { getFdLimit, raiseFdLimit } from '../../native-shims/index.js';

const WORKER = 'ambient-worker';
const WORKER2 = 'ambient-worker2';
const PRODUCTPAGE_IP = '10.244.1.7';
const ZTUNNEL2_IP = '10.244.1.3';
const ECHO_PORT = 9093;
const SOURCE_PORT = 9092;
const HBONE_PORT = 15008;
const CONNS = Number(process.env.SCALE_CONNS ?? 10_000);
const CONNECTS_IN_FLIGHT = 256;
const SLOW_BYTES = Number(process.env.SLOW_READER_BYTES ?? 64 * MiB);
const SLOW_RATE = Number(process.env.SLOW_READER_RATE ?? 2 * MiB);
/** HTTP/2 defaults of ztunnel-ts (HTTP2_STREAM_WINDOW_SIZE / HTTP2_CONNECTION_WINDOW_SIZE). */
const STREAM_WINDOW = 4 * MiB;
const CONNECTION_WINDOW = 16 * MiB;

// Limits first: this process holds CONNS client sockets.
const need = CONNS + 1000;
let fdLimitNote = '';
try {
  const r = raiseFdLimit();
  fdLimitNote = `this process: RLIMIT_NOFILE ${r.before.soft}/${r.before.hard} → ${r.after.soft}/${r.after.hard}`;
} catch (err) {
  fdLimitNote = `this process: cannot raise RLIMIT_NOFILE (${(err as Error).message})`;
}

const mesh =
  getFdLimit().soft < need
    ? (t.plan(0, `RLIMIT_NOFILE ${getFdLimit().soft} < ${need} needed for ${CONNS} connections (${fdLimitNote})`), undefined)
    : // Access logs at info would be 2 × CONNS lines per ztunnel piped to this process: warn only.
      prepareMeshSuite(t, 'zs', { ztunnelEnv: { LOG_LEVEL: 'warn' }, onZtunnelLine: (node, line) => noteErrorLine(node, line) });

/** The `error` fields of each ztunnel's failed-connection log lines, counted (shown on failure). */
const ztErrors = new Map<string, Map<string, number>>();
function noteErrorLine(node: string, line: string): void {
  if (!line.includes('"error"')) return;
  try {
    const o = JSON.parse(line) as { error?: unknown; message?: unknown };
    const key = `${String(o.message)}: ${String(o.error)}`;
    const m = ztErrors.get(node) ?? new Map<string, number>();
    m.set(key, (m.get(key) ?? 0) + 1);
    ztErrors.set(node, m);
  } catch {
    // not JSON
  }
}
const errorSummary = (): string =>
  [...ztErrors].map(([node, m]) => `${node}: ${[...m].sort((a, b) => b[1] - a[1]).slice(0, 8).map(([k, n]) => `${n}× ${k}`).join('; ')}`).join('\n') || 'none';

interface Snapshot {
  fds: number;
  rss: number;
  socketsOpen: number;
  /** HBONE session sockets: client side on ztunnel 1, server side on ztunnel 2. */
  sessions: number;
}

if (mesh) {
  const topo = mesh.topo;
  const sleepNs = topo.podNetns('sleep');
  t.teardown(() => mesh.stop());
  t.comment(fdLimitNote);

  const pidOf = (node: string): number => mesh.getZtunnel(node).child.pid!;
  const snapshot = async (node: string): Promise<Snapshot> => {
    const netns = topo.ztunnelNetns(node);
    const [metrics, sessions] = await Promise.all([
      scrapeMetrics(topo, netns),
      node === WORKER ? countEstablished(topo, netns, 'dport', HBONE_PORT) : countEstablished(topo, netns, 'sport', HBONE_PORT),
    ]);
    // The scrape itself holds an fd for a moment; count after it.
    return { fds: countOpenFds(pidOf(node)), rss: readRssBytes(pidOf(node)), socketsOpen: sumMetric(metrics, 'istio_tcp_sockets_open'), sessions };
  };
  const show = (s: Snapshot): string => `fds ${s.fds}, RSS ${fmtMiB(s.rss)}, istio_tcp_sockets_open ${s.socketsOpen}, HBONE session sockets ${s.sessions}`;

  t.before(async () => {
    try {
      await mesh.start();
      await Promise.all([mesh.startApp('productpage', 'echo', ECHO_PORT), mesh.startApp('productpage', 'source', SOURCE_PORT, String(SLOW_BYTES))]);
    } catch (err) {
      for (const [node, z] of mesh.ztunnels) t.comment(`ztunnel ${node}: ${z.out.slice(-10).join('\n')}\n${z.stderr()}`);
      throw err;
    }
  });

  t.test(`1. ${CONNS} concurrent connections through the mesh, then no leak`, async (t) => {
    for (const node of [WORKER, WORKER2]) {
      const limits = /^Max open files\s+(\S+)\s+(\S+)/m.exec((await topo.execIn(topo.ztunnelNetns(node), 'cat', [`/proc/${pidOf(node)}/limits`])).stdout);
      t.comment(`ztunnel ${node} RLIMIT_NOFILE soft ${limits?.[1]} hard ${limits?.[2]}`);
      t.ok(Number(limits?.[1]) >= need || limits?.[1] === 'unlimited', `ztunnel ${node} may hold ${need} fds`);
    }
    const base: Record<string, Snapshot> = { [WORKER]: await snapshot(WORKER), [WORKER2]: await snapshot(WORKER2) };
    for (const node of [WORKER, WORKER2]) t.comment(`baseline ${node}: ${show(base[node]!)}`);
    // Peak RSS while connections open, echo and close (the heap is not handed back at once).
    const peak: Record<string, number> = { [WORKER]: base[WORKER]!.rss, [WORKER2]: base[WORKER2]!.rss };
    const sampler = setInterval(() => {
      for (const node of [WORKER, WORKER2]) peak[node] = Math.max(peak[node]!, readRssBytes(pidOf(node)));
    }, 250);
    t.teardown(() => clearInterval(sampler));

    // Open all, CONNECTS_IN_FLIGHT at a time. The fds are made up front (one setns); each is
    // wrapped in a net.Socket only as it is connected (see createSocketFdsIn).
    const fds = createSocketFdsIn(sleepNs, CONNS);
    const socks: net.Socket[] = [];
    const errors = new Map<string, number>();
    const noteError = (e: NodeJS.ErrnoException): void => void errors.set(e.code ?? e.message, (errors.get(e.code ?? e.message) ?? 0) + 1);
    const received: Buffer[] = fds.map(() => Buffer.alloc(0));
    let next = 0;
    t.teardown(() => {
      socks.forEach((s) => s.destroy());
      closeFds(fds.slice(next));
    });
    const t0 = performance.now();
    let connected = 0;
    await Promise.all(
      Array.from({ length: CONNECTS_IN_FLIGHT }, async () => {
        while (next < fds.length) {
          const i = next++;
          await new Promise<void>((resolve) => {
            const s = connectFd(fds[i]!, PRODUCTPAGE_IP, ECHO_PORT, () => {
              connected += 1;
              resolve();
            });
            socks[i] = s;
            s.on('error', noteError);
            s.once('error', () => resolve());
            s.on('data', (c: Buffer) => void (received[i] = Buffer.concat([received[i]!, c])));
          });
        }
      }),
    );
    const openMs = Math.round(performance.now() - t0);
    t.comment(`${connected}/${CONNS} connected in ${openMs} ms (${CONNECTS_IN_FLIGHT} connects in flight)`);
    t.equal(connected, CONNS, 'every connect succeeded');
    t.comment(`ztunnel errors so far: ${errorSummary()}`);

    // All upstream legs up: ztunnel 2 reports them as open sockets.
    const allOpen = await waitUntil(async () => (await snapshot(WORKER2)).socketsOpen >= CONNS, 60_000, 500);
    const open: Record<string, Snapshot> = { [WORKER]: await snapshot(WORKER), [WORKER2]: await snapshot(WORKER2) };
    for (const node of [WORKER, WORKER2]) t.comment(`all open, ${node}: ${show(open[node]!)}`);
    t.ok(allOpen, `ztunnel 2 holds all ${CONNS} connections at once`);
    t.ok(open[WORKER]!.fds >= base[WORKER]!.fds + CONNS, 'ztunnel 1 holds an fd per connection');

    // Echo on all.
    const payloadOf = (i: number): Buffer => Buffer.from(`conn ${i} ${'x'.repeat(16)}\n`);
    const t1 = performance.now();
    socks.forEach((s, i) => s.write(payloadOf(i)));
    const allEchoed = await waitUntil(() => received.every((r, i) => r.length >= payloadOf(i).length), 60_000, 200);
    const echoMs = Math.round(performance.now() - t1);
    const good = received.filter((r, i) => r.equals(payloadOf(i))).length;
    t.comment(`${good}/${CONNS} echoed intact in ${echoMs} ms`);
    t.ok(allEchoed, 'every connection got its bytes back');
    t.equal(good, CONNS, 'each echo is exactly what that connection sent');

    // Close all (half-close; the echo app ends its side in turn).
    const t2 = performance.now();
    socks.forEach((s) => s.end());
    let closed = 0;
    // Sockets a ztunnel reset earlier are closed already: count the state, not events.
    const allClosed = await waitUntil(() => (closed = socks.filter((s) => s.closed).length) === CONNS, 60_000, 200);
    t.comment(`${closed}/${CONNS} closed in ${Math.round(performance.now() - t2)} ms; client errors: ${JSON.stringify(Object.fromEntries(errors))}`);
    t.ok(allClosed, 'every connection closed');
    t.equal(errors.size, 0, 'no client-side errors');

    clearInterval(sampler);
    // Back to baseline: sockets_open 0, fds = baseline + session sockets, RSS settled.
    for (const node of [WORKER, WORKER2]) {
      let s = await snapshot(node);
      const settled = await waitUntil(async () => {
        s = await snapshot(node);
        return s.socketsOpen === 0 && s.fds <= base[node]!.fds - base[node]!.sessions + s.sessions;
      }, 30_000, 500);
      t.comment(`after close, ${node}: ${show(s)}`);
      t.ok(settled, `${node}: back to baseline`);
      t.equal(s.socketsOpen, 0, `${node}: istio_tcp_sockets_open is 0`);
      // A leak shows as more; the baseline may include one or two transient fds (a config-file
      // read, an accept in progress), so a little less is fine.
      const left = s.fds - s.sessions;
      const was = base[node]!.fds - base[node]!.sessions;
      t.ok(left <= was && left >= was - 3, `${node}: fds = ${left} + ${s.sessions} pooled session sockets (baseline ${was}; no leak)`);
      // RSS: sampled for 6 s; settled = no longer growing (last two samples within 5 % or 8 MiB).
      const samples: number[] = [];
      for (let i = 0; i < 4; i++) {
        samples.push(readRssBytes(pidOf(node)));
        await new Promise((r) => setTimeout(r, 2000));
      }
      const [a, b] = samples.slice(-2) as [number, number];
      t.comment(`${node} RSS baseline ${fmtMiB(base[node]!.rss)}, with all open ${fmtMiB(open[node]!.rss)}, peak ${fmtMiB(peak[node]!)}, after close ${samples.map(fmtMiB).join(' → ')}`);
      t.ok(b - a <= Math.max(0.05 * a, 8 * MiB), `${node}: RSS no longer growing (${fmtMiB(a)} → ${fmtMiB(b)})`);
      t.ok(b <= peak[node]! + 32 * MiB, `${node}: RSS after close not above the peak while open (+32 MiB allowance)`);
    }
    t.ok(mesh.getZtunnel(WORKER).child.exitCode === null && mesh.getZtunnel(WORKER2).child.exitCode === null, 'both ztunnels still running');
  });

  t.test(`2. a reader at ${fmtMiB(SLOW_RATE)}/s of ${fmtMiB(SLOW_BYTES)}: nothing lost, RSS bounded by the windows`, async (t) => {
    // What a ztunnel may hold for this one stream: the receive side of one HTTP/2 stream is
    // bounded by the stream window (4 MiB), all streams of a session by the connection window
    // (16 MiB); each ztunnel has one receiving HTTP/2 side per direction and this stream uses
    // one direction, so at most min(stream, connection) = 4 MiB buffered, plus what Node's
    // stream writer queues towards the socket (highWaterMark, under 1 MiB per side) before
    // backpressure. We allow both windows in full on both directions (2 × 20 MiB = 40 MiB) plus
    // 48 MiB for the JS heap and GC timing. Kernel socket buffers are not in RSS.
    const bound = 2 * (STREAM_WINDOW + CONNECTION_WINDOW) + 48 * MiB;
    const base: Record<string, number> = { [WORKER]: readRssBytes(pidOf(WORKER)), [WORKER2]: readRssBytes(pidOf(WORKER2)) };
    const peak: Record<string, number> = { ...base };
    const sampler = setInterval(() => {
      for (const node of [WORKER, WORKER2]) peak[node] = Math.max(peak[node]!, readRssBytes(pidOf(node)));
    }, 250);
    t.teardown(() => clearInterval(sampler));

    const sock = await connectFrom(sleepNs, PRODUCTPAGE_IP, SOURCE_PORT);
    sock.end(); // the source app sends regardless; our side is done writing
    const h = createHash('sha256');
    let got = 0;
    const t0 = performance.now();
    let budget = 0;
    const tick = 50;
    const refill = setInterval(() => {
      budget += (SLOW_RATE * tick) / 1000;
      if (budget > 0 && sock.isPaused()) sock.resume();
    }, tick);
    const result = await new Promise<{ ok: boolean; how: string }>((resolve) => {
      sock.on('data', (c: Buffer) => {
        h.update(c);
        got += c.length;
        budget -= c.length;
        if (budget <= 0) sock.pause();
      });
      sock.once('end', () => resolve({ ok: true, how: 'end' }));
      sock.once('error', (e) => resolve({ ok: false, how: e.message }));
    });
    clearInterval(refill);
    clearInterval(sampler);
    sock.destroy();
    const secs = (performance.now() - t0) / 1000;
    t.comment(`read ${fmtMiB(got)} in ${secs.toFixed(1)} s (${fmtMiB(got / secs)}/s), ${result.how}`);
    t.ok(result.ok, 'the stream ended cleanly');
    t.same({ sha: h.digest('hex'), bytes: got }, { sha: buildBulkDigest(SLOW_BYTES), bytes: SLOW_BYTES }, 'sha256 and length of what the source sent');
    for (const node of [WORKER, WORKER2]) {
      const grew = peak[node]! - base[node]!;
      t.comment(`${node} RSS before ${fmtMiB(base[node]!)}, peak ${fmtMiB(peak[node]!)} (+${fmtMiB(grew)}), bound +${fmtMiB(bound)}`);
      t.ok(grew <= bound, `${node}: RSS growth ${fmtMiB(grew)} ≤ ${fmtMiB(bound)}`);
    }
  });
}
