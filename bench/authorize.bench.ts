// Micro-benchmark of PolicyStore.authorize(): calls/s, ns/call and heap bytes/call for a
// baseline (no policies, one Allow policy) and for 10,000 Global Deny policies × 10
// non-matching rules, side by side in one run, with ratios to the no-policy baseline.
// Run: npm run build && node dist/bench/authorize.bench.js   (about 15 s; gc is enabled at
// run time when --expose-gc is not given).
// Must never touch the network or the disk; it only prints.

import os from 'node:os';
import v8 from 'node:v8';
import vm from 'node:vm';
import type { Authorization, Match, Workload } from '../src/config/types.js';
import { buildAuthzConnection, PolicyStore, type AuthzConnection, type AuthzDecision } from '../src/authorize/index.js';

const TIME_PER_SCENARIO_MS = 1800;
const POLICIES = 10_000;
const RULES_PER_POLICY = 10;
const PORT = 8080;

function getGc(): () => void {
  const exposed = (globalThis as { gc?: () => void }).gc;
  if (exposed !== undefined) return exposed;
  // Without --expose-gc: turn the flag on and fetch gc from a fresh context.
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
}

// The bench keeps its own builders: it is part of the product build (tsconfig.build.json,
// Dockerfile), which does not contain test/, so test/helpers/fixtures.ts is out of reach.
function buildMatch(m: Partial<Match>): Match {
  return {
    namespaces: [],
    notNamespaces: [],
    principals: [],
    notPrincipals: [],
    serviceAccounts: [],
    notServiceAccounts: [],
    sourceIps: [],
    notSourceIps: [],
    destinationIps: [],
    notDestinationIps: [],
    destinationPorts: [],
    notDestinationPorts: [],
    ...m,
  };
}

/** 10k Global Deny policies; every rule = one clause with one Match: principal + the connection's port. */
function denyPolicies(principalKind: 'Exact' | 'Prefix'): Authorization[] {
  const out: Authorization[] = [];
  for (let p = 0; p < POLICIES; p++) {
    const rules: Match[][][] = [];
    for (let r = 0; r < RULES_PER_POLICY; r++) {
      const value = `cluster.local/ns/bench-${p}/sa/never-${r}`;
      rules.push([[buildMatch({ principals: [{ kind: principalKind, value }], destinationPorts: [PORT] })]]);
    }
    out.push({ name: `deny-${p}`, namespace: 'istio-system', scope: 'Global', action: 'Deny', dryRun: false, rules });
  }
  return out;
}

const oneAllow: Authorization[] = [
  {
    name: 'allow-client',
    namespace: 'default',
    scope: 'Namespace',
    action: 'Allow',
    dryRun: false,
    rules: [[[buildMatch({ principals: [{ kind: 'Exact', value: 'cluster.local/ns/default/sa/client' }], destinationPorts: [PORT] })]]],
  },
];

/** Shows the dry-run path's cost and that the heap column does detect allocation. */
const oneDryRunDeny: Authorization[] = [{ ...oneAllow[0]!, name: 'dry-run-deny', action: 'Deny', dryRun: true }];

const workload: Workload = {
  uid: 'cluster1//v1/Pod/default/server',
  name: 'server',
  namespace: 'default',
  serviceAccount: 'server',
  trustDomain: 'cluster.local',
  workloadIps: ['10.0.0.2'],
  hostname: '',
  network: '',
  protocol: 'HBONE',
  networkMode: 'Standard',
  node: 'node-a',
  waypoint: undefined,
  networkGateway: undefined,
  nativeTunnel: false,
  applicationTunnel: undefined,
  authorizationPolicies: [],
  status: 'Healthy',
  clusterId: 'cluster1',
  locality: undefined,
  workloadName: 'server',
  workloadType: 'deployment',
  canonicalName: 'server',
  canonicalRevision: 'latest',
  capacity: 1,
  services: new Map(),
};

const mtls = buildAuthzConnection('10.0.0.1', '10.0.0.2', PORT, 'spiffe://cluster.local/ns/default/sa/client');
const plaintext = buildAuthzConnection('10.0.0.1', '10.0.0.2', PORT, undefined);

interface Scenario {
  name: string;
  store: PolicyStore;
  conn: AuthzConnection;
  buildMs: number;
}

interface Result {
  name: string;
  policies: number;
  buildMs: number;
  calls: number;
  callsPerSec: number;
  nsPerCall: number;
  bytesPerCall: number;
  decision: string;
}

let sink = 0;
/** Every decision is stored here so escape analysis cannot drop what authorize() allocates. */
let last: AuthzDecision | undefined;

