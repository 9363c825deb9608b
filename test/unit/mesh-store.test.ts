// MeshStore (src/state/mesh-store.ts), the incrementally fed mesh state. The differential
// property: after any random sequence of workload/service upserts and removals (single or
// batched, as delta xDS responses), the store answers every query exactly as a ProxyState
// built from scratch from the same final resources (in arrival order, endpoints joined from
// the workloads' `services` maps the way src/config/local-config.ts does). Plus focused
// cases: workload before its service, service removal keeps staged endpoints, IP sharing and
// preference, CIDR VIPs, copy-on-write. Seeds and replay: see test/helpers/fuzz.ts.
import t from 'tap';
import fc from 'fast-check';
import { deepFreeze } from '../../src/config/freeze.js';
import type { Endpoint, LocalConfig, PortMap, Service, Workload } from '../../src/config/types.js';
import { EndpointMap, MeshStore, type MeshAddress, type MeshUpsert } from '../../src/state/mesh-store.js';
import { ProxyState } from '../../src/state/proxy-state.js';
import { buildService, buildWorkload } from '../helpers/fixtures.js';
import { fuzz } from '../helpers/fuzz.js';

// ---------------------------------------------------------------- the reference

/** The equivalent LocalConfig, made the way local-config.ts makes it. */
function referenceConfig(workloads: Workload[], services: Service[]): LocalConfig {
  const byKey = new Map<string, Map<string, Endpoint>>();
  const drafts = services.map((s) => {
    const endpoints = new Map(s.endpoints);
    byKey.set(`${s.namespace}/${s.hostname}`, endpoints);
    return { s, endpoints };
  });
  for (const w of workloads) {
    for (const [key, port] of w.services) byKey.get(key)?.set(w.uid, { workloadUid: w.uid, port, status: w.status });
  }
  return deepFreeze({ workloads, services: drafts.map((d) => ({ ...d.s, endpoints: d.endpoints })), policies: [] });
}

function ports(p: PortMap): [number, number][] {
  return [...p].sort((a, b) => a[0] - b[0]);
}

/** Everything a reader can see of a service, endpoints in uid order (their Map order is not part of the contract). */
function canon(s: Service | undefined): string {
  if (!s) return '-';
  const eps = [...s.endpoints.values()].map((e) => [e.workloadUid, ports(e.port), e.status]).sort((a, b) => String(a[0]).localeCompare(String(b[0])));
  return JSON.stringify({ ...s, ports: ports(s.ports), endpoints: eps });
}

// ---------------------------------------------------------------- generators

const UIDS = ['c1//Pod/a/w0', 'c1//Pod/b/w1', 'c1//Pod/a/w2', 'c1//WorkloadEntry/a/w3', 'c1//WorkloadEntry/b/w4', 'c1//Pod/b/w5'];
const NAMESPACES = ['a', 'b'];
const HOSTS = ['s0.x', 's1.x', 's2.x'];
const SERVICE_KEYS = NAMESPACES.flatMap((ns) => HOSTS.map((h) => `${ns}/${h}`));
const NETWORKS = ['', 'n1'];
const WORKLOAD_IPS = ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.96.1.7'];
const VIPS = ['10.96.0.1', '10.96.0.2', '10.96.1.5'];
const CIDRS = ['10.96.0.0/16', '10.96.1.0/24', '10.96.1.0/28', '10.0.0.0/8', '10.96.1.5/32'];
const PROBE_IPS = [...WORKLOAD_IPS, ...VIPS, '10.96.1.9', '10.96.1.200', '10.96.200.1', '10.1.1.1', '192.168.0.1', 'not-an-ip'];
const CLIENT_NS = [undefined, 'a', 'b'];

const portMapArb: fc.Arbitrary<PortMap> = fc.constantFrom<[number, number][]>([[80, 8080]], [[80, 9090], [443, 8443]], [[80, 0]]).map((e) => new Map(e));

