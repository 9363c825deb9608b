// Root-only, end to end on the kernel capture path (MeshHarness: two nodes, node agents, one
// ztunnel-ts per node): what a client in the sleep pod sees when the path to productpage
// breaks. (1) Partition: the node-to-node link of ambient-worker2 is cut during a transfer
// through an HBONE session; the open connection ends within the keepalive bound, new
// connections during the partition fail well before CONNECT_TIMEOUT instead of queuing on
// the dead session, and once the link is back new connections succeed with no restart.
// (2) Peer death: kill -9 of ztunnel 2; the client sees a reset within a second, and the
// first new connection after ztunnel 2 is back (started as a new process) succeeds.
// Every figure (time to end, to fail, to recover) is printed as a test comment.
// Must never: touch anything outside the `zf<pid>` namespaces, or leave them behind (the
// harness is stopped in teardown, the Topology also cleans up on exit and signals; the link
// is set up again in teardown too).

import t from 'tap';
import { spawnSync } from 'node:child_process';
import type net from 'node:net';
import { prepareMeshSuite } from '../helpers/mesh-suite.js';
import { connectFrom, tryEcho, type EchoOutcome } from '../helpers/netns-client.js';
import { findLogRecords, waitUntil } from '../../src/demo/mesh-harness.js';

const WORKER = 'ambient-worker';
const WORKER2 = 'ambient-worker2';
const WORKER2_NODE_IP = '172.18.0.3';
const PRODUCTPAGE_IP = '10.244.1.7';
const ECHO_PORT = 9093;
/** CONNECT_TIMEOUT of both ztunnels; "fail fast" means well under it. */
const CONNECT_TIMEOUT_MS = 10_000;
/** Upstream's HTTP/2 keepalive: PING every 10 s, dead after 20 s without the reply; a tick of slack. */
const KEEPALIVE_BOUND_MS = 10_000 + 20_000 + 10_000;

/**
 * "Fail fast" (src/tunnel/hbone-pool.ts): the first new connection after the peer went
 * silent finds out within probeAfter (1 s) + probe timeout (2 s) + trial grace (3 s) = 6 s,
 * plus slack for this shared machine; the ones after it fail at once (backoff window).
 */
const FIRST_FAIL_BOUND_MS = 8_000;
const LATER_FAIL_BOUND_MS = 3_500;

const mesh = prepareMeshSuite(t, 'zf', { ztunnelEnv: { CONNECT_TIMEOUT: `${CONNECT_TIMEOUT_MS}ms` } });

/** A connection that keeps a little data flowing both ways and notes when and how it ends. */
interface Transfer {
  sock: net.Socket;
  echoedBytes: () => number;
  ended: Promise<{ at: number; how: string }>;
  stop: () => void;
}

function startTransfer(sock: net.Socket): Transfer {
  let echoed = 0;
  const chunk = Buffer.alloc(1024, 0x61);
  const timer = setInterval(() => {
    if (!sock.destroyed && sock.writable) sock.write(chunk);
  }, 100);
  const ended = new Promise<{ at: number; how: string }>((resolve) => {
    const end = (how: string): void => {
      clearInterval(timer);
      resolve({ at: performance.now(), how });
    };
    sock.on('data', (c: Buffer) => void (echoed += c.length));
    sock.once('error', (e: NodeJS.ErrnoException) => end(e.code === 'ECONNRESET' ? 'reset' : (e.code ?? e.message)));
    sock.once('end', () => end('closed (FIN)'));
    sock.once('close', () => end('closed'));
  });
  return { sock, echoedBytes: () => echoed, ended, stop: () => (clearInterval(timer), sock.destroy()) };
}

