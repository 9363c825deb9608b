// Authorization enforced on HBONE inbound by a real ztunnel: Deny / Allow by principal,
// the denial log line with full context, and live connections re-checked (and closed)
// when the policies change on reload.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { eventually, logLines, readAll, readN, socksConnect, startEcho, startZtunnel, twoNodeYaml } from '../helpers/mesh.js';
import { within } from '../helpers/within.js';

// Every awaited socket event is bounded (generously: the machine is shared), so a broken
// enforcement path fails fast and by name, not by tap's 300 s file timeout.
const W = 10_000;

const echo = await startEcho('127.0.2.2');
t.teardown(() => echo.server.close());
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zt-authz-'));
t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
const file = path.join(dir, 'b.yaml');

const client2 = `
- name: client2
  namespace: default
  serviceAccount: client2
  workloadIps: ["127.0.1.4"]
  protocol: HBONE
  node: node-a`;
function yaml(policies: string): string {
  return twoNodeYaml({ echoPort: echo.port, extra: policies ? `policies:\n${policies}` : '' }).replace('workloads:', `workloads:${client2}`);
}
const denyPort = `
- name: deny-echo-port
  namespace: default
  scope: Namespace
  action: Deny
  rules:
  - - - destinationPorts: [${echo.port}]`;
const allowClientOnly = `
- name: allow-client
  namespace: default
  scope: Namespace
  action: Allow
  rules:
  - - - principals:
        - Exact: cluster.local/ns/default/sa/client`;

fs.writeFileSync(file, yaml(''));
const b = await startZtunnel({ NODE_NAME: 'node-b', LOCAL_XDS_PATH: file });
const a = await startZtunnel({ NODE_NAME: 'node-a', LOCAL_XDS: yaml(''), ZTUNNEL_HBONE_TARGET_PORT: String(b.ports.inbound) });
t.teardown(async () => {
  await a.app.stop();
  await b.app.stop();
});

async function setPolicies(p: string): Promise<void> {
  const before = logLines(b, 'local config reloaded').length;
  fs.writeFileSync(file, yaml(p));
  await eventually(() => logLines(b, 'local config reloaded').length > before, 5000, 'reload');
}

async function tryEcho(from: string): Promise<string> {
  const s = await within(W, socksConnect(a.ports.socks5 as number, from, '127.10.0.1', 80), `the SOCKS5 connect from ${from}`);
  s.end('ping');
  return (await within(W, readAll(s), `the echo answer (and close) for ${from}`)).toString();
}

t.test('a namespace Deny on the port refuses, and the log names the policy with full context', async (t) => {
  await setPolicies(denyPort);
  const before = echo.peers.length;
  await t.rejects(tryEcho('127.0.1.2'), { message: /^SOCKS5 reply \d+$/ }, 'refused by a SOCKS5 error reply (not a timeout)');
  t.equal(echo.peers.length, before, 'the app never got a connection');
  const line = await eventually(() => logLines(b, 'connection complete').find((l) => l.policy === 'default/deny-echo-port'), 3000, 'denial line');
  t.match(line, {
    level: 'error',
    direction: 'inbound',
    error: /policy rejection: explicitly denied by: default\/deny-echo-port/,
    'src.addr': /^127\.0\.1\.2:/,
    'src.workload': 'client',
    'src.identity': 'spiffe://cluster.local/ns/default/sa/client',
    'dst.workload': 'server',
    'dst.identity': 'spiffe://cluster.local/ns/default/sa/server',
  });
});

t.test('an Allow for one principal admits it and refuses the others', async (t) => {
  await setPolicies(allowClientOnly);
  t.equal(await tryEcho('127.0.1.2'), 'ping');
  await t.rejects(tryEcho('127.0.1.4'), { message: /^SOCKS5 reply \d+$/ }, 'refused by a SOCKS5 error reply (not a timeout)');
  const line = await eventually(() => logLines(b, 'connection complete').find((l) => l['src.workload'] === 'client2'), 3000, 'client2 denial');
  t.match(line?.error, /allow policies exist, but none allowed/);
});

t.test('a policy change closes live connections that are now denied', async (t) => {
  await setPolicies('');
  const s = await within(W, socksConnect(a.ports.socks5 as number, '127.0.1.2', '127.10.0.1', 80), 'the SOCKS5 connect');
  s.write('one');
  t.equal((await within(W, readN(s, 3), "the echo of 'one'")).toString(), 'one');
  const closed = new Promise<number>((resolve) => s.once('close', () => resolve(Date.now())));
  s.on('error', () => undefined);
  const changedAt = Date.now();
  await setPolicies(denyPort);
  const at = await within(W, closed, 'the live connection to be closed after the policy change');
  t.ok(at - changedAt < 3000, `closed ${at - changedAt} ms after the change`);
  const line = await eventually(() => logLines(b, 'connection complete').find((l) => /policy change/.test(String(l.error))), 3000, 'policy-change line');
  t.match(line, { 'src.identity': 'spiffe://cluster.local/ns/default/sa/client', 'dst.workload': 'server' });
  // Others not denied keep going: an allow-all world again works.
  await setPolicies('');
  t.equal(await tryEcho('127.0.1.2'), 'ping');
});

t.test('attaching a WorkloadSelector policy to the workload also re-checks live connections', async (t) => {
  const selectorDeny = `
- name: deny-sel
  namespace: default
  scope: WorkloadSelector
  action: Deny
  rules:
  - - - principals:
        - Exact: cluster.local/ns/default/sa/client`;
  await setPolicies(selectorDeny);
  t.equal(await tryEcho('127.0.1.2'), 'ping', 'not attached to any workload: no effect');
  const s = await within(W, socksConnect(a.ports.socks5 as number, '127.0.1.2', '127.10.0.1', 80), 'the SOCKS5 connect');
  s.write('one');
  t.equal((await within(W, readN(s, 3), "the echo of 'one'")).toString(), 'one');
  s.on('error', () => undefined);
  const closed = new Promise<void>((resolve) => s.once('close', () => resolve()));
  // Same policies; only the server workload now lists the policy.
  const attached = yaml(selectorDeny).replace(
    /(serviceAccount: server\n  workloadIps: \["127\.0\.2\.2"\]\n)/,
    '$1  authorizationPolicies: ["default/deny-sel"]\n',
  );
  t.not(attached, yaml(selectorDeny), 'the edit applied');
  const before = logLines(b, 'local config reloaded').length;
  fs.writeFileSync(file, attached);
  await eventually(() => logLines(b, 'local config reloaded').length > before, 5000, 'reload');
  await within(W, closed, 'the live connection to be closed after the policy was attached');
  t.pass('the live connection was closed');
  await setPolicies('');
});