const workloadArb: fc.Arbitrary<Workload> = fc
  .record({
    uid: fc.constantFrom(...UIDS),
    namespace: fc.constantFrom(...NAMESPACES),
    network: fc.constantFrom(...NETWORKS),
    workloadIps: fc.array(fc.constantFrom(...WORKLOAD_IPS), { maxLength: 2 }),
    protocol: fc.constantFrom<Workload['protocol']>('TCP', 'HBONE'),
    networkMode: fc.constantFrom<Workload['networkMode']>('Standard', 'Standard', 'Standard', 'HostNetwork'),
    node: fc.constantFrom('node-a', 'node-b'),
    status: fc.constantFrom<Workload['status']>('Healthy', 'Unhealthy'),
    services: fc.uniqueArray(fc.tuple(fc.constantFrom(...SERVICE_KEYS, 'a/missing.x'), portMapArb), { maxLength: 3, selector: (e) => e[0] }),
  })
  .map((r) => deepFreeze(buildWorkload({ ...r, services: new Map(r.services) })));

const serviceArb: fc.Arbitrary<Service> = fc
  .record({
    namespace: fc.constantFrom(...NAMESPACES),
    hostname: fc.constantFrom(...HOSTS),
    vips: fc.array(fc.record({ network: fc.constantFrom(...NETWORKS), address: fc.constantFrom(...VIPS) }), { maxLength: 2 }),
    cidrVips: fc.array(fc.record({ network: fc.constantFrom(...NETWORKS), cidr: fc.constantFrom(...CIDRS) }), { maxLength: 2 }),
    ports: portMapArb,
    direct: fc.uniqueArray(fc.tuple(fc.constantFrom(...UIDS), portMapArb, fc.constantFrom<Endpoint['status']>('Healthy', 'Unhealthy')), {
      maxLength: 2,
      selector: (e) => e[0],
    }),
    canonical: fc.boolean(),
    visibility: fc.constantFrom<Service['visibility']>('Public', 'Public', 'Namespace'),
    subjectAltNames: fc.constantFrom<string[][]>([], ['spiffe://cluster.local/ns/a/sa/x']),
  })
  .map(({ direct, ...r }) =>
    deepFreeze(
      buildService({
        ...r,
        name: r.hostname.split('.')[0] as string,
        // The YAML form may give endpoints directly; the xDS form never does.
        endpoints: new Map(direct.map(([uid, port, status]) => [uid, { workloadUid: uid, port, status }])),
      }),
    ),
  );

const addressArb: fc.Arbitrary<MeshAddress> = fc.oneof(
  workloadArb.map((workload) => ({ kind: 'workload' as const, workload })),
  serviceArb.map((service) => ({ kind: 'service' as const, service })),
);

function nameOf(m: MeshAddress): string {
  return m.kind === 'workload' ? m.workload.uid : `${m.service.namespace}/${m.service.hostname}`;
}

const nameArb = fc.constantFrom(...UIDS, ...SERVICE_KEYS, 'nothing/here');

type Op =
  | { op: 'upsertWorkload'; w: Workload }
  | { op: 'removeWorkload'; uid: string }
  | { op: 'upsertService'; s: Service }
  | { op: 'removeService'; key: string }
  | { op: 'batch'; upserts: MeshAddress[]; removals: string[] }
  | { op: 'readd'; name: string };

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 4, arbitrary: workloadArb.map((w) => ({ op: 'upsertWorkload' as const, w })) },
  { weight: 2, arbitrary: fc.constantFrom(...UIDS).map((uid) => ({ op: 'removeWorkload' as const, uid })) },
  { weight: 3, arbitrary: serviceArb.map((s) => ({ op: 'upsertService' as const, s })) },
  { weight: 2, arbitrary: fc.constantFrom(...SERVICE_KEYS).map((key) => ({ op: 'removeService' as const, key })) },
  {
    weight: 2,
    arbitrary: fc
      .record({ upserts: fc.array(addressArb, { maxLength: 6 }), removals: fc.array(nameArb, { maxLength: 3 }) })
      .map((r) => ({ op: 'batch' as const, ...r })),
  },
  // Removed and re-added in one response: the resource goes last in arrival order.
  { weight: 1, arbitrary: addressArb.map((m) => ({ op: 'batch' as const, upserts: [m], removals: [nameOf(m)] })) },
  // The same, with the very model held now (same VIPs: only the arrival order changes).
  { weight: 1, arbitrary: nameArb.map((name) => ({ op: 'readd' as const, name })) },
);

