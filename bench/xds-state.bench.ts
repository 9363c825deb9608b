// Benchmark of the incremental mesh state (src/state/mesh-store.ts) under the delta xDS load of
// issue 9: a first response of 10,000 workloads + 2,000 services (each workload an endpoint of
// one service, 3 ports), then 10,000 single-resource updates (a workload changing IP or
// health). Resources are protobuf-encoded istio.workload.Address messages (encoding is done up
// front, outside every timing); each figure is given for the state alone (MeshStore) and for
// decode + map (src/xds/address-to-model.ts) + state, the work one xDS response costs. For
// comparison, one ProxyState rebuild of the same mesh (what every change costs today).
// Then the event loop under load: a loopback TCP echo (1 KiB ping-pong, the stand-in for proxied
// traffic on the same loop) for a few seconds alone, then with 100 updates per second (decode +
// map + apply of one Address each, every 10 ms, one in ten a health flip in a 5,000-endpoint
// service), event-loop delay p99 measured by perf_hooks.monitorEventLoopDelay in both phases.
// Timings are wall clock; the first response is also given in CPU time (process.cpuUsage),
// which the other processes of a shared machine disturb less.
// Run: npm run bench:xds   (about 20 s). Prints a markdown table; no disk, loopback only.

import net from 'node:net';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import v8 from 'node:v8';
import vm from 'node:vm';
import { addressBytesToModel } from '../src/xds/address-to-model.js';
import { AddressCodec } from '../src/xds/protos.js';
import type { WireInit } from '../src/xds/wire-types.js';
import type { WireAddress } from '../src/xds/wire-types.js';
import { MeshStore, type MeshAddress, type MeshUpsert } from '../src/state/mesh-store.js';
import { ProxyState } from '../src/state/proxy-state.js';

const WORKLOADS = 10_000;
const SERVICES = 2_000;
const UPDATES = 10_000;
const NAMESPACES = 50;
const PORTS = [
  { service_port: 80, target_port: 8080 },
  { service_port: 443, target_port: 8443 },
  { service_port: 9090, target_port: 9090 },
];

function getGc(): () => void {
  const exposed = (globalThis as { gc?: () => void }).gc;
  if (exposed !== undefined) return exposed;
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
}

const ip4 = (a: number, b: number, c: number, d: number): Buffer => Buffer.from([a, b, c, d]);
const podIp = (i: number, gen: number): Buffer => ip4(10, 128 + (gen % 64), (i >> 8) & 255, i & 255);
const svcKey = (j: number): string => `ns-${j % NAMESPACES}/svc-${j}.ns-${j % NAMESPACES}.svc.cluster.local`;

function workloadBytes(i: number, gen: number, healthy: boolean): Uint8Array {
  const ns = `ns-${i % NAMESPACES}`;
  const init: WireInit<WireAddress> = {
    workload: {
      uid: `Kubernetes//Pod/${ns}/pod-${i}`,
      name: `pod-${i}`,
      namespace: ns,
      addresses: [podIp(i, gen)],
      network: '',
      tunnel_protocol: 'HBONE',
      trust_domain: 'cluster.local',
      service_account: `sa-${i % 500}`,
      node: `node-${i % 100}`,
      canonical_name: `app-${i % SERVICES}`,
      canonical_revision: 'v1',
      workload_type: 'POD',
      workload_name: `app-${i % SERVICES}`,
      services: { [svcKey(i % SERVICES)]: { ports: PORTS } },
      status: healthy ? 'HEALTHY' : 'UNHEALTHY',
      cluster_id: 'Kubernetes',
      locality: { region: 'r1', zone: `z${i % 3}`, subzone: '' },
    },
  };
  return AddressCodec.encode(init);
}

function serviceBytes(j: number): Uint8Array {
  const ns = `ns-${j % NAMESPACES}`;
  const init: WireInit<WireAddress> = {
    service: {
      name: `svc-${j}`,
      namespace: ns,
      hostname: `svc-${j}.${ns}.svc.cluster.local`,
      addresses: [{ network: '', address: ip4(10, 96, (j >> 8) & 255, j & 255) }],
      ports: PORTS,
      subject_alt_names: [],
    },
  };
  return AddressCodec.encode(init);
}

interface Resource {
  name: string;
  bytes: Uint8Array;
}

