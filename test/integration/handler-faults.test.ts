// What every connection path does when something goes wrong inside it: a handler that
// throws still completes its record (one access-log line, counted as failed and as an
// unexpected error), closes both sides and is untracked, and the ztunnel keeps serving;
// a same-node hand-over reports its bytes while open; removing a workload closes its
// connections and drops its certificate.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t, { type Test } from 'tap';
import type { TrackedConnection } from '../../src/proxy/connection-tracker.js';
import { eventually, httpGet, logLines, readAll, readN, sampleValue, socksConnect, startEcho, startZtunnel, twoNodeYaml, type TestZtunnel } from '../helpers/mesh.js';
import { allowUnexpected } from '../helpers/unexpected.js';

const INJECTED = 'injected fault for the handler-faults test';
allowUnexpected(INJECTED);

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zt-faults-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));

const echo = await startEcho('127.0.2.2');
const sameNodeEcho = await startEcho('127.0.1.9');
t.teardown(() => {
  echo.server.close();
  sameNodeEcho.server.close();
});
// A second workload on node-a: A hands connections to it over in process.
const neighbour = `
- name: neighbour
  namespace: default
  serviceAccount: neighbour
  workloadIps: ["127.0.1.9"]
  protocol: HBONE
  node: node-a`;
const yaml = twoNodeYaml({ echoPort: echo.port }).replace('workloads:', `workloads:${neighbour}`);
const fileA = path.join(dir, 'a.yaml');
const fileB = path.join(dir, 'b.yaml');
fs.writeFileSync(fileA, yaml);
fs.writeFileSync(fileB, yaml);

const b = await startZtunnel({ NODE_NAME: 'node-b', LOCAL_XDS_PATH: fileB });
const a = await startZtunnel({ NODE_NAME: 'node-a', LOCAL_XDS_PATH: fileA, ZTUNNEL_HBONE_TARGET_PORT: String(b.ports.inbound) }, undefined, {
  byteFlushIntervalMs: 100,
});
t.teardown(async () => {
  await a.app.stop();
  await b.app.stop();
});

/** Make the next tracker.add() of this ztunnel throw, as a bug deep in a handler would. */
function failNextTrack(z: TestZtunnel): void {
  const tracker = z.app.tracker;
  const original = tracker.add.bind(tracker);
  tracker.add = (c: TrackedConnection) => {
    tracker.add = original;
    throw new Error(INJECTED);
  };
}

async function metric(z: TestZtunnel, name: string, labels: Record<string, string>): Promise<number | undefined> {
  return sampleValue((await httpGet(z.ports.stats, '/metrics')).body, name, labels);
}

/** Resolves with how the client side ended: 'eof', or 'error CODE'. */
function ending(s: import('node:net').Socket): Promise<string> {
  return new Promise((resolve) => {
    s.on('error', (e: NodeJS.ErrnoException) => resolve(`error ${e.code}`));
    s.on('end', () => resolve('eof'));
    s.resume();
  });
}

async function roundTripWorks(t: Test, what: string): Promise<void> {
  const s = await socksConnect(a.ports.socks5 as number, '127.0.1.2', '127.10.0.1', 80);
  s.end(what);
  t.equal((await readAll(s)).toString(), what, `${what}: the ztunnels keep serving`);
}

t.test('a bug in an inbound handler: record completed, connection closed and untracked, counted; the rest keeps serving', async (t) => {
  const before = logLines(b, 'connection complete').length;
  failNextTrack(b);
  const s = await socksConnect(a.ports.socks5 as number, '127.0.1.2', '127.10.0.1', 80);
  s.write('x');
  const end = await Promise.race([ending(s), new Promise<string>((r) => setTimeout(() => r('still open after 5 s'), 5000))]);
  t.match(end, /^(eof|error ECONNRESET)$/, `the client's connection is closed (${end})`);
  const lines = await eventually(() => (logLines(b, 'connection complete').length > before ? logLines(b, 'connection complete') : undefined), 3000, 'inbound record');
  const line = lines?.at(-1) as Record<string, unknown>;
  t.match(String(line.error), /internal error: injected fault/, 'the access-log line carries the error');
  t.equal(line.direction, 'inbound');
  t.equal(b.app.tracker.size, 0, 'nothing left tracked on the inbound side');
  await eventually(() => a.app.tracker.size === 0, 3000, 'outbound side untracked too');
  t.equal(await metric(b, 'ztunnel_ts_unexpected_errors_total', { kind: 'handler' }), 1, 'counted once');
  t.ok(((await metric(b, 'istio_tcp_connections_failed_total', { reporter: 'destination' })) ?? 0) >= 1, 'counted as a failed connection');
  await roundTripWorks(t, 'after an inbound bug');
});