/** The same operations on plain ordered maps: what "the final set, in arrival order" means. */
class Reference {
  readonly workloads = new Map<string, Workload>();
  readonly services = new Map<string, Service>();
  /** `readd` → the batch it stands for now. */
  resolve(o: Op): Exclude<Op, { op: 'readd' }> {
    if (o.op !== 'readd') return o;
    const w = this.workloads.get(o.name);
    const s = this.services.get(o.name);
    const m: MeshAddress[] = w ? [{ kind: 'workload', workload: w }] : s ? [{ kind: 'service', service: s }] : [];
    return { op: 'batch', upserts: m, removals: [o.name] };
  }
  apply(o: Exclude<Op, { op: 'readd' }>): void {
    switch (o.op) {
      case 'upsertWorkload':
        this.workloads.set(o.w.uid, o.w);
        break;
      case 'removeWorkload':
        this.workloads.delete(o.uid);
        break;
      case 'upsertService':
        this.services.set(`${o.s.namespace}/${o.s.hostname}`, o.s);
        break;
      case 'removeService':
        this.services.delete(o.key);
        break;
      case 'batch':
        for (const name of o.removals) if (!this.workloads.delete(name)) this.services.delete(name);
        for (const m of o.upserts) {
          if (m.kind === 'workload') this.workloads.set(m.workload.uid, m.workload);
          else this.services.set(nameOf(m), m.service);
        }
        break;
    }
  }
}

function applyToStore(store: MeshStore, o: Exclude<Op, { op: 'readd' }>): void {
  switch (o.op) {
    case 'upsertWorkload':
      return store.upsertWorkload(o.w);
    case 'removeWorkload':
      return void store.removeWorkload(o.uid);
    case 'upsertService':
      return store.upsertService(o.s);
    case 'removeService': {
      const [ns, host] = o.key.split('/') as [string, string];
      return void store.removeService(ns, host);
    }
    case 'batch': {
      const upserts: MeshUpsert<MeshAddress>[] = o.upserts.map((model) => ({ name: nameOf(model), model }));
      return void store.applyAddresses(upserts, o.removals);
    }
  }
}

function show(v: unknown): string {
  return typeof v === 'object' && v !== null && 'uid' in v ? `workload ${String(v.uid)}` : String(v);
}

function eq(a: unknown, b: unknown, what: string): void {
  if (a !== b) throw new Error(`${what}: store ${show(a)} ≠ reference ${show(b)}`);
}

/** Every query of the read API, store against a ProxyState built from scratch. */
function compare(store: MeshStore, ref: Reference, uids: readonly string[] = UIDS): void {
  const state = new ProxyState(referenceConfig([...ref.workloads.values()], [...ref.services.values()]));
  // Listing (config_dump) in arrival order; workloads are the very objects upserted.
  const cfg = store.config;
  eq(cfg.workloads.length, state.config.workloads.length, 'config.workloads.length');
  cfg.workloads.forEach((w, i) => eq(w, state.config.workloads[i], `config.workloads[${i}]`));
  eq(cfg.services.map(canon).join('\n'), state.config.services.map(canon).join('\n'), 'config.services');
  for (const node of [undefined, 'node-a', 'node-b']) {
    eq(store.localWorkloads(node).map((w) => w.uid).join(','), state.localWorkloads(node).map((w) => w.uid).join(','), `localWorkloads(${node})`);
  }
  eq(store.workloadsByUid.size, state.workloadsByUid.size, 'workloadsByUid.size');
  for (const [uid, w] of state.workloadsByUid) eq(store.workloadsByUid.get(uid), w, `workloadsByUid(${uid})`);
  eq(store.servicesByKey.size, state.servicesByKey.size, 'servicesByKey.size');
  for (const [key, s] of state.servicesByKey) eq(canon(store.servicesByKey.get(key)), canon(s), `servicesByKey(${key})`);
  for (const key of [...SERVICE_KEYS, 'a/missing.x']) {
    const [ns, host] = key.split('/') as [string, string];
    eq(canon(store.findService(ns, host)), canon(state.findService(ns, host)), `findService(${key})`);
  }
  for (const network of NETWORKS) {
    for (const ip of PROBE_IPS) {
      eq(store.findWorkloadByIp(network, ip), state.findWorkloadByIp(network, ip), `findWorkloadByIp(${network}, ${ip})`);
      for (const ns of CLIENT_NS) {
        eq(canon(store.findServiceByVip(network, ip, ns)), canon(state.findServiceByVip(network, ip, ns)), `findServiceByVip(${network}, ${ip}, ${ns})`);
      }
    }
  }
  for (const uid of uids) {
    const w = buildWorkload({ uid });
    eq(store.servicesOf(w).map(canon).join('\n'), state.servicesOf(w).map(canon).join('\n'), `servicesOf(${uid})`);
  }
}