function measure(s: Scenario, gc: () => void): Result {
  const decision = s.store.authorize(workload, s.conn);
  // Warm up so the timed loop runs optimized code.
  const warmEnd = performance.now() + 200;
  while (performance.now() < warmEnd) for (let i = 0; i < 16; i++) sink = (sink + (last = s.store.authorize(workload, s.conn)).kind.length) & 0xffff;

  let calls = 0;
  let batch = 1;
  const start = performance.now();
  let now = start;
  while (now - start < TIME_PER_SCENARIO_MS) {
    const batchStart = now;
    for (let i = 0; i < batch; i++) sink = (sink + (last = s.store.authorize(workload, s.conn)).kind.length) & 0xffff;
    calls += batch;
    now = performance.now();
    // Grow batches while they are short, so the clock is read rarely but the end is not overshot.
    if (now - batchStart < 5 && batch < 65536) batch *= 2;
  }
  const elapsedMs = now - start;
  const nsPerCall = (elapsedMs * 1e6) / calls;

  // Heap bytes/call as a slope: heapUsed growth over 2N calls minus that over N calls, so
  // constant background allocation (JIT feedback, timers) cancels out. N is small enough
  // that 2N calls fit the young generation even at a few hundred bytes per call (a scavenge
  // inside would hide allocation) and keeps slow scenarios to ~0.3 s; median of 5 trials.
  const n = Math.max(4, Math.min(1000, Math.floor(20e6 / nsPerCall)));
  const growth = (calls: number): number => {
    gc();
    const before = process.memoryUsage().heapUsed;
    for (let i = 0; i < calls; i++) sink = (sink + (last = s.store.authorize(workload, s.conn)).kind.length) & 0xffff;
    return process.memoryUsage().heapUsed - before;
  };
  const slopes: number[] = [];
  for (let trial = 0; trial < 5; trial++) slopes.push((growth(2 * n) - growth(n)) / n);
  slopes.sort((a, b) => a - b);
  return {
    name: s.name,
    policies: s.store.size,
    buildMs: s.buildMs,
    calls,
    callsPerSec: calls / (elapsedMs / 1000),
    nsPerCall,
    bytesPerCall: Math.max(0, slopes[2]!),
    decision: decision.kind === 'allow' ? 'allow' : `deny (${decision.reason})`,
  };
}

function build(name: string, policies: Authorization[], conn: AuthzConnection): Scenario {
  const t0 = performance.now();
  const store = new PolicyStore(policies);
  return { name, store, conn, buildMs: performance.now() - t0 };
}

function main(): void {
  const gc = getGc();
  const wallStart = performance.now();
  // Built one at a time and dropped after measuring, so each gc only sees one store.
  const scenarios: (() => Scenario)[] = [
    () => build('baseline: 0 policies', [], mtls),
    () => build('baseline: 1 Allow policy (matches)', oneAllow, mtls),
    () => build('1 dry-run Deny policy (matches; notes allocate by design)', oneDryRunDeny, mtls),
    () => build('10k Deny × 10 rules, principal Exact + port (indexed)', denyPolicies('Exact'), mtls),
    () => build('same, plaintext peer (no identity)', denyPolicies('Exact'), plaintext),
    () => build('10k Deny × 10 rules, principal Prefix + port (full scan)', denyPolicies('Prefix'), mtls),
  ];
  const results: Result[] = [];
  for (const make of scenarios) {
    const r = measure(make(), gc);
    results.push(r);
    console.log(
      `${r.name}: ${fmt(r.callsPerSec)} calls/s, ${r.nsPerCall.toFixed(1)} ns/call, ${r.bytesPerCall.toFixed(2)} B/call heap, ` +
        `build ${r.buildMs.toFixed(0)} ms, decision ${r.decision}`,
    );
  }
  const base = results[0]!.nsPerCall;
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU';
  console.log('');
  console.log(`Machine: ${cpu}, ${os.cpus().length} cores, Node ${process.version}, ${os.platform()} ${os.release()}`);
  console.log(`Each scenario timed for ~${TIME_PER_SCENARIO_MS} ms; ratio = ns/call ÷ ns/call of "${results[0]!.name}"; full scan = ${POLICIES * RULES_PER_POLICY} Matches per call.`);
  console.log('');
  console.log('| scenario | policies | build ms | calls/s | ns/call | × baseline | heap B/call | decision |');
  console.log('|---|---:|---:|---:|---:|---:|---:|---|');
  for (const r of results) {
    console.log(
      `| ${r.name} | ${r.policies} | ${r.buildMs.toFixed(0)} | ${fmt(r.callsPerSec)} | ${r.nsPerCall.toFixed(1)} | ` +
        `${(r.nsPerCall / base).toFixed(1)} | ${r.bytesPerCall.toFixed(2)} | ${r.decision} |`,
    );
  }
  console.log('');
  console.log(`total ${((performance.now() - wallStart) / 1000).toFixed(1)} s${sink === -1 && last === undefined ? '!' : ''}`);
}

function fmt(n: number): string {
  return n >= 1e6 ? `${(n / 1e6).toFixed(2)} M` : n >= 1e3 ? `${(n / 1e3).toFixed(1)} k` : n.toFixed(0);
}

main();
