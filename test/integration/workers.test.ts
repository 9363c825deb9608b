// ZTUNNEL_WORKER_THREADS=2: two in-process ztunnels whose data paths run on worker threads.
// B's HBONE port (15008) is an SO_REUSEPORT group of its two workers; A opens one HBONE session
// per concurrent connection (POOL_MAX_STREAMS_PER_CONNECTION=1), so the kernel spreads B's sessions across
// them. Shown: both workers carry traffic; /metrics sums the threads' registries; every access-log
// line reaches the main thread's log; a reload, a log-level change and a drain reach every worker;
// certificates are the main thread's; config_dump covers every worker.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type net from 'node:net';
import t from 'tap';
import { eventually, httpGet, logLines, openEchoed, sampleValue, startEcho, startZtunnel, terminateDataPlaneWorker, twoNodeYaml } from '../helpers/mesh.js';
import { allowUnexpected } from '../helpers/unexpected.js';
import { within } from '../helpers/within.js';

const W = 10_000;
const N = 24;

interface WorkerEntry {
  worker: number;
  threadId: number;
  accepted: { outbound: number; inboundPlaintext: number; inbound: number };
  connections: number;
}
interface Dump {
  workers: WorkerEntry[];
  connections: { inbound: unknown[]; outbound: unknown[] };
  certificates: { identity: string; state: string; certChain: { serialNumber: string }[] }[];
  hboneServer: { identities: string[] };
}

const echo = await startEcho('127.0.2.2');
t.teardown(() => echo.server.close());
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zt-workers-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
const fileB = path.join(dir, 'b.yaml');
const denyAll = `policies:
- name: deny-client
  namespace: default
  scope: Namespace
  action: Deny
  rules:
  - - - principals:
        - Exact: cluster.local/ns/default/sa/client`;
fs.writeFileSync(fileB, twoNodeYaml({ echoPort: echo.port }));

const b = await startZtunnel({ NODE_NAME: 'node-b', LOCAL_XDS_PATH: fileB, ZTUNNEL_WORKER_THREADS: '2', CONNECTION_TERMINATION_DEADLINE: '1s' });
const a = await startZtunnel({
  NODE_NAME: 'node-a',
  LOCAL_XDS: twoNodeYaml({ echoPort: echo.port }),
  ZTUNNEL_WORKER_THREADS: '2',
  ZTUNNEL_HBONE_TARGET_PORT: String(b.ports.inbound),
  POOL_MAX_STREAMS_PER_CONNECTION: '1',
});
let bStopped = false;
t.teardown(async () => {
  await a.app.stop();
  if (!bStopped) await b.app.stop();
});

async function dumpOf(z: typeof a): Promise<Dump> {
  const r = await httpGet(z.ports.admin, '/config_dump');
  return JSON.parse(r.body) as Dump;
}

const open = (): Promise<net.Socket> => openEchoed(a, '127.0.1.2', '127.10.0.1', 80, W);

t.test('two worker threads each, the main thread answers admin with both', async (t) => {
  const d = await dumpOf(b);
  t.equal(d.workers.length, 2, 'two data-path workers');
  t.not(d.workers[0]?.threadId, d.workers[1]?.threadId, 'on two threads');
  t.ok(d.workers.every((w) => w.threadId > 0), 'worker threads, not the main thread');
  t.ok((await httpGet(b.ports.readiness, '/healthz/ready')).status === 200, 'ready once both listen');
  t.throws(() => b.app.tracker, /worker threads/, 'no tracker on the main thread');
});

t.test('the kernel spreads HBONE sessions across the workers; metrics and access logs cover both', async (t) => {
  const before = await dumpOf(b);
  const logsBefore = logLines(b, 'connection complete').length;
  // Held open together: one stream per session, so A opens N sessions to B's port.
  const socks: net.Socket[] = [];
  for (let i = 0; i < N; i++) socks.push(await open());
  for (const s of socks) s.end();
  await Promise.all(socks.map((s) => new Promise((r) => s.once('close', r))));
  await eventually(() => logLines(b, 'connection complete').length >= logsBefore + N, W, `${N} access-log lines on B`);
  const after = await dumpOf(b);
  const per = after.workers.map((w, i) => w.accepted.inbound - (before.workers[i]?.accepted.inbound ?? 0));
  t.equal(per.reduce((x, y) => x + y, 0), N, `${N} HBONE sessions accepted in all (${per.join(' + ')})`);
  t.ok(per.every((n) => n > 0), `every worker accepted some (${per.join(', ')})`);
  const metrics = (await httpGet(b.ports.stats, '/metrics')).body;
  const opened = sampleValue(metrics, 'istio_tcp_connections_opened_total', { reporter: 'destination', destination_workload: 'server' });
  t.ok(opened !== undefined && opened >= N, `connections opened summed over both workers: ${opened}`);
  t.equal(sampleValue(metrics, 'istio_build', { component: 'ztunnel' }), 1, 'istio_build once, not per thread');
  t.ok(sampleValue(metrics, 'process_resident_memory_bytes', {}) !== undefined, 'process metrics from the main thread');
  t.equal(metrics.match(/^process_resident_memory_bytes /gm)?.length, 1, 'process metrics once');
});