t.test('differential: any sequence of upserts/removals answers as a ProxyState built from scratch', (t) => {
  fuzz(
    t,
    'mesh-store-differential',
    fc.array(opArb, { minLength: 1, maxLength: 40 }),
    (ops) => {
      const store = new MeshStore();
      const ref = new Reference();
      for (const op of ops) {
        const o = ref.resolve(op);
        // Copy-on-write: every service a reader holds before the step is frozen and unchanged after it.
        const held = [...store.servicesByKey.values()].map((s) => [s, canon(s)] as const);
        applyToStore(store, o);
        ref.apply(o);
        for (const [s, before] of held) {
          if (!Object.isFrozen(s) || !Object.isFrozen(s.endpoints)) throw new Error('a service handed out is not frozen');
          eq(canon(s), before, 'a held service object changed');
        }
      }
      compare(store, ref);
    },
    { runs: 400 },
  );
  t.end();
});

/** The ops applied to a new store and to the reference; `each` runs after every step. */
function replay(ops: Op[], each?: (store: MeshStore, ref: Reference) => void): { store: MeshStore; ref: Reference } {
  const store = new MeshStore();
  const ref = new Reference();
  for (const op of ops) {
    const o = ref.resolve(op);
    applyToStore(store, o);
    ref.apply(o);
    each?.(store, ref);
  }
  return { store, ref };
}

t.test('snapshot(): an empty store fed the snapshot answers as the store it came from (a restarted worker thread)', (t) => {
  fuzz(
    t,
    'mesh-store-snapshot',
    fc.array(opArb, { minLength: 1, maxLength: 40 }),
    (ops) => {
      const { store, ref } = replay(ops);
      const copy = new MeshStore();
      for (const d of store.snapshot()) {
        if (d.kind === 'addresses') copy.applyAddresses(d.upserts, d.removals);
        else copy.applyPolicies(d.upserts, d.removals);
      }
      compare(copy, ref);
      eq(JSON.stringify(copy.policyList()), JSON.stringify(store.policyList()), 'policies');
    },
    { runs: 300 },
  );
  t.end();
});

t.test('differential, checked after every step', (t) => {
  fuzz(
    t,
    'mesh-store-differential-every-step',
    fc.array(opArb, { minLength: 1, maxLength: 25 }),
    (ops) => {
      replay(ops, compare);
    },
    { runs: 150 },
  );
  t.end();
});

// ---------------------------------------------------------------- focused cases

const SVC_KEY = 'default/server.default.svc.cluster.local';
const svc = (o: Partial<Service> = {}): Service => deepFreeze(buildService({ vips: [{ network: '', address: '10.96.0.10' }], ports: new Map([[80, 8080]]), ...o }));
const wl = (o: Partial<Workload> = {}): Workload => deepFreeze(buildWorkload({ uid: 'c1//Pod/default/server', services: new Map([[SVC_KEY, new Map([[80, 8080]])]]), ...o }));

t.test('a workload that arrives before its service is staged and joined when the service comes', (t) => {
  const store = new MeshStore();
  store.upsertWorkload(wl());
  t.equal(store.findService('default', 'server.default.svc.cluster.local'), undefined);
  t.same(store.servicesOf(wl()), []);
  t.equal(store.size.stagedServiceKeys, 1);
  store.upsertService(svc());
  const s = store.findServiceByVip('', '10.96.0.10', 'default');
  t.ok(s);
  t.same([...(s as Service).endpoints.keys()], ['c1//Pod/default/server']);
  t.equal((s as Service).endpoints.get('c1//Pod/default/server')?.port.get(80), 8080);
  t.equal(store.servicesOf(wl())[0], s, 'servicesOf points at the current object');
  t.equal(store.size.stagedServiceKeys, 0);
  t.end();
});

