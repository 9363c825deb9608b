// Two in-process ztunnels take everything from a control plane over delta xDS (TLS, bearer
// token, the same protos istiod speaks): they route, tunnel and authorize by what it pushes;
// readiness waits for the first response of each type; a malformed resource is NACKed by name
// while the rest applies; a removed workload stops being routable and its connections close;
// a policy push re-authorizes live connections; a cut stream reconnects with
// initial_resource_versions while open connections keep flowing; a wrong token or an istiod
// certificate from another root is refused with one clear log line and retried. Certificates
// come from the control plane's CA (CSRs, impersonating each workload) with a 30 s lifetime:
// they rotate before expiry without breaking an open connection.
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import t from 'tap';
import { parseLocalConfig } from '../../src/config/local-config.js';
import type { LocalConfig, Workload } from '../../src/config/types.js';
import { CertificateAuthority } from '../../src/identity/ca.js';
import { ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL } from '../../src/xds/protos.js';
import { startTestControlPlane } from '../helpers/control-plane.js';
import { buildMatch, buildPolicy } from '../helpers/fixtures.js';
import { eventually, httpGet, logLines, readAll, sharedCa, socksConnect, startEcho, startZtunnel, twoNodeYaml, type TestZtunnel } from '../helpers/mesh.js';
import { within } from '../helpers/within.js';

const echo = await startEcho('127.0.2.2');
t.teardown(() => echo.server.close());
const mesh: LocalConfig = parseLocalConfig(twoNodeYaml({ echoPort: echo.port }), 'two-node.yaml');
const CERT_TTL_MS = 30_000;
const cp = await startTestControlPlane(sharedCa, { maxCertificateTtlMs: CERT_TTL_MS });
t.teardown(() => cp.close());
cp.cp.setMesh(mesh);

const FAST = { xdsBackoffMs: { initial: 100, max: 500 } };
const xdsEnv = (node: string, extra: Record<string, string> = {}): Record<string, string> => cp.ztunnelEnv(node, { SECRET_TTL: '30s', ...extra });

const b = await startZtunnel(xdsEnv('node-b'), sharedCa, FAST);
const a = await startZtunnel(xdsEnv('node-a', { ZTUNNEL_HBONE_TARGET_PORT: String(b.ports.inbound) }), sharedCa, FAST);
t.teardown(async () => {
  await a.app.stop();
  await b.app.stop();
});

interface CertDump {
  identity: string;
  state: string;
  certChain: { serialNumber: string; expirationTime: string }[];
}
interface XdsDump {
  certificates: CertDump[];
  xds: { connected: boolean; connects: number; types: { typeUrl: string; resources: number; acks: number; nacks: number; lastNack?: { message: string } }[] };
  workloads: Workload[];
}
const dump = (z: TestZtunnel): XdsDump => z.app.configDump() as XdsDump;
const typeState = (z: TestZtunnel, typeUrl: string) => dump(z).xds.types.find((x) => x.typeUrl === typeUrl);
const ready = async (z: TestZtunnel) => (await httpGet(z.ports.readiness, '/healthz/ready')).status;

async function echoThrough(z: TestZtunnel, host: string, port: number, msg: string): Promise<string> {
  const s = await socksConnect(z.ports.socks5 as number, '127.0.1.2', host, port);
  s.end(msg);
  return (await readAll(s)).toString();
}

/** An open connection client → echo through both ztunnels, and a way to check it still flows. */
async function openConnection(z: TestZtunnel): Promise<{ sock: net.Socket; roundTrip(msg: string): Promise<string>; closed: Promise<void> }> {
  const sock = await socksConnect(z.ports.socks5 as number, '127.0.1.2', '127.10.0.1', 80);
  const closed = new Promise<void>((resolve) => sock.once('close', () => resolve()));
  sock.on('error', () => undefined);
  return {
    sock,
    closed,
    roundTrip: (msg) =>
      within(
        5000,
        new Promise<string>((resolve) => {
          let got = '';
          const onData = (d: Buffer): void => {
            got += d.toString();
            if (got.length >= msg.length) {
              sock.off('data', onData);
              resolve(got);
            }
          };
          sock.on('data', onData);
          sock.resume();
          sock.write(msg);
        }),
        'echo on the open connection',
      ),
  };
}

await eventually(async () => (await ready(a)) === 200 && (await ready(b)) === 200, 10_000, 'both ztunnels ready from xDS');