function decode(r: Resource): MeshUpsert<MeshAddress> {
  const m = addressBytesToModel(r.name, r.bytes);
  if (!m.ok) throw new Error(`bench resource ${r.name} refused: ${m.error.field}: ${m.error.reason}`);
  return { name: r.name, model: m.value };
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

const fmtMs = (ms: number): string => (ms >= 10 ? ms.toFixed(0) : ms >= 1 ? ms.toFixed(1) : ms.toFixed(3));
const fmtUs = (ms: number): string => `${(ms * 1000).toFixed(1)} µs`;
const mb = (bytes: number): string => `${(bytes / 1024 / 1024).toFixed(1)} MB`;

const cpuMs = (u: NodeJS.CpuUsage): number => (u.user + u.system) / 1000;
const LOOP_PHASE_MS = 4000;

interface LoopFigures {
  p99Ms: number;
  maxMs: number;
  roundTrips: number;
  ticks: number;
}

/**
 * Runs a 1 KiB ping-pong over a loopback TCP echo for `ms`, calling `tick` every 10 ms if given,
 * and reports the event-loop delay (monitorEventLoopDelay, 1 ms sampling) over that time.
 */
async function loopUnderTraffic(ms: number, tick: (() => void) | undefined): Promise<LoopFigures> {
  const server = net.createServer((sock) => {
    sock.on('error', () => sock.destroy()); // the client resets it at the end
    sock.pipe(sock);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  const client = net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => client.once('connect', resolve).once('error', reject));
  const payload = Buffer.alloc(1024, 7);
  let roundTrips = 0;
  let pending = 0;
  let running = true;
  client.on('data', (d: Buffer) => {
    pending -= d.length;
    if (pending <= 0 && running) {
      roundTrips++;
      pending = payload.length;
      client.write(payload);
    }
  });
  const h = monitorEventLoopDelay({ resolution: 1 });
  h.enable();
  pending = payload.length;
  client.write(payload);
  let ticks = 0;
  const timer = tick
    ? setInterval(() => {
        tick();
        ticks++;
      }, 10)
    : undefined;
  await new Promise((resolve) => setTimeout(resolve, ms));
  running = false;
  if (timer) clearInterval(timer);
  h.disable();
  client.destroy();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return { p99Ms: h.percentile(99) / 1e6, maxMs: h.max / 1e6, roundTrips, ticks };
}

async function main(): Promise<void> {
  const gc = getGc();
  // ---- encode (not timed)
  const first: Resource[] = [];
  for (let i = 0; i < WORKLOADS; i++) first.push({ name: `Kubernetes//Pod/ns-${i % NAMESPACES}/pod-${i}`, bytes: workloadBytes(i, 0, true) });
  for (let j = 0; j < SERVICES; j++) first.push({ name: svcKey(j), bytes: serviceBytes(j) });
  // xDS gives no order guarantee: shuffle (seeded) so services often arrive after their workloads.
  let seed = 42;
  const rnd = (): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) / 0x7fffffff);
  for (let i = first.length - 1; i > 0; i--) {
    const k = Math.floor(rnd() * (i + 1));
    [first[i], first[k]] = [first[k] as Resource, first[i] as Resource];
  }
  const updates: Resource[] = [];
  for (let u = 0; u < UPDATES; u++) {
    const i = Math.floor(rnd() * WORKLOADS);
    // Even updates move the workload to a new IP, odd ones flip its health.
    const ipChange = u % 2 === 0;
    updates.push({ name: `Kubernetes//Pod/ns-${i % NAMESPACES}/pod-${i}`, bytes: workloadBytes(i, ipChange ? 1 + u : 0, ipChange ? true : u % 4 === 1 ? false : true) });
  }

  // ---- first response
  gc();
  const rss0 = process.memoryUsage().rss;
  const heap0 = process.memoryUsage().heapUsed;
  let t0 = performance.now();
  let cpu0 = process.cpuUsage();
  const firstUpserts = first.map(decode);
  const decodeFirstMs = performance.now() - t0;
  const decodeFirstCpuMs = cpuMs(process.cpuUsage(cpu0));
  const store = new MeshStore();
  gc(); // the decode's garbage is not the state's cost
  t0 = performance.now();
  cpu0 = process.cpuUsage();
  store.applyAddresses(firstUpserts, []);
  const applyFirstMs = performance.now() - t0;
  const applyFirstCpuMs = cpuMs(process.cpuUsage(cpu0));
  if (store.size.workloads !== WORKLOADS || store.size.services !== SERVICES) throw new Error(`store holds ${JSON.stringify(store.size)}`);
  const endpoints = [...store.servicesByKey.values()].reduce((n, s) => n + s.endpoints.size, 0);
  if (endpoints !== WORKLOADS) throw new Error(`joined ${endpoints} endpoints, expected ${WORKLOADS}`);
  firstUpserts.length = 0;
  gc();
  const rss1 = process.memoryUsage().rss;
  const heap1 = process.memoryUsage().heapUsed;

  // ---- today's path for comparison: one ProxyState rebuild of the same mesh
  const cfg = store.config;
  const rebuilds: number[] = [];
  for (let k = 0; k < 5; k++) {
    t0 = performance.now();
    new ProxyState(cfg);
    rebuilds.push(performance.now() - t0);
  }
  rebuilds.sort((a, b) => a - b);

  // ---- single updates
  const applyOnly: number[] = [];
  const endToEnd: number[] = [];
  for (const r of updates) {
    const a = performance.now();
    const up = decode(r);
    const b = performance.now();
    store.applyAddresses([up], []);
    const c = performance.now();
    applyOnly.push(c - b);
    endToEnd.push(c - a);
  }
  applyOnly.sort((x, y) => x - y);
  endToEnd.sort((x, y) => x - y);
  // Sanity: the last update of some workload is what the index answers.
  const last = decode(updates[updates.length - 1] as Resource).model;
  if (last.kind !== 'workload' || store.workloadsByUid.get(last.workload.uid)?.workloadIps[0] !== last.workload.workloadIps[0]) {
    throw new Error('the last update is not visible in the store');
  }

  // ---- the copy-on-write worst case: health flips of endpoints of one very large service
  const big = new MeshStore();
  const BIG = 5_000;
  const bigUpserts: MeshUpsert<MeshAddress>[] = [decode({ name: svcKey(0), bytes: serviceBytes(0) })];
  for (let k = 0; k < BIG; k++) bigUpserts.push(decode({ name: `Kubernetes//Pod/ns-0/pod-${k * SERVICES}`, bytes: workloadBytes(k * SERVICES, 0, true) }));
  big.applyAddresses(bigUpserts, []);
  const flips: MeshUpsert<MeshAddress>[] = [];
  for (let u = 0; u < 1000; u++) {
    const k = Math.floor(rnd() * BIG) * SERVICES;
    flips.push(decode({ name: `Kubernetes//Pod/ns-0/pod-${k}`, bytes: workloadBytes(k, 0, u % 2 === 0 ? false : true) }));
  }
  const bigTimes: number[] = [];
  for (const f of flips) {
    const a = performance.now();
    big.applyAddresses([f], []);
    bigTimes.push(performance.now() - a);
  }
  bigTimes.sort((x, y) => x - y);

  // ---- event-loop delay: loopback echo traffic alone, then with 100 updates/s
  const bigFlips: Resource[] = [];
  for (let u = 0; u < 1000; u++) {
    const k = Math.floor(rnd() * BIG) * SERVICES;
    bigFlips.push({ name: `Kubernetes//Pod/ns-0/pod-${k}`, bytes: workloadBytes(k, 0, u % 2 === 0) });
  }
  const quiet = await loopUnderTraffic(LOOP_PHASE_MS, undefined);
  let n = 0;
  const busy = await loopUnderTraffic(LOOP_PHASE_MS, () => {
    // One update per tick as an xDS response would bring it: decode + map + apply.
    if (n % 10 === 9) big.applyAddresses([decode(bigFlips[n % bigFlips.length] as Resource)], []);
    else store.applyAddresses([decode(updates[n % updates.length] as Resource)], []);
    n++;
  });

  const rows: [string, string, string][] = [
    [`first response: ${WORKLOADS} workloads + ${SERVICES} services, state only (MeshStore.applyAddresses)`, `${fmtMs(applyFirstMs)} ms (CPU ${fmtMs(applyFirstCpuMs)} ms)`, '< 1 s'],
    ['first response: decode + map (addressBytesToModel)', `${fmtMs(decodeFirstMs)} ms (CPU ${fmtMs(decodeFirstCpuMs)} ms)`, ''],
    ['first response: decode + map + state', `${fmtMs(decodeFirstMs + applyFirstMs)} ms (CPU ${fmtMs(decodeFirstCpuMs + applyFirstCpuMs)} ms)`, '< 1 s'],
    [`one update (${UPDATES}, IP or health change), state only: p50 / p99 / max`, `${fmtUs(percentile(applyOnly, 50))} / ${fmtUs(percentile(applyOnly, 99))} / ${fmtUs(applyOnly[applyOnly.length - 1] as number)}`, 'p99 < 1 ms'],
    ['one update, decode + map + state: p50 / p99 / max', `${fmtUs(percentile(endToEnd, 50))} / ${fmtUs(percentile(endToEnd, 99))} / ${fmtUs(endToEnd[endToEnd.length - 1] as number)}`, 'p99 < 1 ms'],
    [`one health change of an endpoint of a ${BIG}-endpoint service (1000), state only: p50 / p99`, `${fmtUs(percentile(bigTimes, 50))} / ${fmtUs(percentile(bigTimes, 99))}`, 'p99 < 1 ms'],
    ['today: one whole ProxyState rebuild of the same mesh (median of 5)', `${fmtMs(percentile(rebuilds, 50))} ms`, ''],
    [
      `event-loop delay p99 / max, loopback echo alone (${LOOP_PHASE_MS / 1000} s; ${quiet.roundTrips} round trips)`,
      `${fmtMs(quiet.p99Ms)} / ${fmtMs(quiet.maxMs)} ms`,
      '',
    ],
    [
      `event-loop delay p99 / max, loopback echo + 100 updates/s (${busy.ticks} updates; ${busy.roundTrips} round trips)`,
      `${fmtMs(busy.p99Ms)} / ${fmtMs(busy.maxMs)} ms`,
      'p99 < 10 ms',
    ],
    ['RSS added by the 10k + 2k mesh (after gc)', mb(rss1 - rss0), '< 100 MB'],
    ['heap added by the 10k + 2k mesh (after gc)', mb(heap1 - heap0), ''],
  ];
  console.log(`node ${process.version}, ${new Date().toISOString()}\n`);
  console.log('| measure | result | goal |\n|---|---|---|');
  for (const [m, r, g] of rows) console.log(`| ${m} | ${r} | ${g} |`);
}

await main();