t.test('service removal keeps the staged endpoints; a re-add gets them back', (t) => {
  const store = new MeshStore();
  store.upsertService(svc());
  store.upsertWorkload(wl());
  t.ok(store.removeService('default', 'server.default.svc.cluster.local'));
  t.equal(store.findServiceByVip('', '10.96.0.10', undefined), undefined, 'its VIP is gone');
  t.same(store.servicesOf(wl()), [], 'servicesOf forgets it');
  t.equal(store.size.stagedServiceKeys, 1);
  store.upsertService(svc());
  t.same([...(store.findServiceByVip('', '10.96.0.10', undefined) as Service).endpoints.keys()], ['c1//Pod/default/server']);
  // Removal by resource name, in a batch: the workload goes, the service stays without it.
  store.applyAddresses([], ['c1//Pod/default/server']);
  t.equal(store.findService('default', 'server.default.svc.cluster.local')?.endpoints.size, 0);
  t.equal(store.findWorkloadByIp('', '10.0.0.2'), undefined);
  t.notOk(store.removeAddress('no/such'), 'an unknown name is no error');
  t.end();
});

t.test('copy-on-write: a new frozen service when its endpoints change, the same object when they do not', (t) => {
  const store = new MeshStore();
  store.upsertService(svc());
  store.upsertService(svc({ hostname: 'other.default.svc.cluster.local', vips: [{ network: '', address: '10.96.0.11' }] }));
  store.upsertWorkload(wl());
  const before = store.findServiceByVip('', '10.96.0.10', undefined) as Service;
  const other = store.findServiceByVip('', '10.96.0.11', undefined) as Service;
  t.ok(Object.isFrozen(before) && Object.isFrozen(before.endpoints));
  // IP change only: the endpoint is unchanged, nothing is rebuilt.
  store.upsertWorkload(wl({ workloadIps: ['10.0.0.9'] }));
  t.equal(store.findServiceByVip('', '10.96.0.10', undefined), before, 'IP change: same service object');
  t.equal(store.findWorkloadByIp('', '10.0.0.2'), undefined, 'old IP unindexed');
  t.equal(store.findWorkloadByIp('', '10.0.0.9')?.uid, 'c1//Pod/default/server');
  // Status change: a new object, indexes re-pointed, the old one untouched.
  store.upsertWorkload(wl({ workloadIps: ['10.0.0.9'], status: 'Unhealthy' }));
  const after = store.findServiceByVip('', '10.96.0.10', undefined) as Service;
  t.not(after, before);
  t.equal(before.endpoints.get('c1//Pod/default/server')?.status, 'Healthy', 'old object unchanged');
  t.equal(after.endpoints.get('c1//Pod/default/server')?.status, 'Unhealthy');
  t.equal(store.findService('default', 'server.default.svc.cluster.local'), after);
  t.equal(store.servicesOf(wl())[0], after);
  t.equal(store.findServiceByVip('', '10.96.0.11', undefined), other, 'an unrelated service is untouched');
  t.end();
});

t.test('a shared IP: pods before others, then HBONE, then first arrival; removal promotes the next', (t) => {
  const store = new MeshStore();
  const entry = deepFreeze(buildWorkload({ uid: 'c1//WorkloadEntry/default/vm', protocol: 'HBONE', workloadIps: ['10.0.0.5'] }));
  const podTcp = deepFreeze(buildWorkload({ uid: 'c1//Pod/default/a', protocol: 'TCP', workloadIps: ['10.0.0.5'] }));
  const podTcp2 = deepFreeze(buildWorkload({ uid: 'c1//Pod/default/b', protocol: 'TCP', workloadIps: ['10.0.0.5'] }));
  const podHbone = deepFreeze(buildWorkload({ uid: 'c1//Pod/default/c', protocol: 'HBONE', workloadIps: ['10.0.0.5'] }));
  const host = deepFreeze(buildWorkload({ uid: 'c1//Pod/default/h', networkMode: 'HostNetwork', workloadIps: ['10.0.0.5'] }));
  store.upsertWorkload(entry);
  t.equal(store.findWorkloadByIp('', '10.0.0.5'), entry);
  store.upsertWorkload(podTcp);
  store.upsertWorkload(podTcp2);
  t.equal(store.findWorkloadByIp('', '10.0.0.5'), podTcp, 'a pod beats an HBONE workload entry; first pod kept');
  store.upsertWorkload(host);
  t.equal(store.findWorkloadByIp('', '10.0.0.5'), podTcp, 'host-network workloads are not indexed by IP');
  store.upsertWorkload(podHbone);
  t.equal(store.findWorkloadByIp('', '10.0.0.5'), podHbone, 'HBONE pod beats TCP pod');
  store.removeWorkload(podHbone.uid);
  t.equal(store.findWorkloadByIp('', '10.0.0.5'), podTcp);
  store.upsertWorkload(deepFreeze({ ...podTcp, workloadIps: ['10.0.0.6'] }));
  t.equal(store.findWorkloadByIp('', '10.0.0.5'), podTcp2, 'the IP moved away: the next one takes it');
  t.equal(store.findWorkloadByIp('', '10.0.0.6')?.uid, podTcp.uid);
  t.equal(store.findWorkloadByIp('n1', '10.0.0.6'), undefined, 'per network');
  t.end();
});

