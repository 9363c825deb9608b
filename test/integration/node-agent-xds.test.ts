// `node-agent --xds`: the node agent takes its pods from the control plane's delta xDS stream.
// Nothing is run on the node before the first Address response (an empty mesh at start-up must
// not empty the ipset); then the node's HBONE pods are added, and a workload removed over xDS
// leaves the ipset and table 100. Commands are recorded by a fake runner (no root needed).
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import t from 'tap';
import { parseLocalConfig } from '../../src/config/local-config.js';
import type { Workload } from '../../src/config/types.js';
import { startXdsNodeAgent } from '../../src/node-agent-xds.js';
import type { Command, CommandResult } from '../../src/redirect/plan.js';
import { startTestControlPlane } from '../helpers/control-plane.js';
import { eventually, sharedCa } from '../helpers/mesh.js';

const YAML = `
workloads:
- {name: sleep, namespace: default, workloadIps: ["10.244.2.4"], protocol: HBONE, node: w1}
- {name: notsleep, namespace: default, workloadIps: ["10.244.2.5"], protocol: HBONE, node: w1}
- {name: outsider, namespace: default, workloadIps: ["10.244.2.6"], protocol: TCP, node: w1}
- {name: productpage, namespace: default, workloadIps: ["10.244.1.7"], protocol: HBONE, node: w2}
`;

t.test('no command before the first response; then the pods of the node; removals follow', async (t) => {
  const ipset = new Set<string>(['10.244.2.99']);
  const routes = new Set<string>();
  const cmds: string[] = [];
  const runner = async (c: Command): Promise<CommandResult> => {
    const a = c.args;
    cmds.push([c.file, ...a].join(' '));
    if (c.file === 'ipset' && a[0] === 'save') return { code: 0, stdout: [...ipset].map((ip) => `add ztunnel-pods-ips ${ip}`).join('\n'), stderr: '' };
    if (c.file === 'ip' && a.includes('show')) return { code: 0, stdout: [...routes].map((ip) => `${ip} via 192.168.126.2 dev istioin src 10.244.2.1`).join('\n'), stderr: '' };
    if (c.file === 'ipset' && a[0] === 'add') ipset.add(a[2] as string);
    if (c.file === 'ipset' && a[0] === 'del') ipset.delete(a[2] as string);
    if (c.file === 'ip' && a.includes('replace')) routes.add((a[3] as string).replace('/32', ''));
    if (c.file === 'ip' && a.includes('del')) routes.delete((a[3] as string).replace('/32', ''));
    return { code: 0, stdout: '', stderr: '' };
  };
  // A port nobody listens on yet: the control plane comes up later on it.
  const probe = net.createServer();
  await new Promise<void>((r) => probe.listen(0, '127.0.0.1', () => r()));
  const port = (probe.address() as net.AddressInfo).port;
  await new Promise<void>((r) => probe.close(() => r()));
  const token = `node-agent-${process.pid}`;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'zt-na-'));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.writeFileSync(path.join(dir, 'root.pem'), sharedCa.rootCertPem);
  fs.writeFileSync(path.join(dir, 'token'), token);
  const env = { XDS_ADDRESS: `127.0.0.1:${port}`, XDS_ROOT_CA: path.join(dir, 'root.pem'), AUTH_TOKEN: path.join(dir, 'token') };
  const logs: string[] = [];
  const agent = await startXdsNodeAgent({ env, nodeName: 'w1', podGatewayIp: '10.244.2.1', runner, log: (l, m) => logs.push(`${l} ${m}`), backoffMs: { initial: 100, max: 300 } });
  t.teardown(() => agent.stop());
  await new Promise((r) => setTimeout(r, 1000));
  t.same(cmds, [], 'no command ran while the control plane was unreachable');
  t.same([...ipset], ['10.244.2.99'], 'the ipset is untouched');

  const cp = await startTestControlPlane(sharedCa, { port, token });
  t.teardown(() => cp.close());
  const mesh = parseLocalConfig(YAML, 'mesh.yaml');
  cp.cp.setMesh(mesh);
  t.equal(await agent.firstSync, true, 'first sync ok');
  t.same([...ipset].sort(), ['10.244.2.4', '10.244.2.5'], "the node's HBONE pods, nothing else (TCP pod and other node left out; stale member removed)");
  t.same([...routes].sort(), ['10.244.2.4', '10.244.2.5']);
  t.ok(logs.some((l) => l.includes("Adding pod 'sleep/default'")));

  const notsleep = mesh.workloads.find((w) => w.name === 'notsleep') as Workload;
  cp.cp.setMesh({ ...mesh, workloads: mesh.workloads.filter((w) => w !== notsleep) });
  await eventually(() => !ipset.has('10.244.2.5') && !routes.has('10.244.2.5'), 5000, 'notsleep removed from the ipset and table 100');
  t.ok(ipset.has('10.244.2.4'), 'sleep stays');
});