t.test('a bug in an outbound handler: the same on the source side', async (t) => {
  const before = logLines(a, 'connection complete').length;
  failNextTrack(a);
  const s = await socksConnect(a.ports.socks5 as number, '127.0.1.2', '127.10.0.1', 80).catch((e: Error) => e);
  if (!(s instanceof Error)) {
    s.write('x');
    const end = await Promise.race([ending(s), new Promise<string>((r) => setTimeout(() => r('still open after 5 s'), 5000))]);
    t.match(end, /^(eof|error ECONNRESET)$/, `the client's connection is closed (${end})`);
  }
  const lines = await eventually(() => (logLines(a, 'connection complete').length > before ? logLines(a, 'connection complete') : undefined), 3000, 'outbound record');
  const line = lines?.at(-1) as Record<string, unknown>;
  t.match(String(line.error), /internal error: injected fault/);
  t.equal(line.direction, 'outbound');
  t.equal(a.app.tracker.size, 0);
  await eventually(() => b.app.tracker.size === 0, 3000, 'the HBONE stream is closed at the peer too');
  t.equal(await metric(a, 'ztunnel_ts_unexpected_errors_total', { kind: 'handler' }), 1);
  await roundTripWorks(t, 'after an outbound bug');
});

t.test('a same-node connection reports its bytes while open, for both reporters', async (t) => {
  const s = await socksConnect(a.ports.socks5 as number, '127.0.1.2', '127.0.1.9', sameNodeEcho.port);
  t.teardown(() => s.destroy());
  s.write('12345');
  t.equal((await readN(s, 5)).toString(), '12345');
  const labels = { destination_workload: 'neighbour' };
  for (const reporter of ['source', 'destination']) {
    const got = await eventually(
      async () => ((await metric(a, 'istio_tcp_received_bytes_total', { ...labels, reporter })) ?? 0) >= 5,
      3000,
      `${reporter} bytes while open`,
    ).catch(() => false);
    t.ok(got, `reporter=${reporter}: received bytes counted while the connection is open`);
  }
  t.equal(a.app.tracker.size, 1, 'still open');
  s.end();
  await readAll(s);
});

t.test('removing a workload closes its connections and drops its certificate', async (t) => {
  const s = await socksConnect(a.ports.socks5 as number, '127.0.1.2', '127.10.0.1', 80);
  s.write('hi');
  t.equal((await readN(s, 2)).toString(), 'hi');
  const serverId = 'spiffe://cluster.local/ns/default/sa/server';
  const ids = (): string[] => (b.app.configDump() as { certificates: { identity: string }[] }).certificates.map((c) => c.identity);
  t.ok(ids().includes(serverId), 'B holds the server certificate');
  const serverIds = (): string[] => (b.app.configDump() as { hboneServer: { identities: string[] } }).hboneServer.identities;
  t.ok(serverIds().includes(serverId), 'B has an HBONE server identity for it');
  const closed = ending(s);
  // B's node no longer runs `server` (moved to another node).
  fs.writeFileSync(fileB, yaml.replace(/(- name: server[\s\S]*?node: )node-b/, '$1node-z'));
  const end = await Promise.race([closed, new Promise<string>((r) => setTimeout(() => r('still open after 5 s'), 5000))]);
  t.match(end, /^(eof|error ECONNRESET)$/, `the connection to the removed workload is closed (${end})`);
  await eventually(() => b.app.tracker.size === 0, 3000, 'untracked');
  t.notOk(ids().includes(serverId), 'its certificate is dropped (no longer renewed)');
  t.notOk(serverIds().includes(serverId), 'its HBONE server identity is dropped');
  t.ok(logLines(b, 'removed workloads: connections closed, certificates dropped').length >= 1);
  fs.writeFileSync(fileB, yaml);
  await eventually(() => logLines(b, 'local config reloaded').length >= 2, 5000, 'restored');
  await roundTripWorks(t, 'after the workload is back');
});