t.test('CIDR VIPs: longest prefix first, namespace visibility, removal', (t) => {
  const store = new MeshStore();
  const wide = svc({ hostname: 'wide', vips: [], cidrVips: [{ network: '', cidr: '10.96.0.0/16' }] });
  const narrow = svc({ hostname: 'narrow', vips: [], cidrVips: [{ network: '', cidr: '10.96.1.0/24' }] });
  const hidden = svc({ hostname: 'hidden', namespace: 'other', visibility: 'Namespace', vips: [], cidrVips: [{ network: '', cidr: '10.96.1.0/28' }] });
  store.applyAddresses(
    [wide, narrow, hidden].map((s) => ({ name: `${s.namespace}/${s.hostname}`, model: { kind: 'service' as const, service: s } })),
    [],
  );
  t.equal(store.findServiceByVip('', '10.96.1.3', 'default')?.hostname, 'narrow', 'the /28 is invisible to default');
  t.equal(store.findServiceByVip('', '10.96.1.3', 'other')?.hostname, 'hidden');
  t.equal(store.findServiceByVip('', '10.96.2.3', 'default')?.hostname, 'wide');
  t.equal(store.findServiceByVip('n1', '10.96.2.3', 'default'), undefined);
  store.removeService('default', 'narrow');
  t.equal(store.findServiceByVip('', '10.96.1.3', 'default')?.hostname, 'wide');
  // A CIDR service's endpoint change re-points the CIDR entry too.
  store.upsertWorkload(wl({ services: new Map([['default/wide', new Map([[80, 8080]])]]) }));
  t.equal(store.findServiceByVip('', '10.96.1.3', 'default'), store.findService('default', 'wide'));
  t.equal(store.findServiceByVip('', '10.96.1.3', 'default')?.endpoints.size, 1);
  t.end();
});

t.test('exact VIP ties: client namespace, then canonical, then first arrival (re-add goes last)', (t) => {
  const store = new MeshStore();
  const vips = [{ network: '', address: '10.96.0.20' }];
  const a = svc({ hostname: 'a', namespace: 'x', vips });
  const b = svc({ hostname: 'b', namespace: 'y', vips });
  const c = svc({ hostname: 'c', namespace: 'z', vips, canonical: true });
  store.upsertService(a);
  store.upsertService(b);
  t.equal(store.findServiceByVip('', '10.96.0.20', 'q')?.hostname, 'a');
  t.equal(store.findServiceByVip('', '10.96.0.20', 'y')?.hostname, 'b');
  store.upsertService(c);
  t.equal(store.findServiceByVip('', '10.96.0.20', 'q')?.hostname, 'c');
  store.removeService('z', 'c');
  store.applyAddresses([{ name: 'x/a', model: { kind: 'service', service: a } }], ['x/a']);
  t.equal(store.findServiceByVip('', '10.96.0.20', 'q')?.hostname, 'b', 'a removed and re-added comes after b');
  t.same(
    store.config.services.map((s) => s.hostname),
    ['b', 'a'],
  );
  t.end();
});

t.test('policies are held by namespace/name for the listing', (t) => {
  const store = new MeshStore();
  const p = deepFreeze({ name: 'p', namespace: 'ns', scope: 'Namespace' as const, action: 'Deny' as const, dryRun: false, rules: [] });
  store.applyPolicies([{ name: 'ns/p', model: p }], []);
  t.equal(store.config.policies[0], p);
  store.applyPolicies([], ['ns/p']);
  t.same(store.config.policies, []);
  t.end();
});

// ---------------------------------------------------------------- large services (EndpointMap buckets)

