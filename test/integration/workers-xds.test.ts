// Worker threads fed by delta xDS: B runs 2 data-path workers and takes workloads, services,
// policies and certificates from a control plane (its CA, impersonated identities). A worker
// thread killed from outside is replaced by one that starts from the MeshStore's snapshot
// (as deltas) and then follows every later push: shown by a policy pushed after the restart
// closing live connections on both workers, the new one included.
import type net from 'node:net';
import t from 'tap';
import { parseLocalConfig } from '../../src/config/local-config.js';
import type { LocalConfig } from '../../src/config/types.js';
import { AUTHORIZATION_TYPE_URL } from '../../src/xds/protos.js';
import { startTestControlPlane } from '../helpers/control-plane.js';
import { buildMatch, buildPolicy } from '../helpers/fixtures.js';
import { eventually, httpGet, logLines, openEchoed, sharedCa, startEcho, startZtunnel, terminateDataPlaneWorker, twoNodeYaml } from '../helpers/mesh.js';
import { allowUnexpected } from '../helpers/unexpected.js';
import { within } from '../helpers/within.js';

const W = 10_000;
const N = 24;

const echo = await startEcho('127.0.2.2');
t.teardown(() => echo.server.close());
const mesh: LocalConfig = parseLocalConfig(twoNodeYaml({ echoPort: echo.port }), 'two-node.yaml');
const cp = await startTestControlPlane(sharedCa);
t.teardown(() => cp.close());
cp.cp.setMesh(mesh);

const FAST = { xdsBackoffMs: { initial: 100, max: 500 } };
const b = await startZtunnel(cp.ztunnelEnv('node-b', { ZTUNNEL_WORKER_THREADS: '2' }), sharedCa, FAST);
const a = await startZtunnel(cp.ztunnelEnv('node-a', { ZTUNNEL_HBONE_TARGET_PORT: String(b.ports.inbound), POOL_MAX_STREAMS_PER_CONNECTION: '1' }), sharedCa, FAST);
t.teardown(async () => {
  await a.app.stop();
  await b.app.stop();
});

interface Dump {
  workers: { threadId: number; accepted: { inbound: number }; connections: number }[];
  certificates: { identity: string; state: string }[];
}
const dumpOf = async (): Promise<Dump> => JSON.parse((await httpGet(b.ports.admin, '/config_dump')).body) as Dump;

const open = (): Promise<net.Socket> => openEchoed(a, '127.0.1.2', '127.10.0.1', 80, W);

async function openMany(n: number): Promise<net.Socket[]> {
  const socks: net.Socket[] = [];
  for (let i = 0; i < n; i++) socks.push(await open());
  return socks;
}

t.test('the workers serve what the control plane pushed, with its certificates', async (t) => {
  await eventually(async () => (await httpGet(b.ports.readiness, '/healthz/ready')).status === 200, W, 'B ready');
  const socks = await openMany(N);
  const d = await dumpOf();
  t.equal(d.workers.length, 2);
  t.ok(d.workers.every((w) => w.connections > 0), `connections on both workers (${d.workers.map((w) => w.connections).join(', ')})`);
  t.equal(d.certificates.find((c) => c.identity === 'spiffe://cluster.local/ns/default/sa/server')?.state, 'Available', "the server's certificate from the control plane's CA");
  for (const s of socks) s.destroy();
});

t.test('a killed worker is replaced from the snapshot and follows later pushes', async (t) => {
  allowUnexpected('data-path worker 1 exited');
  const oldThread = (await dumpOf()).workers[1]?.threadId;
  await terminateDataPlaneWorker(b.app, 1);
  await eventually(() => logLines(b, 'data-path worker restarted').length > 0, 30_000, 'the restart');
  t.not((await dumpOf()).workers[1]?.threadId, oldThread, 'a new thread');

  // The new thread knows the mesh (from the snapshot): it accepts and delivers.
  const socks = await openMany(N);
  const d = await dumpOf();
  t.ok((d.workers[1]?.connections ?? 0) > 0, `the new worker holds connections (${d.workers.map((w) => w.connections).join(', ')})`);

  // A push after the restart reaches it: a Deny closes the live connections on both workers.
  const closed = socks.map((s) => new Promise((r) => s.once('close', r)));
  const deny = buildPolicy([[[buildMatch({ principals: [{ kind: 'Exact', value: 'cluster.local/ns/default/sa/client' }] })]]], {
    name: `deny-client-${process.pid}`,
    namespace: 'default',
    scope: 'Namespace',
    action: 'Deny',
  });
  cp.cp.upsertPolicy(deny);
  await within(W, Promise.all(closed), 'every live connection closed by the pushed Deny');
  await t.rejects(open(), /SOCKS5 reply/, 'new connections denied');
  cp.cp.pushResources(AUTHORIZATION_TYPE_URL, [], [`default/${deny.name}`]);
  await eventually(async () => (await open().then((s) => (s.destroy(), true), () => false)), W, 'allowed again after the removal');
});
