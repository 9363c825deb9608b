// The outbound decision as a table of cases (https://github.com/istio/ztunnel/blob/master/src/proxy/outbound.rs).
import t from 'tap';
import { parseLocalConfig } from '../../src/config/local-config.js';
import type { Service } from '../../src/config/types.js';
import { buildOutboundRoute, type OutboundRoute } from '../../src/route/outbound-route.js';
import { MeshStore } from '../../src/state/mesh-store.js';
import { ProxyState } from '../../src/state/proxy-state.js';

const state = new ProxyState(
  parseLocalConfig(
    `
workloads:
- name: client
  namespace: default
  serviceAccount: client
  workloadIps: ["10.0.1.2"]
  protocol: HBONE
  node: a
- name: web-0
  namespace: default
  serviceAccount: web
  workloadIps: ["10.0.2.2"]
  protocol: HBONE
  node: b
  services:
    default/web.default.svc.cluster.local: {80: 8080}
- name: web-1
  namespace: default
  serviceAccount: web
  workloadIps: ["10.0.2.3"]
  protocol: HBONE
  node: b
  capacity: 3
  services:
    default/web.default.svc.cluster.local: {80: 9090}
- name: web-sick
  namespace: default
  serviceAccount: web
  workloadIps: ["10.0.2.4"]
  protocol: HBONE
  status: Unhealthy
  services:
    default/web.default.svc.cluster.local: {80: 8080}
- name: legacy
  namespace: default
  workloadIps: ["10.0.3.3"]
  protocol: TCP
  services:
    default/legacy.default.svc.cluster.local: {443: 8443}
- name: v6
  namespace: default
  workloadIps: ["fd00::5"]
  protocol: HBONE
services:
- name: web
  namespace: default
  hostname: web.default.svc.cluster.local
  vips: ["/10.96.0.10"]
  ports: {80: 8080, 81: 8081}
  subjectAltNames: ["spiffe://cluster.local/ns/default/sa/web-canary"]
- name: legacy
  namespace: default
  hostname: legacy.default.svc.cluster.local
  vips: ["/10.96.0.11"]
  ports: {443: 8443}
- name: nobody
  namespace: default
  hostname: nobody.default.svc.cluster.local
  vips: ["/10.96.0.12"]
  ports: {80: 8080}
- name: passthrough
  namespace: default
  hostname: pt.default.svc.cluster.local
  vips: ["/10.96.0.13"]
  ports: {80: 8080}
  loadBalancer: {mode: Passthrough, healthPolicy: OnlyHealthy, routingPreferences: []}
- name: range
  namespace: default
  hostname: range.default.svc.cluster.local
  vips: []
  cidrVips: [{network: "", cidr: "10.97.0.0/16"}]
  ports: {80: 8080}
`,
    'route-table.yaml',
  ),
);
const source = state.workloadsByUid.get([...state.workloadsByUid.keys()].find((k) => k.endsWith('/client')) as string);
const opts = (random = 0) => ({ network: '', illegalPorts: new Set([15001, 15006, 15008]), hbonePort: 15008, random: () => random });

interface Row {
  name: string;
  dst: [string, number];
  random?: number;
  want: Partial<Record<string, unknown>> & { kind: OutboundRoute['kind'] };
}