t.test('EndpointMap: any sequence of changes reads as a Map would; old maps never change', (t) => {
  const keyArb = fc.integer({ min: 0, max: 999 }).map((i) => `c1//Pod/ns/w${i}`);
  const epOf = (uid: string, status: Endpoint['status']): Endpoint => Object.freeze({ workloadUid: uid, port: new Map([[80, 8080]]), status });
  const changeArb = fc.array(fc.tuple(keyArb, fc.constantFrom<Endpoint['status'] | undefined>('Healthy', 'Unhealthy', undefined)), { minLength: 1, maxLength: 200 });
  fuzz(
    t,
    'endpoint-map',
    fc.record({ initial: fc.integer({ min: 0, max: 800 }), steps: fc.array(changeArb, { minLength: 1, maxLength: 12 }) }),
    ({ initial, steps }) => {
      const model = new Map<string, Endpoint>();
      for (let i = 0; i < initial; i++) model.set(`c1//Pod/ns/w${i}`, epOf(`c1//Pod/ns/w${i}`, 'Healthy'));
      let m = EndpointMap.from(model);
      const held: [EndpointMap, [string, Endpoint][]][] = [];
      for (const step of steps) {
        held.push([m, [...model]]);
        const delta = new Map<string, Endpoint | undefined>();
        for (const [k, st] of step) delta.set(k, st === undefined ? undefined : epOf(k, st));
        for (const [k, v] of delta) if (v === undefined) model.delete(k); else model.set(k, v);
        m = m.with(delta);
        if (!Object.isFrozen(m)) throw new Error('not frozen');
        eq(m.size, model.size, 'size');
        for (const [k, v] of model) eq(m.get(k), v, `get(${k})`);
        for (const k of delta.keys()) eq(m.has(k), model.has(k), `has(${k})`);
        const seen = new Map(m.entries());
        eq(seen.size, model.size, 'entries are distinct');
        for (const [k, v] of model) eq(seen.get(k), v, `entries(${k})`);
        eq([...m.keys()].length, model.size, 'keys()');
        eq([...m.values()].length, model.size, 'values()');
        let n = 0;
        m.forEach(() => n++);
        eq(n, model.size, 'forEach');
        // √n buckets (hysteresis aside): never one bucket for a large map, never many for a small one.
        if (model.size > 256 && m.bucketCount === 1) throw new Error(`${model.size} entries in one bucket`);
        if (model.size <= 16 && m.bucketCount > 1) throw new Error(`${model.size} entries in ${m.bucketCount} buckets`);
      }
      for (const [old, entries] of held) {
        eq(old.size, entries.length, 'an old map changed size');
        for (const [k, v] of entries) eq(old.get(k), v, `an old map changed at ${k}`);
      }
    },
    { runs: 150 },
  );
  t.end();
});

t.test('EndpointMap: one change copies one bucket; the others are shared with the old map', (t) => {
  const eps = Array.from({ length: 5000 }, (_, i): [string, Endpoint] => [`c1//Pod/ns/w${i}`, { workloadUid: `c1//Pod/ns/w${i}`, port: new Map(), status: 'Healthy' }]);
  const a = EndpointMap.from(eps);
  t.ok(a.bucketCount >= 64, `5000 endpoints in ${a.bucketCount} buckets`);
  const b = a.with(new Map([['c1//Pod/ns/w7', { workloadUid: 'c1//Pod/ns/w7', port: new Map(), status: 'Unhealthy' as const }]]));
  t.equal(a.get('c1//Pod/ns/w7')?.status, 'Healthy');
  t.equal(b.get('c1//Pod/ns/w7')?.status, 'Unhealthy');
  t.equal(b.size, 5000);
  const own = (m: EndpointMap): unknown[] => (m as unknown as { buckets: unknown[] }).buckets;
  const shared = own(b).filter((bucket, i) => bucket === own(a)[i]).length;
  t.equal(shared, a.bucketCount - 1, 'every bucket but the changed one is shared');
  t.end();
});