if (mesh) {
  const topo = mesh.topo;
  const sleepNs = topo.podNetns('sleep');
  // The bridge port of ambient-worker2's node in the root netns (see Topology.create).
  const worker2Link = `${topo.prefix}n${WORKER2_NODE_IP.split('.')[3]}`;
  const setLink = (state: 'up' | 'down'): void => {
    const r = spawnSync('ip', ['-n', topo.rootNetns, 'link', 'set', worker2Link, state], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`ip link set ${worker2Link} ${state}: ${r.stderr}`);
  };
  const echo = (timeoutMs: number): Promise<EchoOutcome> => tryEcho(sleepNs, PRODUCTPAGE_IP, ECHO_PORT, timeoutMs);
  /** The error of ztunnel 1's latest failed connection (its access log), for the comments. */
  const lastError = (): string => {
    const failed = findLogRecords(mesh.getZtunnel(WORKER).out, 'connection complete').filter((r) => r.error !== undefined);
    return String(failed.at(-1)?.error ?? 'none logged');
  };

  t.teardown(async () => {
    try {
      setLink('up');
    } catch {
      // topology already gone
    }
    await mesh.stop();
  });

  t.before(async () => {
    try {
      await mesh.start();
      await mesh.startApp('productpage', 'echo', ECHO_PORT);
    } catch (err) {
      for (const [node, z] of mesh.ztunnels) t.comment(`ztunnel ${node}: ${z.out.slice(-10).join('\n')}\n${z.stderr()}`);
      throw err;
    }
  });

  t.test('1. partition of the node-to-node link during a transfer', async (t) => {
    const warm = await echo(5000);
    t.ok(warm.ok, `before the partition an echo goes through (${warm.how}, ${warm.ms} ms)`);

    const transfer = startTransfer(await connectFrom(sleepNs, PRODUCTPAGE_IP, ECHO_PORT));
    t.teardown(() => transfer.stop());
    t.ok(await waitUntil(() => transfer.echoedBytes() >= 4096, 5000, 50), 'the transfer is flowing');

    const cutAt = performance.now();
    setLink('down');
    t.comment(`link ${worker2Link} down`);

    // A new connection right after the cut, while the open session still looks alive.
    const early = await echo(CONNECT_TIMEOUT_MS + 10_000);
    t.comment(`new connection 0 s into the partition: ${early.how} after ${early.ms} ms; ztunnel 1: ${lastError()}`);
    t.notOk(early.ok, 'no echo across the partition');
    t.ok(early.ms <= CONNECT_TIMEOUT_MS + 3000, `fails by CONNECT_TIMEOUT, does not hang (${early.ms} ms)`);
    t.ok(early.ms < FIRST_FAIL_BOUND_MS, `fails fast: ${early.ms} ms < ${FIRST_FAIL_BOUND_MS} ms (CONNECT_TIMEOUT ${CONNECT_TIMEOUT_MS} ms)`);

    const end = await Promise.race([transfer.ended, new Promise<undefined>((r) => setTimeout(r, KEEPALIVE_BOUND_MS + 5000))]);
    const endMs = end === undefined ? undefined : Math.round(end.at - cutAt);
    t.comment(`open connection: ${end === undefined ? 'still open' : `${end.how} ${endMs} ms after the cut`} (echoed ${transfer.echoedBytes()} bytes in all)`);
    t.ok(endMs !== undefined && endMs <= KEEPALIVE_BOUND_MS, `the open connection ends within ${KEEPALIVE_BOUND_MS} ms of the cut (${endMs} ms)`);

    // Once the dead session is known, a new connection must not wait for CONNECT_TIMEOUT either.
    const late = await echo(CONNECT_TIMEOUT_MS + 10_000);
    t.comment(`new connection after the open one ended: ${late.how} after ${late.ms} ms; ztunnel 1: ${lastError()}`);
    t.notOk(late.ok, 'still no echo across the partition');
    t.ok(late.ms <= CONNECT_TIMEOUT_MS + 3000, `fails by CONNECT_TIMEOUT, does not hang (${late.ms} ms)`);
    t.ok(late.ms < LATER_FAIL_BOUND_MS, `fails fast: ${late.ms} ms < ${LATER_FAIL_BOUND_MS} ms (a trial at most)`);

    const pids = [...mesh.ztunnels.values()].map((z) => z.child.pid);
    const healAt = performance.now();
    setLink('up');
    let attempts = 0;
    let first: EchoOutcome | undefined;
    await waitUntil(async () => {
      attempts += 1;
      const r = await echo(3000);
      if (r.ok) first = r;
      return r.ok;
    }, 30_000, 200);
    const recoverMs = Math.round(performance.now() - healAt);
    t.comment(`after healing: first success ${recoverMs} ms after link up, attempt ${attempts}`);
    t.ok(first?.ok, `a new connection succeeds after healing (${recoverMs} ms, ${attempts} attempts)`);
    t.ok(recoverMs < 15_000, `recovery within 15 s of the link coming back (${recoverMs} ms)`);
    t.same([...mesh.ztunnels.values()].map((z) => z.child.pid), pids, 'no ztunnel restarted');
    t.ok([...mesh.ztunnels.values()].every((z) => z.child.exitCode === null), 'both ztunnels still running');
  });

  t.test('2. kill -9 of the peer ztunnel, then the peer comes back', async (t) => {
    const warm = await echo(5000);
    t.ok(warm.ok, `an echo goes through first (${warm.how}, ${warm.ms} ms)`);
    const transfer = startTransfer(await connectFrom(sleepNs, PRODUCTPAGE_IP, ECHO_PORT));
    t.teardown(() => transfer.stop());
    t.ok(await waitUntil(() => transfer.echoedBytes() >= 4096, 5000, 50), 'the transfer is flowing');

    const z2 = mesh.getZtunnel(WORKER2).child;
    const exited = new Promise<void>((r) => z2.once('exit', () => r()));
    const killAt = performance.now();
    z2.kill('SIGKILL');
    const end = await Promise.race([transfer.ended, new Promise<undefined>((r) => setTimeout(r, 5000))]);
    const endMs = end === undefined ? undefined : Math.round(end.at - killAt);
    t.comment(`client after kill -9 of ztunnel 2: ${end === undefined ? 'still open after 5 s' : `${end.how} after ${endMs} ms`}`);
    t.equal(end?.how, 'reset', 'the client sees a reset (ECONNRESET), not a clean end');
    t.ok(endMs !== undefined && endMs < 1000, `within a second (${endMs} ms)`);
    await exited;

    const during = await echo(CONNECT_TIMEOUT_MS + 5000);
    t.comment(`new connection while ztunnel 2 is down: ${during.how} after ${during.ms} ms; ztunnel 1: ${lastError()}`);
    t.notOk(during.ok, 'no echo while the peer is dead');
    t.ok(during.ms <= CONNECT_TIMEOUT_MS + 3000, `fails by CONNECT_TIMEOUT, does not hang (${during.ms} ms)`);
    // The peer's netns still TPROXYs 15008 to a port nobody listens on: the SYN is dropped,
    // never refused. The reset of the lost session made the peer suspect: a trial at most.
    t.ok(during.ms < LATER_FAIL_BOUND_MS, `fails fast (${during.ms} ms < ${LATER_FAIL_BOUND_MS} ms)`);

    const startAt = performance.now();
    const z = await mesh.restartZtunnel(WORKER2);
    const readyMs = Math.round(performance.now() - startAt);
    t.not(z.child.pid, z2.pid, 'a new ztunnel 2 process');
    const first = await echo(5000);
    t.comment(`ztunnel 2 ready ${readyMs} ms after start; first new connection: ${first.how} in ${first.ms} ms`);
    t.ok(first.ok, 'the first new connection after the peer is ready succeeds');
  });
}
