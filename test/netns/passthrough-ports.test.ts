// Root-only, end to end: a passthrough connection (mesh pod → pod outside the mesh) is two TCP
// connections with the pod's IP as source — pod → ztunnel (captured) and ztunnel → server
// (spoofed) — whose source ports come from two separate kernels' port spaces (pod netns,
// ztunnel netns) while the node's conntrack sees both. Linux picks connect() ports for one
// (source IP, destination) from a sequence shared by all namespaces, so without care both
// sides can pick the same port at once: one SYN is dropped at the node (conntrack
// insert_failed) and retried after the 1 s RTO (issue 8). The ztunnel netns therefore uses an
// odd-based port range (ZTUNNEL_LOCAL_PORT_RANGE): the pod's ports are even, ztunnel's odd.
// This test runs a few hundred passthrough connections and checks, per connection, the port
// the pod used and the port the server saw: never the same, and of opposite parity.
// The ≥ 1 s tail itself is too rare to assert here (a few per several thousand connections
// on a loaded machine): `node dist/bench/throughput.js --only connect` measures it.
// Must never: touch anything outside the `pp<pid>` namespaces, or leave them behind.

import t from 'tap';
import { findNetnsSkipReason } from '../helpers/netns.js';
import { MeshHarness } from '../../src/demo/mesh-harness.js';
import { DEFAULT_PODS, type PodSpec } from '../../src/demo/topology.js';

const CONNECTIONS = 300;
const HTTP_PORT = 8080;
const PLAIN: PodSpec = { name: 'plain', node: 'ambient-worker2', ip: '10.244.1.10', inMesh: false, serviceAccount: 'plain', app: 'plain' };
const SLEEP = DEFAULT_PODS.find((p) => p.name === 'sleep')!;

// Run inside the sleep pod: CONNECTIONS sequential GETs, one new connection each; prints
// [clientPort, serverSeenClient] pairs as JSON.
const CLIENT = `
import http from 'node:http';
const [host, port, n] = process.argv.slice(1);
const out = [];
for (let i = 0; i < Number(n); i++) {
  out.push(await new Promise((resolve) => {
    let local = 0;
    const req = http.get({ host, port: Number(port), path: '/', agent: false, timeout: 5000 }, (res) => {
      let body = '';
      res.on('data', (c) => (body += c));
      res.on('end', () => resolve([local, JSON.parse(body).client]));
    });
    req.on('socket', (s) => s.on('connect', () => (local = s.localPort)));
    req.on('timeout', () => req.destroy());
    req.on('error', (e) => resolve([local, 'error ' + e.message]));
  }));
}
process.stdout.write(JSON.stringify(out) + '\\n');
`;

const skip = findNetnsSkipReason(['ip', 'ipset', 'iptables-nft-restore', 'sysctl', 'curl']);
if (skip !== undefined) {
  t.plan(0, skip);
} else {
  const mesh = new MeshHarness({
    prefix: `pp${process.pid % 10000}`,
    pods: [SLEEP, PLAIN],
    services: [],
    startApps: false,
  });
  const missing = mesh.findMissingBuild();
  if (missing.length > 0) {
    t.plan(0, `not built (${missing.join(', ')}); run npm run build`);
  } else {
    t.teardown(() => mesh.stop());
    t.test('passthrough: ztunnel never reuses the pod’s source port for the upstream leg', async (t) => {
      await mesh.start();
      await mesh.startApp('plain', 'http', HTTP_PORT, 'plain');
      const r = await mesh.topo.execIn(mesh.topo.podNetns('sleep'), process.execPath, [
        '--input-type=module',
        '-e',
        CLIENT,
        PLAIN.ip,
        String(HTTP_PORT),
        String(CONNECTIONS),
      ]);
      t.equal(r.code, 0, `client ran (${r.stderr.trim()})`);
      const pairs = JSON.parse(r.stdout.trim()) as [number, string][];
      t.equal(pairs.length, CONNECTIONS);
      const bad = pairs.filter(([, seen]) => !seen.startsWith(`${SLEEP.ip}:`));
      t.same(bad.slice(0, 3), [], 'the server saw the pod’s own IP on every connection (the upstream leg is spoofed)');
      const podPorts = pairs.map(([p]) => p);
      const ztPorts = pairs.map(([, seen]) => Number(seen.split(':')[1]));
      t.ok(podPorts.every((p) => p > 0) && ztPorts.every((p) => p > 0), 'both ports known for every connection');
      t.same(pairs.filter(([p], i) => p === ztPorts[i]).length, 0, 'no connection has the same source port on both legs');
      const podParity = new Set(podPorts.map((p) => p % 2));
      const ztParity = new Set(ztPorts.map((p) => p % 2));
      t.same([...podParity], [0], 'the pod’s kernel picked even ports (default range, connect())');
      t.same([...ztParity], [1], 'ztunnel’s upstream ports are all odd: the two port spaces cannot meet');
      const shared = ztPorts.filter((p) => new Set(podPorts).has(p));
      t.same(shared, [], 'no port used by both the pod and ztunnel during the run');
    });
  }
}