t.test('differential with large services (many endpoints, bucketed): as a ProxyState built from scratch', (t) => {
  const many = Array.from({ length: 160 }, (_, i) => `c1//Pod/${i % 2 ? 'a' : 'b'}/m${i}`);
  const keys = ['a/s0.x', 'a/s1.x'];
  const vipOf: Record<string, string> = { 'a/s0.x': '10.96.0.1', 'a/s1.x': '10.96.0.2' };
  const mkWorkload = (i: number, status: Workload['status'], inKeys: readonly string[]): Workload =>
    deepFreeze(
      buildWorkload({
        uid: many[i] as string,
        namespace: 'a',
        workloadIps: [`10.1.${i >> 8}.${i & 255}`],
        status,
        services: new Map(inKeys.map((k) => [k, new Map([[80, 8080]])])),
      }),
    );
  const mkService = (key: string, direct: number[]): Service =>
    deepFreeze(
      buildService({
        namespace: 'a',
        name: key.slice(2, 4),
        hostname: key.slice(2),
        vips: [{ network: '', address: vipOf[key] as string }],
        ports: new Map([[80, 8080]]),
        endpoints: new Map(direct.map((i) => [many[i] as string, { workloadUid: many[i] as string, port: new Map([[80, 9090]]), status: 'Healthy' as const }])),
      }),
    );
  const idx = fc.integer({ min: 0, max: many.length - 1 });
  const bigOpArb: fc.Arbitrary<Op> = fc.oneof(
    { weight: 6, arbitrary: fc.tuple(idx, fc.constantFrom<Workload['status']>('Healthy', 'Unhealthy'), fc.subarray(keys)).map(([i, st, ks]) => ({ op: 'upsertWorkload' as const, w: mkWorkload(i, st, ks) })) },
    { weight: 2, arbitrary: idx.map((i) => ({ op: 'removeWorkload' as const, uid: many[i] as string })) },
    { weight: 1, arbitrary: fc.tuple(fc.constantFrom(...keys), fc.array(idx, { maxLength: 3 })).map(([k, d]) => ({ op: 'upsertService' as const, s: mkService(k, d) })) },
    { weight: 1, arbitrary: fc.constantFrom(...keys).map((key) => ({ op: 'removeService' as const, key })) },
    // Mass removals and additions in one response: the maps shrink to one bucket and grow back.
    { weight: 1, arbitrary: fc.subarray(many.map((_, i) => i), { minLength: 70 }).map((is) => ({ op: 'batch' as const, upserts: [], removals: is.map((i) => many[i] as string) })) },
    {
      weight: 1,
      arbitrary: fc
        .tuple(fc.subarray(many.map((_, i) => i), { minLength: 70 }), fc.constantFrom<Workload['status']>('Healthy', 'Unhealthy'))
        .map(([is, st]) => ({ op: 'batch' as const, upserts: is.map((i) => ({ kind: 'workload' as const, workload: mkWorkload(i, st, keys) })), removals: [] })),
    },
  );
  let sawBuckets = 0;
  fuzz(
    t,
    'mesh-store-differential-large',
    fc.array(bigOpArb, { minLength: 1, maxLength: 20 }),
    (ops) => {
      const store = new MeshStore();
      const ref = new Reference();
      const preload: Op[] = [
        { op: 'upsertService', s: mkService('a/s0.x', [1, 2]) },
        { op: 'batch', upserts: many.slice(0, 130).map((_, i) => ({ kind: 'workload' as const, workload: mkWorkload(i, 'Healthy', i % 3 ? ['a/s0.x'] : keys) })), removals: [] },
        { op: 'upsertService', s: mkService('a/s1.x', []) },
      ];
      for (const op of [...preload, ...ops]) {
        const o = ref.resolve(op);
        const held = [...store.servicesByKey.values()].map((s) => [s, canon(s)] as const);
        const heldOf = store.servicesOf(buildWorkload({ uid: many[3] as string }));
        applyToStore(store, o);
        ref.apply(o);
        for (const [s, before] of held) {
          if (!Object.isFrozen(s) || !Object.isFrozen(s.endpoints)) throw new Error('a service handed out is not frozen');
          eq(canon(s), before, 'a held service object changed');
        }
        for (const s of heldOf) if (!Object.isFrozen(s)) throw new Error('servicesOf handed out a mutable service');
        for (const s of store.servicesByKey.values()) if ((s.endpoints as EndpointMap).bucketCount > 1) sawBuckets++;
      }
      compare(store, ref, many);
    },
    // Each input is a few ms on a quiet machine; the bound only catches blow-ups on a busy one.
    { runs: 25, perInputMs: 30_000 },
  );
  t.ok(sawBuckets > 0, 'the runs held services of several buckets');
  t.end();
});