t.test('the certificates the workers serve are the main thread\'s', async (t) => {
  const d = await dumpOf(b);
  const server = d.certificates.find((c) => c.identity === 'spiffe://cluster.local/ns/default/sa/server');
  t.equal(server?.state, 'Available');
  t.ok(d.hboneServer.identities.includes('spiffe://cluster.local/ns/default/sa/server'), 'both workers served it');
  // Issued once, by the main thread: one issuance log line per identity at most (no per-worker CA).
  t.equal(logLines(b, 'certificate issuance failed').length, 0);
});

t.test('a log-level change on admin reaches every worker', async (t) => {
  t.equal((await httpGet(b.ports.admin, '/logging?level=debug', 'POST')).status, 200);
  const before = logLines(b, 'connection opened').length;
  for (let i = 0; i < 8; i++) {
    const s = await open();
    s.end();
    await new Promise((r) => s.once('close', r));
  }
  await eventually(() => logLines(b, 'connection opened').length >= before + 8, W, 'debug lines from the workers');
  t.equal((await httpGet(b.ports.admin, '/logging?level=info', 'POST')).status, 200);
});

t.test('a reload reaches every worker: live connections on both are re-authorized', async (t) => {
  const socks: net.Socket[] = [];
  for (let i = 0; i < 12; i++) socks.push(await open());
  const d = await dumpOf(b);
  const live = d.workers.map((w) => w.connections);
  t.ok(live.every((n) => n > 0), `live connections on every worker (${live.join(', ')})`);
  const closed = socks.map((s) => new Promise((r) => s.once('close', r)));
  const reloaded = logLines(b, 'local config reloaded').length;
  fs.writeFileSync(fileB, twoNodeYaml({ echoPort: echo.port, extra: denyAll }));
  await eventually(() => logLines(b, 'local config reloaded').length > reloaded, W, 'reload');
  await within(W, Promise.all(closed), 'every live connection closed by the new policy');
  const lines = await eventually(() => {
    const l = logLines(b, 'closed connections denied by the new policies');
    return l.reduce((n, x) => n + Number(x.closed), 0) >= 12 ? l : undefined;
  }, W, 'each worker logged what it closed');
  t.ok((lines?.length ?? 0) >= 2, `${lines?.length ?? 0} workers logged closures`);
  await t.rejects(open(), /SOCKS5 reply/, 'new connections denied too');
  fs.writeFileSync(fileB, twoNodeYaml({ echoPort: echo.port }));
  await eventually(() => logLines(b, 'local config reloaded').length > reloaded + 1, W, 'reload back');
  (await open()).end();
});

t.test('a worker that dies is replaced: the mesh as it is now, the same ports, and it serves again', async (t) => {
  allowUnexpected('data-path worker 1 exited');
  const before = await dumpOf(b);
  const oldThread = before.workers[1]!.threadId;
  await terminateDataPlaneWorker(b.app, 1);
  await eventually(() => logLines(b, 'data-path worker restarted').length > 0, 30_000, 'the restart');
  const line = b.logs.find((l) => l.includes('data-path worker 1 exited'));
  t.ok(line?.includes('unexpected error'), 'the death is logged as an unexpected error');
  const after = await dumpOf(b);
  t.equal(after.workers.length, 2, 'two workers again');
  t.not(after.workers[1]?.threadId, oldThread, 'worker 1 is a new thread');
  t.equal(after.workers[1]?.accepted.inbound, 0, 'with fresh counters');
  // The new thread got the mesh (it must know the server workload to answer) and joined 15008.
  const socks: net.Socket[] = [];
  for (let i = 0; i < N; i++) socks.push(await open());
  for (const s of socks) s.end();
  await Promise.all(socks.map((s) => new Promise((r) => s.once('close', r))));
  const got = (await dumpOf(b)).workers.map((w) => w.accepted.inbound);
  t.ok((got[1] ?? 0) > 0, `the new worker accepted HBONE sessions on the same port (${got.join(', ')})`);
});

t.test('drain reaches every worker: open connections are reset at the deadline, threads end', async (t) => {
  const socks: net.Socket[] = [];
  // As many as A holds sessions, so some land on each of B's workers whatever A's pool picks.
  for (let i = 0; i < N; i++) socks.push(await open());
  const live = (await dumpOf(b)).workers.map((w) => w.connections);
  t.ok(live.every((n) => n > 0), `live connections on every worker (${live.join(', ')})`);
  const closed = socks.map((s) => new Promise((r) => s.once('close', r)));
  const started = Date.now();
  t.equal((await httpGet(b.ports.admin, '/quitquitquit', 'POST')).status, 200);
  await within(W, Promise.all(closed), 'every connection closed by the drain');
  await within(W, b.app.stopped, 'the app stopped');
  bStopped = true;
  t.ok(Date.now() - started >= 900, 'held until the termination deadline (1 s)');
  await eventually(() => logLines(b, 'termination deadline reached; closing remaining connections').length >= 2, W, 'both workers hit the deadline');
});