const rows: Row[] = [
  { name: 'loop guard: loopback illegal port', dst: ['127.0.0.1', 15001], want: { kind: 'reject', code: 'ZT_ERR_ROUTE_SELF_CALL' } },
  { name: 'loopback on an ordinary port is passthrough', dst: ['127.0.0.1', 8080], want: { kind: 'passthrough' } },
  {
    name: 'VIP → endpoint, port translated by the endpoint mapping, HBONE',
    dst: ['10.96.0.10', 80],
    random: 0,
    want: { kind: 'hbone', hboneTarget: '10.0.2.2:8080', actualDst: { ip: '10.0.2.2', port: 15008 } },
  },
  {
    name: 'capacity-weighted pick: the capacity-3 endpoint for random 0.5',
    dst: ['10.96.0.10', 80],
    random: 0.5,
    want: { kind: 'hbone', hboneTarget: '10.0.2.3:9090' },
  },
  {
    name: 'expected identities: workload identity plus the service SANs',
    dst: ['10.96.0.10', 80],
    want: {
      kind: 'hbone',
      expectedIdentities: ['spiffe://cluster.local/ns/default/sa/web', 'spiffe://cluster.local/ns/default/sa/web-canary'],
    },
  },
  { name: 'service port not in the service → refused', dst: ['10.96.0.10', 82], want: { kind: 'reject', code: 'ZT_ERR_ROUTE_NO_HEALTHY_UPSTREAM' } },
  {
    name: 'service port without an endpoint mapping uses the service target port',
    dst: ['10.96.0.10', 81],
    want: { kind: 'hbone', hboneTarget: '10.0.2.2:8081' },
  },
  { name: 'workload IP goes direct, port unchanged', dst: ['10.0.2.3', 7000], want: { kind: 'hbone', hboneTarget: '10.0.2.3:7000' } },
  { name: 'TCP workload behind a VIP: plain TCP with translation', dst: ['10.96.0.11', 443], want: { kind: 'tcp', target: { ip: '10.0.3.3', port: 8443 } } },
  { name: 'TCP workload by IP: plain TCP', dst: ['10.0.3.3', 22], want: { kind: 'tcp', target: { ip: '10.0.3.3', port: 22 } } },
  { name: 'VIP with no endpoints → refused, not passthrough', dst: ['10.96.0.12', 80], want: { kind: 'reject', code: 'ZT_ERR_ROUTE_NO_HEALTHY_UPSTREAM' } },
  { name: 'Passthrough load balancer mode', dst: ['10.96.0.13', 80], want: { kind: 'passthrough', target: { ip: '10.96.0.13', port: 80 } } },
  { name: 'unknown destination → passthrough', dst: ['192.0.2.7', 443], want: { kind: 'passthrough', target: { ip: '192.0.2.7', port: 443 } } },
  { name: 'CIDR VIP with no endpoints → refused', dst: ['10.97.3.4', 80], want: { kind: 'reject' } },
  { name: 'IPv6 workload: bracketed authority', dst: ['fd00::5', 8080], want: { kind: 'hbone', hboneTarget: '[fd00::5]:8080' } },
];

// The same mesh fed one resource at a time, as delta xDS will (workloads before services,
// so endpoints are staged first): every row must route identically through it.
const store = new MeshStore();
for (const w of state.config.workloads) store.upsertWorkload(w);
for (const s of state.config.services) store.upsertService(s);

/** MeshStore's services hold an EndpointMap (a ReadonlyMap, not a Map): compared as a Map. */
function endpointsAsMap<R>(r: R): R {
  const service = (r as { service?: Service }).service;
  return service ? { ...r, service: { ...service, endpoints: new Map(service.endpoints) } } : r;
}

for (const row of rows) {
  t.test(row.name, async (t) => {
    const got = buildOutboundRoute(state, source, { ip: row.dst[0], port: row.dst[1] }, opts(row.random ?? 0));
    t.match(got, row.want);
    t.same(endpointsAsMap(buildOutboundRoute(store, source, { ip: row.dst[0], port: row.dst[1] }, opts(row.random ?? 0))), got, 'the incremental MeshStore routes the same');
  });
}

t.test('unhealthy endpoints are never chosen', async (t) => {
  for (let i = 0; i < 40; i++) {
    const got = buildOutboundRoute(state, source, { ip: '10.96.0.10', port: 80 }, opts(i / 40));
    t.not(got.kind === 'hbone' ? got.target.ip : '', '10.0.2.4');
  }
});

t.test('weights: ~1:3 between capacity 1 and 3', async (t) => {
  const counts = new Map<string, number>();
  for (let i = 0; i < 400; i++) {
    const got = buildOutboundRoute(state, source, { ip: '10.96.0.10', port: 80 }, opts((i + 0.5) / 400));
    const ip = got.kind === 'hbone' ? got.target.ip : 'none';
    counts.set(ip, (counts.get(ip) ?? 0) + 1);
  }
  t.same(Object.fromEntries(counts), { '10.0.2.2': 100, '10.0.2.3': 300 });
});