t.test('readiness is 503 until the first response of each type, then 200', async (t) => {
  // A control plane that is not there yet: a port nobody listens on, then a server on it.
  const probe = net.createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', () => r()));
  const port = (probe.address() as net.AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
  const c = await startZtunnel(xdsEnv('node-c', { XDS_ADDRESS: `127.0.0.1:${port}` }), sharedCa, FAST);
  t.teardown(() => c.app.stop());
  const before = await httpGet(c.ports.readiness, '/healthz/ready');
  t.equal(before.status, 503);
  t.match(before.body, /xds: authorization policies, xds: workloads and services/);
  const late = await startTestControlPlane(sharedCa, { port, token: cp.token });
  t.teardown(() => late.close());
  late.cp.setMesh(mesh);
  await eventually(async () => (await ready(c)) === 200, 10_000, 'ready once the control plane answered');
  t.equal(dump(c).workloads.length, mesh.workloads.length);
});

t.test('routes, tunnels and authorizes by what the control plane pushed', async (t) => {
  t.equal(await echoThrough(a, '127.10.0.1', 80, 'via-vip'), 'via-vip');
  t.equal(await echoThrough(a, 'echo.default.svc.cluster.local', 80, 'via-name'), 'via-name');
  const out = logLines(a, 'connection complete').at(-1);
  t.match(out, { 'src.identity': 'spiffe://cluster.local/ns/default/sa/client', 'dst.identity': 'spiffe://cluster.local/ns/default/sa/server' });
  const d = dump(a);
  t.equal(d.xds.connected, true);
  t.equal(d.workloads.length, mesh.workloads.length, 'every workload arrived');
  t.ok((typeState(a, ADDRESS_TYPE_URL)?.acks ?? 0) >= 1, 'Address ACKed');
  t.ok((typeState(a, AUTHORIZATION_TYPE_URL)?.acks ?? 0) >= 1, 'Authorization ACKed');
  const info = cp.cp.streamInfos().find((s) => s.open && s.nodeMetadata['NODE_NAME'] === 'node-a');
  t.ok(info, 'the stream announced node-a in its node metadata');
  t.match(info?.nodeId, /^ztunnel~1\.1\.1\.1~/);
});

t.test('a policy push re-authorizes live connections; removing it allows again', async (t) => {
  const conn = await openConnection(a);
  t.equal(await conn.roundTrip('before'), 'before');
  const deny = buildPolicy([[[buildMatch({ principals: [{ kind: 'Exact', value: 'cluster.local/ns/default/sa/client' }] })]]], {
    name: `deny-client-${process.pid}`,
    namespace: 'default',
    scope: 'Namespace',
    action: 'Deny',
  });
  cp.cp.upsertPolicy(deny);
  await within(5000, conn.closed, 'the open connection closed by the new Deny');
  await eventually(() => logLines(b, 'closed connections denied by the new policies').length > 0, 5000, 'B logs the re-authorization');
  await t.rejects(echoThrough(a, '127.10.0.1', 80, 'denied'), 'a new connection is denied');
  cp.cp.pushResources(AUTHORIZATION_TYPE_URL, [], [`default/${deny.name}`]);
  await eventually(async () => (await echoThrough(a, '127.10.0.1', 80, 'again').catch(() => '')) === 'again', 5000, 'allowed again after the removal');
});

t.test('a malformed resource is NACKed by name; the good ones in the same response apply', async (t) => {
  const nacksBefore = typeState(a, ADDRESS_TYPE_URL)?.nacks ?? 0;
  const extra: Workload = { ...(mesh.workloads.find((w) => w.name === 'client') as Workload), uid: `extra-${process.pid}`, name: 'extra', workloadIps: ['127.0.1.9'] };
  const { workloadBytes } = await import('../../src/control-plane/model-to-wire.js');
  cp.cp.pushResources(ADDRESS_TYPE_URL, [
    { name: 'bad-resource', bytes: Buffer.from([0x0a, 0xff, 0xff]) },
    { name: extra.uid, bytes: workloadBytes(extra) },
  ]);
  await eventually(() => (typeState(a, ADDRESS_TYPE_URL)?.nacks ?? 0) > nacksBefore, 5000, 'A NACKed');
  t.match(typeState(a, ADDRESS_TYPE_URL)?.lastNack?.message, /^bad-resource: /, 'the NACK names the bad resource');
  t.ok(dump(a).workloads.some((w) => w.uid === extra.uid), 'the good resource of the same response was applied');
  await eventually(() => cp.cp.streamInfos().some((s) => s.nacks.some((n) => n.message.startsWith('bad-resource'))), 5000, 'the control plane got the NACK');
  cp.cp.pushResources(ADDRESS_TYPE_URL, [], ['bad-resource', extra.uid]);
  await eventually(() => !dump(a).workloads.some((w) => w.uid === extra.uid), 5000, 'removed again');
});

t.test('a cut stream reconnects with initial_resource_versions; open connections keep flowing', async (t) => {
  const conn = await openConnection(a);
  t.equal(await conn.roundTrip('one'), 'one');
  const connectsBefore = dump(a).xds.connects;
  const streamsBefore = cp.cp.streamInfos().length;
  cp.cp.cutStreams();
  t.equal(await conn.roundTrip('during'), 'during', 'the data path keeps serving on the last good state');
  await eventually(() => dump(a).xds.connects > connectsBefore && dump(a).xds.connected, 10_000, 'A reconnected');
  const again = cp.cp.streamInfos().slice(streamsBefore).find((s) => s.nodeMetadata['NODE_NAME'] === 'node-a');
  t.ok(again, 'a new stream from node-a');
  t.equal(await conn.roundTrip('after'), 'after');
  t.equal(await ready(a), 200, 'still ready');
  // The announced versions equal what A holds: the control plane sends nothing back for them.
  const held = typeState(a, ADDRESS_TYPE_URL)?.resources ?? 0;
  t.ok(held >= mesh.workloads.length, `A holds ${held} Address resources`);
  conn.sock.end();
});

t.test('a removed workload stops being routable and its connections close', async (t) => {
  const conn = await openConnection(a);
  t.equal(await conn.roundTrip('x'), 'x');
  const server = mesh.workloads.find((w) => w.name === 'server') as Workload;
  cp.cp.pushResources(ADDRESS_TYPE_URL, [], [server.uid]);
  await within(5000, conn.closed, 'the connection to the removed workload closed');
  await eventually(() => logLines(b, 'removed workloads: connections closed, certificates dropped').length > 0, 5000, 'B logged the prune');
  await t.rejects(socksConnect(a.ports.socks5 as number, '127.0.1.2', '127.10.0.1', 80), 'the VIP has no endpoint left');
  cp.cp.upsertWorkload(server);
  await eventually(async () => (await echoThrough(a, '127.10.0.1', 80, 'back').catch(() => '')) === 'back', 5000, 'routable again once re-added');
});

t.test('a wrong token is refused with one clear line and retried', async (t) => {
  const wrong = path.join(cp.dir, 'wrong-token');
  fs.writeFileSync(wrong, 'not-the-token');
  const d = await startZtunnel(xdsEnv('node-d', { AUTH_TOKEN: wrong }), sharedCa, FAST);
  t.teardown(() => d.app.stop());
  const refused = cp.cp.refusedStreams;
  await eventually(() => cp.cp.refusedStreams >= refused + 2, 10_000, 'retried');
  const lines = d.logs.filter((l) => l.includes('refused the token'));
  t.ok(lines.length >= 1, 'a line says istiod refused the token');
  t.match(lines[0], /UNAUTHENTICATED/);
  t.equal(await ready(d), 503, 'not ready');
});

t.test('an istiod certificate from another root is refused with one clear line and retried', async (t) => {
  const other = CertificateAuthority.generate({ commonName: 'other root' });
  const otherPath = path.join(cp.dir, 'other-root.pem');
  fs.writeFileSync(otherPath, other.rootCertPem);
  const e = await startZtunnel(xdsEnv('node-e', { XDS_ROOT_CA: otherPath }), sharedCa, FAST);
  t.teardown(() => e.app.stop());
  await eventually(() => e.logs.filter((l) => l.includes('server certificate is not trusted')).length >= 2, 10_000, 'refused twice (retried)');
  t.equal(await ready(e), 503, 'not ready');
});

t.test('the control plane CA signs the CSRs; 30 s certificates rotate before expiry, open connections unharmed', async (t) => {
  const serverId = 'spiffe://cluster.local/ns/default/sa/server';
  const clientId = 'spiffe://cluster.local/ns/default/sa/client';
  t.ok(cp.cp.issued.some((i) => i.identity === serverId && i.impersonated === serverId), 'B asked for the server identity, impersonating it');
  t.ok(cp.cp.issued.some((i) => i.identity === clientId && i.impersonated === clientId), 'A asked for the client identity');
  const certOf = (z: TestZtunnel, id: string): CertDump | undefined => dump(z).certificates.find((c) => c.identity === id);
  await eventually(() => certOf(b, serverId)?.state === 'Available', 5000, 'B holds the server certificate');
  const first = certOf(b, serverId)?.certChain[0];
  const lifetime = Date.parse(first?.expirationTime ?? '') - Date.now();
  t.ok(lifetime > 0 && lifetime <= CERT_TTL_MS + 1000, `the certificate lives at most 30 s (${Math.round(lifetime / 1000)} s left)`);
  const conn = await openConnection(a);
  t.equal(await conn.roundTrip('before-rotation'), 'before-rotation');
  await eventually(() => certOf(b, serverId)?.certChain[0]?.serialNumber !== first?.serialNumber, CERT_TTL_MS, 'the server certificate rotated');
  const rotatedAt = Date.now();
  t.ok(rotatedAt < Date.parse(first?.expirationTime ?? ''), `rotated ${Math.round((Date.parse(first?.expirationTime ?? '') - rotatedAt) / 1000)} s before the old one expired`);
  t.equal(await conn.roundTrip('after-rotation'), 'after-rotation', 'the open connection keeps flowing');
  t.equal(await echoThrough(a, '127.10.0.1', 80, 'new-conn'), 'new-conn', 'new connections work with the new certificate');
  conn.sock.end();
});
