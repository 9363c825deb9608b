// parseLocalConfig / loadLocalConfigFile: valid files produce the typed, frozen records with
// defaults and joined endpoints; every bad input is an error naming source, key path, problem.

import t from 'tap';
import { fileURLToPath } from 'node:url';
import { ZtError } from '../../src/errors.js';
import { EMPTY_LOCAL_CONFIG, loadLocalConfigFile, parseLocalConfig } from '../../src/config/local-config.js';
import { canonicalCidr, canonicalIp } from '../../src/util/ip.js';
import type { LocalConfig, Match, Service, Workload } from '../../src/config/types.js';
import { buildMatch } from '../helpers/fixtures.js';

const fixture = (name: string): string => fileURLToPath(new URL(`../fixtures/local-config/${name}`, import.meta.url));
const example = fileURLToPath(new URL('../../examples/localhost.yaml', import.meta.url));

function configError(fn: () => unknown): ZtError {
  try {
    fn();
  } catch (err) {
    if (err instanceof ZtError) return err;
    throw err;
  }
  throw new Error('expected a config error');
}

function getWorkload(c: LocalConfig, name: string): Workload {
  const w = c.workloads.find((x) => x.name === name);
  if (w === undefined) throw new Error(`no workload ${name}`);
  return w;
}

function getService(c: LocalConfig, name: string): Service {
  const s = c.services.find((x) => x.name === name);
  if (s === undefined) throw new Error(`no service ${name}`);
  return s;
}

t.test('full example (two nodes, service, policies)', async (t) => {
  const c = loadLocalConfigFile(fixture('full.yaml'));
  t.equal(c.workloads.length, 3);
  t.equal(c.services.length, 1);
  t.equal(c.policies.length, 2);

  const client = getWorkload(c, 'client');
  t.match(client, {
    uid: 'cluster1//v1/Pod/default/client',
    namespace: 'default',
    serviceAccount: 'client',
    trustDomain: 'cluster.local',
    workloadIps: ['10.0.2.2'],
    protocol: 'HBONE',
    node: 'node-a',
    clusterId: 'Kubernetes',
    workloadName: 'client',
    workloadType: 'deployment',
    canonicalName: 'client',
    canonicalRevision: 'v1',
  });
  t.equal(client.services.size, 0);

  const server = getWorkload(c, 'server-0');
  t.same(server.locality, { region: 'eu', zone: 'eu-1', subzone: '' });
  t.same(server.authorizationPolicies, ['default/server-allow-client']);
  t.same([...server.services], [['default/server.default.svc.cluster.local', new Map([[80, 8080]])]]);
  t.equal(getWorkload(c, 'legacy-0').protocol, 'TCP');

  const svc = getService(c, 'server');
  t.equal(svc.hostname, 'server.default.svc.cluster.local');
  t.same(svc.vips, [{ network: '', address: '10.96.0.10' }]);
  t.same([...svc.ports], [[80, 8080]]);
  t.equal(svc.canonical, true);
  t.equal(svc.visibility, 'Public');
  t.same(svc.loadBalancer, { routingPreferences: ['Network', 'Region', 'Zone'], mode: 'Failover', healthPolicy: 'OnlyHealthy' });
  t.same(
    [...svc.endpoints.keys()].sort(),
    ['cluster1//v1/Pod/default/legacy-0', 'cluster1//v1/Pod/default/server-0'],
    'endpoints joined from the workloads',
  );
  t.same(svc.endpoints.get('cluster1//v1/Pod/default/server-0'), {
    workloadUid: 'cluster1//v1/Pod/default/server-0',
    port: new Map([[80, 8080]]),
    status: 'Healthy',
  });

  const [allow, deny] = c.policies;
  t.match(allow, { name: 'server-allow-client', namespace: 'default', scope: 'WorkloadSelector', action: 'Allow', dryRun: false });
  t.same(allow?.rules, [[[buildMatch({ principals: [{ kind: 'Exact', value: 'cluster.local/ns/default/sa/client' }], destinationPorts: [8080] })]]]);
  t.match(deny, { name: 'no-admin-port', scope: 'Namespace', action: 'Deny' });
  t.same(deny?.rules, [[[buildMatch({ destinationPorts: [9000] })]]]);
});

t.test('minimal file: defaults applied', async (t) => {
  const c = loadLocalConfigFile(fixture('minimal.yaml'));
  t.same(c.services, []);
  t.same(c.policies, []);
  t.same(c.workloads, [
    {
      uid: 'cluster1//v1/Pod/default/app',
      name: 'app',
      namespace: 'default',
      serviceAccount: 'default',
      trustDomain: 'cluster.local',
      workloadIps: ['10.0.0.1'],
      hostname: '',
      network: '',
      protocol: 'TCP',
      networkMode: 'Standard',
      node: '',
      waypoint: undefined,
      networkGateway: undefined,
      nativeTunnel: false,
      applicationTunnel: undefined,
      authorizationPolicies: [],
      status: 'Healthy',
      clusterId: '',
      locality: undefined,
      workloadName: '',
      workloadType: '',
      canonicalName: '',
      canonicalRevision: '',
      capacity: 1,
      services: new Map(),
    } satisfies Workload,
  ]);
});

t.test('examples/localhost.yaml is valid', async (t) => {
  const c = loadLocalConfigFile(example);
  t.same(
    c.workloads.map((w) => [w.name, w.workloadIps, w.protocol]),
    [
      ['client', ['127.0.0.1'], 'HBONE'],
      ['echo-0', ['127.0.0.2'], 'HBONE'],
    ],
  );
  t.same([...getService(c, 'echo').endpoints.keys()], ['cluster1//v1/Pod/default/echo-0']);
  t.same(getService(c, 'echo').vips, [{ network: '', address: '127.10.0.1' }]);
});

t.test('empty documents and empty sections', async (t) => {
  t.equal(parseLocalConfig('', 'empty.yaml'), EMPTY_LOCAL_CONFIG);
  t.equal(parseLocalConfig('# only a comment\n', 'empty.yaml'), EMPTY_LOCAL_CONFIG);
  t.same(parseLocalConfig('workloads:\nservices: []\npolicies: ~\n', 'x.yaml'), { workloads: [], services: [], policies: [] });
  t.ok(Object.isFrozen(EMPTY_LOCAL_CONFIG) && Object.isFrozen(EMPTY_LOCAL_CONFIG.workloads));
});

t.test('result is deep-frozen', async (t) => {
  const c = loadLocalConfigFile(fixture('full.yaml'));
  const w = c.workloads[0] as Workload;
  t.ok(Object.isFrozen(c));
  t.ok(Object.isFrozen(c.workloads));
  t.ok(Object.isFrozen(w));
  t.ok(Object.isFrozen(w.workloadIps));
  t.ok(Object.isFrozen(c.policies[0]?.rules[0]?.[0]?.[0]?.principals[0]));
  t.ok(Object.isFrozen(c.services[0]?.endpoints.get('cluster1//v1/Pod/default/server-0')));
  t.throws(() => {
    c.workloads.push(w);
  }, TypeError);
  t.throws(() => {
    (w as { name: string }).name = 'x';
  }, TypeError);
});

t.test('workload fields', async (t) => {
  const c = parseLocalConfig(
    `
workloads:
- uid: c9//v1/Pod/ns1/explicit
  namespace: ns1
  workloadIps: ["::ffff:10.1.2.3", "2001:DB8:0:0:0:0:0:1"]
  clusterId: c9
  network: net1
  networkMode: HostNetwork
  hostname: db.example.com
  waypoint: {destination: "/10.0.0.9", hboneMtlsPort: 15008}
  networkGateway: {destination: "istio-system/eastwest.example.com", hboneMtlsPort: "15009"}
  nativeTunnel: true
  applicationTunnel: {protocol: PROXY, port: 15088}
  status: Unhealthy
  capacity: 3
- name: derived
  namespace: ns2
  clusterId: c2
  serviceAccount: ""
  trustDomain: ""
  workloadIps: []
  waypoint: {destination: "ns2/waypoint.ns2.svc.cluster.local"}
  applicationTunnel: {}
`,
    'w.yaml',
  );
  const [a, b] = c.workloads as [Workload, Workload];
  t.equal(a.uid, 'c9//v1/Pod/ns1/explicit');
  t.equal(a.name, '');
  t.same(a.workloadIps, ['10.1.2.3', '2001:db8::1'], 'IPv4-mapped becomes IPv4; IPv6 canonical');
  t.match(a, { network: 'net1', networkMode: 'HostNetwork', hostname: 'db.example.com', nativeTunnel: true, status: 'Unhealthy', capacity: 3 });
  t.same(a.waypoint, { destination: '/10.0.0.9', hboneMtlsPort: 15008 });
  t.same(a.networkGateway, { destination: 'istio-system/eastwest.example.com', hboneMtlsPort: 15009 });
  t.same(a.applicationTunnel, { protocol: 'PROXY', port: 15088 });
  t.equal(b.uid, 'c2//v1/Pod/ns2/derived', 'uid derived from the workload clusterId');
  t.equal(b.serviceAccount, 'default', 'empty serviceAccount defaults');
  t.equal(b.trustDomain, 'cluster.local', 'empty trustDomain defaults');
  t.same(b.workloadIps, []);
  t.same(b.waypoint, { destination: 'ns2/waypoint.ns2.svc.cluster.local', hboneMtlsPort: 15008 });
  t.same(b.applicationTunnel, { protocol: 'NONE', port: undefined });
});

t.test('service fields', async (t) => {
  const c = parseLocalConfig(
    `
services:
- name: s
  namespace: ns
  hostname: s.ns.svc.cluster.local
  vips: ["net1/10.96.0.1", "10.96.0.2", "/fd00::0001"]
  cidrVips: [{network: net1, cidr: 10.97.0.0/16}, {cidr: "::ffff:10.98.0.0/112"}]
  ports: {"80": 8080, 443: 0}
  subjectAltNames: ["spiffe://cluster.local/ns/ns/sa/other"]
  waypoint: {destination: "ns/wp.ns.svc.cluster.local", hboneMtlsPort: 15008}
  ipFamilies: IPv4
  visibility: Namespace
  loadBalancer: {routingPreferences: [Node]}
`,
    's.yaml',
  );
  const s = c.services[0] as Service;
  t.same(s.vips, [
    { network: 'net1', address: '10.96.0.1' },
    { network: '', address: '10.96.0.2' },
    { network: '', address: 'fd00::1' },
  ]);
  t.same(s.cidrVips, [
    { network: 'net1', cidr: '10.97.0.0/16' },
    { network: '', cidr: '10.98.0.0/16' },
  ]);
  t.same([...s.ports], [[80, 8080], [443, 0]], 'string and int keys; targetPort 0 allowed');
  t.same(s.subjectAltNames, ['spiffe://cluster.local/ns/ns/sa/other']);
  t.match(s, { ipFamilies: 'IPv4', visibility: 'Namespace', canonical: false });
  t.same(s.loadBalancer, { routingPreferences: ['Node'], mode: 'Standard', healthPolicy: 'OnlyHealthy' });
  t.equal(s.endpoints.size, 0);
});

t.test('endpoints: joined from workloads, given directly, staged', async (t) => {
  const c = parseLocalConfig(
    `
workloads:
- name: up
  namespace: ns
  workloadIps: ["10.0.0.1"]
  services:
    ns/s.ns.svc.cluster.local: {80: 9080}
- name: down
  namespace: ns
  workloadIps: ["10.0.0.2"]
  status: Unhealthy
  services:
    ns/s.ns.svc.cluster.local: {80: 9081}
    ns/missing.ns.svc.cluster.local: {1: 2}
services:
- name: s
  namespace: ns
  hostname: s.ns.svc.cluster.local
  vips: []
  ports: {80: 0}
  endpoints:
    direct-uid: {port: {80: 7000}}
    cluster1//v1/Pod/ns/up: {workloadUid: cluster1//v1/Pod/ns/up, port: {80: 1}, status: Unhealthy}
    other-uid: {workloadUid: other-uid, status: Unhealthy}
`,
    'e.yaml',
  );
  const s = c.services[0] as Service;
  t.same(Object.fromEntries([...s.endpoints].map(([k, e]) => [k, { ...e, port: [...e.port] }])), {
    'direct-uid': { workloadUid: 'direct-uid', port: [[80, 7000]], status: 'Healthy' },
    // the workload's own services entry replaces the direct endpoint of the same uid
    'cluster1//v1/Pod/ns/up': { workloadUid: 'cluster1//v1/Pod/ns/up', port: [[80, 9080]], status: 'Healthy' },
    'other-uid': { workloadUid: 'other-uid', port: [], status: 'Unhealthy' },
    'cluster1//v1/Pod/ns/down': { workloadUid: 'cluster1//v1/Pod/ns/down', port: [[80, 9081]], status: 'Unhealthy' },
  });
  const down = getWorkload(c, 'down');
  t.same([...down.services.keys()], ['ns/s.ns.svc.cluster.local', 'ns/missing.ns.svc.cluster.local'], 'unknown service kept');
});

t.test('policies: string matches, service accounts, CIDRs, ports', async (t) => {
  const c = parseLocalConfig(
    `
policies:
- name: p
  namespace: ns
  scope: Global
  action: Deny
  dryRun: true
  rules:
  - - - namespaces: [{Prefix: team-}, {Suffix: -prod}, {Presence: []}, {Presence: }, {Presence: {}}, !Exact literal]
        notNamespaces: [{Exact: kube-system}]
        principals: [!Prefix "cluster.local/ns/a/"]
        notPrincipals: [!Presence ""]
        serviceAccounts: [{namespace: a, serviceAccount: b}]
        notServiceAccounts: [{namespace: c, serviceAccount: d}]
        sourceIps: [10.0.0.0/8, 10.1.2.3, "2001:db8::/32"]
        notSourceIps: ["::1"]
        destinationIps: ["192.168.0.0/16"]
        notDestinationIps: ["0.0.0.0/0"]
        destinationPorts: [80, "443"]
        notDestinationPorts: [22]
      - {}
    - - principals: [{Exact: x}]
  - []
`,
    'p.yaml',
  );
  const p = c.policies[0];
  t.match(p, { scope: 'Global', action: 'Deny', dryRun: true });
  t.same(p?.rules[0]?.[0]?.[0], {
    namespaces: [
      { kind: 'Prefix', value: 'team-' },
      { kind: 'Suffix', value: '-prod' },
      { kind: 'Presence' },
      { kind: 'Presence' },
      { kind: 'Presence' },
      { kind: 'Exact', value: 'literal' },
    ],
    notNamespaces: [{ kind: 'Exact', value: 'kube-system' }],
    principals: [{ kind: 'Prefix', value: 'cluster.local/ns/a/' }],
    notPrincipals: [{ kind: 'Presence' }],
    serviceAccounts: [{ namespace: 'a', serviceAccount: 'b' }],
    notServiceAccounts: [{ namespace: 'c', serviceAccount: 'd' }],
    sourceIps: ['10.0.0.0/8', '10.1.2.3/32', '2001:db8::/32'],
    notSourceIps: ['::1/128'],
    destinationIps: ['192.168.0.0/16'],
    notDestinationIps: ['0.0.0.0/0'],
    destinationPorts: [80, 443],
    notDestinationPorts: [22],
  } satisfies Match);
  t.same(p?.rules[0]?.[0]?.[1], buildMatch());
  t.same(p?.rules[0]?.[1], [buildMatch({ principals: [{ kind: 'Exact', value: 'x' }] })]);
  t.same(p?.rules[1], []);
});

t.test('LOCAL_XDS inline source and YAML anchors', async (t) => {
  const c = parseLocalConfig(
    'workloads:\n- &w {name: a, namespace: ns, workloadIps: ["10.0.0.1"]}\n- {name: b, namespace: ns, workloadIps: []}\n',
    'LOCAL_XDS',
  );
  t.equal(c.workloads.length, 2);
  const err = configError(() => parseLocalConfig('workloads: {}', 'LOCAL_XDS'));
  t.equal(err.message, "LOCAL_XDS: workloads: expected a list, got a map (line 1)");
});

t.test('file errors name the file and the line', async (t) => {
  const bad = fixture('bad-ip.yaml');
  const e1 = configError(() => loadLocalConfigFile(bad));
  t.equal(e1.code, 'ZT_ERR_CONFIG_INVALID');
  t.equal(e1.message, `${bad}: workloads[1].workloadIps[0]: '10.0.0.300' is not an IP address (line 8)`);

  const malformed = fixture('malformed.yaml');
  const e2 = configError(() => loadLocalConfigFile(malformed));
  // yaml reads the over-indented key as a continuation of line 3's value
  t.match(e2.message, `${malformed}: invalid YAML at line 3, column 14: `);

  const missing = fixture('does-not-exist.yaml');
  const e3 = configError(() => loadLocalConfigFile(missing));
  t.equal(e3.code, 'ZT_ERR_CONFIG_INVALID');
  t.equal(e3.message, `${missing}: cannot read the local config file: no such file`);

  const dir = fixture('');
  t.match(configError(() => loadLocalConfigFile(dir)).message, `${dir}: cannot read the local config file: `);
});

// Each row: YAML, the key path, the problem. Every message must read "<file>: <path>: <problem>".
const W = (extra: string): string => `workloads:\n- name: a\n  namespace: ns\n  workloadIps: []\n${extra}`;
const S = (extra: string, base = 'vips: []\n  ports: {80: 8080}'): string =>
  `services:\n- name: s\n  namespace: ns\n  hostname: s.ns.svc\n  ${base}\n${extra}`;
const P = (rules: string, extra = ''): string =>
  `policies:\n- name: p\n  namespace: ns\n  scope: Global\n  action: Allow\n${extra}  rules: ${rules}\n`;

const BAD: [string, string, string][] = [
  // top level
  ['- a\n- b\n', '', 'expected a map, got a list'],
  ['workload: []\n', '', "unknown key 'workload' (did you mean 'workloads'?)"],
  ['hello\n', '', "expected a map, got string 'hello'"],
  ['policies: {}\n', 'policies', 'expected a list, got a map'],
  // workloads
  [W('  serviceacount: sa\n'), 'workloads[0]', "unknown key 'serviceacount' (did you mean 'serviceAccount'?)"],
  [W('  colour: red\n'), 'workloads[0]', "unknown key 'colour' (allowed: uid, name, namespace"],
  ['workloads:\n- name: a\n  workloadIps: []\n', 'workloads[0]', "missing required key 'namespace'"],
  ['workloads:\n- name: a\n  namespace: ns\n', 'workloads[0]', "missing required key 'workloadIps'"],
  ['workloads:\n- namespace: ns\n  workloadIps: []\n', 'workloads[0]', "missing required key 'name' (needed to derive 'uid'"],
  ['workloads:\n- name: a\n  namespace: ns\n  workloadIps: ~\n', 'workloads[0]', "missing required key 'workloadIps'"],
  ['workloads:\n- name: a\n  namespace: 7\n  workloadIps: []\n', 'workloads[0].namespace', 'expected a string, got number 7 (quote it'],
  [W('  canonicalRevision: 1\n'), 'workloads[0].canonicalRevision', 'expected a string, got number 1'],
  [W('  name2: x\n'), 'workloads[0]', "unknown key 'name2' (did you mean 'name'?)"],
  ['workloads:\n- name: a\n  namespace: ns\n  workloadIps: "10.0.0.1"\n', 'workloads[0].workloadIps', "expected a list, got string '10.0.0.1'"],
  ['workloads:\n- name: a\n  namespace: ns\n  workloadIps: ["10.0.0.300"]\n', 'workloads[0].workloadIps[0]', "'10.0.0.300' is not an IP address"],
  ['workloads:\n- name: a\n  namespace: ns\n  workloadIps: ["fe80::1%eth0"]\n', 'workloads[0].workloadIps[0]', "'fe80::1%eth0' is not an IP address"],
  ['workloads:\n- name: a\n  namespace: ns\n  workloadIps: [010.0.0.1]\n', 'workloads[0].workloadIps[0]', "'010.0.0.1' is not an IP address"],
  [W('  protocol: tcp\n'), 'workloads[0].protocol', "expected one of TCP, HBONE, got string 'tcp'"],
  [W('  networkMode: Host\n'), 'workloads[0].networkMode', 'expected one of Standard, HostNetwork'],
  [W('  status: Ready\n'), 'workloads[0].status', 'expected one of Healthy, Unhealthy'],
  [W('  nativeTunnel: "yes"\n'), 'workloads[0].nativeTunnel', "expected true or false, got string 'yes'"],
  [W('  capacity: -1\n'), 'workloads[0].capacity', 'expected an integer (0-4294967295), got number -1'],
  [W('  capacity: 1.5\n'), 'workloads[0].capacity', 'expected an integer'],
  [W('  locality: {region: eu, zone: z}\n'), 'workloads[0].locality', "missing required key 'subzone'"],
  [W('  waypoint: {destination: "10.0.0.1", hboneMtlsPort: 15008}\n'), 'workloads[0].waypoint.destination', "'10.0.0.1' is not of the form network/IP or namespace/hostname"],
  [W('  waypoint: {destination: "/not-an-ip"}\n'), 'workloads[0].waypoint.destination', "'/not-an-ip' is neither network/IP nor namespace/hostname"],
  [W('  waypoint: {destination: "/10.0.0.1", hboneMtlsPort: 0}\n'), 'workloads[0].waypoint.hboneMtlsPort', 'expected a port number (1-65535), got number 0'],
  [W('  waypoint: {destination: "/10.0.0.1", port: 1}\n'), 'workloads[0].waypoint', "unknown key 'port'"],
  [W('  applicationTunnel: {protocol: HTTP}\n'), 'workloads[0].applicationTunnel.protocol', 'expected one of NONE, PROXY'],
  [W('  applicationTunnel: {port: 70000}\n'), 'workloads[0].applicationTunnel.port', 'expected a port number (1-65535), got number 70000'],
  [W('  authorizationPolicies: [just-a-name]\n'), 'workloads[0].authorizationPolicies[0]', "'just-a-name' is not of the form namespace/name"],
  [W('  services: []\n'), 'workloads[0].services', 'expected a map of namespace/hostname'],
  [W('  services: {svc-without-namespace: {80: 80}}\n'), 'workloads[0].services', "key 'svc-without-namespace' is not of the form namespace/hostname"],
  [W('  services: {ns/s: {http: 80}}\n'), 'workloads[0].services["ns/s"]', "key 'http' is not a port number (1-65535)"],
  [W('  services: {ns/s: {0: 80}}\n'), 'workloads[0].services["ns/s"]', "key '0' is not a port number (1-65535)"],
  [W('  services: {ns/s: {80: 65536}}\n'), 'workloads[0].services["ns/s"][80]', 'expected a target port number (0-65535), got number 65536'],
  [W('  services: {ns/s: {80: 1, "80": 2}}\n'), 'workloads[0].services["ns/s"]', 'port 80 appears twice'],
  [
    'workloads:\n- {name: a, namespace: ns, workloadIps: []}\n- {uid: cluster1//v1/Pod/ns/a, namespace: ns, workloadIps: []}\n',
    'workloads[1].uid',
    "duplicate uid 'cluster1//v1/Pod/ns/a' (also workloads[0])",
  ],
  // services
  ['services:\n- name: s\n  namespace: ns\n  vips: []\n  ports: {}\n', 'services[0]', "missing required key 'hostname'"],
  ['services:\n- name: s\n  namespace: ns\n  hostname: h\n  ports: {}\n', 'services[0]', "missing required key 'vips'"],
  ['services:\n- name: s\n  namespace: ns\n  hostname: h\n  vips: []\n', 'services[0]', "missing required key 'ports'"],
  [S('', 'vips: []\n  ports: {http: 80}'), 'services[0].ports', "key 'http' is not a port number (1-65535)"],
  [S('', 'vips: []\n  ports: {65536: 80}'), 'services[0].ports', "key '65536' is not a port number (1-65535)"],
  [S('', 'vips: []\n  ports: {80: -1}'), 'services[0].ports[80]', 'expected a target port number (0-65535)'],
  [S('', 'vips: []\n  ports: [80]'), 'services[0].ports', 'expected a map of servicePort: targetPort, got a list'],
  [S('', 'vips: ["/10.96.0.300"]\n  ports: {}'), 'services[0].vips[0]', "'/10.96.0.300' is not of the form network/IP"],
  [S('  cidrVips: [{cidr: 10.0.0.0/33}]\n'), 'services[0].cidrVips[0].cidr', "'10.0.0.0/33' is not a CIDR"],
  [S('  cidrVips: [{network: n}]\n'), 'services[0].cidrVips[0]', "missing required key 'cidr'"],
  [S('  subjectAltNames: ["cluster.local/ns/a/sa/b"]\n'), 'services[0].subjectAltNames[0]', "'cluster.local/ns/a/sa/b' is not a SPIFFE URI"],
  [S('  subjectAltNames: ["spiffe://td/ns/a"]\n'), 'services[0].subjectAltNames[0]', "'spiffe://td/ns/a' is not a SPIFFE URI of the form spiffe://<trust domain>/ns/<namespace>/sa/<service account>"],
  [S('  ipFamilies: ipv4\n'), 'services[0].ipFamilies', 'expected one of Dual, IPv4, IPv6'],
  [S('  visibility: Private\n'), 'services[0].visibility', 'expected one of Public, Namespace'],
  [S('  canonical: 1\n'), 'services[0].canonical', 'expected true or false, got number 1'],
  [S('  loadBalancer: {mode: RoundRobin}\n'), 'services[0].loadBalancer.mode', 'expected one of Standard, Strict, Failover, Passthrough'],
  [S('  loadBalancer: {routingPreferences: [Planet]}\n'), 'services[0].loadBalancer.routingPreferences[0]', 'expected one of Region, Zone, Subzone, Node, Cluster, Network'],
  [S('  loadBalancer: {healthPolicy: Any}\n'), 'services[0].loadBalancer.healthPolicy', 'expected one of OnlyHealthy, AllowAll'],
  [S('  weightedWaypoints: [{destination: {destination: "/1.1.1.1", hboneMtlsPort: 15008}, weight: 1}]\n'), 'services[0].weightedWaypoints', 'is not supported by ztunnel-ts'],
  [S('  endpoints: {u1: {workloadUid: u2}}\n'), 'services[0].endpoints.u1.workloadUid', "'u2' differs from its key 'u1'"],
  [S('  endpoints: {u1: {status: Up}}\n'), 'services[0].endpoints.u1.status', 'expected one of Healthy, Unhealthy'],
  [S('  endpoints: {u1: {ports: {80: 80}}}\n'), 'services[0].endpoints.u1', "unknown key 'ports' (did you mean 'port'?)"],
  [S('  endpoints: [u1]\n'), 'services[0].endpoints', 'expected a map of workload uid: endpoint, got a list'],
  [
    `${S('')}- {name: s2, namespace: ns, hostname: s.ns.svc, vips: [], ports: {}}\n`,
    'services[1]',
    "duplicate service 'ns/s.ns.svc' (also services[0])",
  ],
  // policies
  ['policies:\n- {name: p, namespace: ns, action: Allow, rules: []}\n', 'policies[0]', "missing required key 'scope'"],
  ['policies:\n- {name: p, namespace: ns, scope: Global, rules: []}\n', 'policies[0]', "missing required key 'action'"],
  ['policies:\n- {name: p, namespace: ns, scope: Global, action: Allow}\n', 'policies[0]', "missing required key 'rules'"],
  [P('[]', '  scope2: x\n'), 'policies[0]', "unknown key 'scope2' (did you mean 'scope'?)"],
  ['policies:\n- {name: p, namespace: ns, scope: Cluster, action: Allow, rules: []}\n', 'policies[0].scope', 'expected one of Global, Namespace, WorkloadSelector'],
  ['policies:\n- {name: p, namespace: ns, scope: Global, action: Audit, rules: []}\n', 'policies[0].action', 'expected one of Allow, Deny'],
  [P('[]', '  dryRun: "false"\n'), 'policies[0].dryRun', "expected true or false, got string 'false'"],
  [P('[{principals: []}]'), 'policies[0].rules[0]', 'expected a list, got a map'],
  [P('[[{principals: []}]]'), 'policies[0].rules[0][0]', 'expected a list, got a map'],
  [P('[[[{principal: []}]]]'), 'policies[0].rules[0][0][0]', "unknown key 'principal' (did you mean 'principals'?)"],
  [P('[[[{principals: [foo]}]]]'), 'policies[0].rules[0][0][0].principals[0]', "expected a string match: {Exact: v}, {Prefix: v}, {Suffix: v} or {Presence: []}, got string 'foo' (did you mean {Exact: foo}?)"],
  [P('[[[{principals: [{Exact: a, Prefix: b}]}]]]'), 'policies[0].rules[0][0][0].principals[0]', 'expected a string match: {Exact: v}, {Prefix: v}, {Suffix: v} or {Presence: []} (exactly one key), got 2 keys'],
  [P('[[[{principals: [{Regex: a}]}]]]'), 'policies[0].rules[0][0][0].principals[0]', "unknown key 'Regex'"],
  [P('[[[{principals: [{Presence: [x]}]}]]]'), 'policies[0].rules[0][0][0].principals[0].Presence', 'expected [], {} or null, got a list'],
  [P('[[[{namespaces: [{Exact: 5}]}]]]'), 'policies[0].rules[0][0][0].namespaces[0].Exact', 'expected a string, got number 5'],
  [P('[[[{namespaces: [!Glob "a*"]}]]]'), 'policies[0].rules[0][0][0].namespaces[0]', "unknown tag '!Glob'"],
  [P('[[[{serviceAccounts: [{namespace: a}]}]]]'), 'policies[0].rules[0][0][0].serviceAccounts[0]', "missing required key 'serviceAccount'"],
  [P('[[[{sourceIps: [10.0.0.0/40]}]]]'), 'policies[0].rules[0][0][0].sourceIps[0]', "'10.0.0.0/40' is not a CIDR"],
  [P('[[[{notDestinationIps: [bad]}]]]'), 'policies[0].rules[0][0][0].notDestinationIps[0]', "'bad' is not a CIDR"],
  [P('[[[{destinationPorts: [0]}]]]'), 'policies[0].rules[0][0][0].destinationPorts[0]', 'expected a port number (1-65535), got number 0'],
  [P('[[[{notDestinationPorts: [http]}]]]'), 'policies[0].rules[0][0][0].notDestinationPorts[0]', "expected a port number (1-65535), got string 'http'"],
  [P('[[[{destinationPorts: 80}]]]'), 'policies[0].rules[0][0][0].destinationPorts', 'expected a list, got number 80'],
  [`${P('[]')}${P('[]').replace('policies:\n', '')}`, 'policies[1]', "duplicate policy 'ns/p' (also policies[0])"],
  // YAML-level problems
  [W('  protocol: !Tcp TCP\n'), 'workloads[0].protocol', "unexpected tag '!Tcp'"],
  [W('  hostname: !Exact h\n'), 'workloads[0].hostname', "unexpected tag '!Exact'"],
  ['x: &a [*a]\n', '', "alias '*a' refers to itself"],
  [
    'a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n' +
      'd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n',
    '',
    'aliases expand to more than 100000 nodes',
  ],
];

t.test('bad inputs: source, key path and problem in the message', async (t) => {
  for (const [yaml, path, problem] of BAD) {
    const err = configError(() => parseLocalConfig(yaml, 'tests/fixtures/bad.yaml'));
    const prefix = path === '' ? 'tests/fixtures/bad.yaml: ' : `tests/fixtures/bad.yaml: ${path}: `;
    t.equal(err.code, 'ZT_ERR_CONFIG_INVALID');
    t.ok(err.message.startsWith(prefix + problem), `${JSON.stringify(yaml)}\n  got:  ${err.message}\n  want: ${prefix}${problem}…`);
    t.match(err.message, /\(line \d+\)$/, 'ends with the line');
  }
});

t.test('malformed YAML: line and column', async (t) => {
  const cases: [string, RegExp][] = [
    ['workloads:\n- {name: a\n', /^m\.yaml: invalid YAML at line 3, column 1: /],
    ['a: 1\na: 2\n', /^m\.yaml: invalid YAML at line 2, column 1: Map keys must be unique/],
    ['a: 1\n---\nb: 2\n', /^m\.yaml: invalid YAML at line 2, column 1: a local config holds exactly one YAML document/],
    ['a: "unterminated\n', /^m\.yaml: invalid YAML at line 2, column 1: Missing closing "quote/],
    ['\tfoo: 1\n', /^m\.yaml: invalid YAML at line 1, column 1: Tabs are not allowed as indentation/],
  ];
  for (const [yaml, re] of cases) {
    t.match(configError(() => parseLocalConfig(yaml, 'm.yaml')).message, re, JSON.stringify(yaml));
  }
});

t.test('line numbers point at the offending node', async (t) => {
  const yaml = 'workloads:\n- name: a\n  namespace: ns\n  workloadIps: []\n  protocol: HBONEE\n';
  t.match(configError(() => parseLocalConfig(yaml, 'l.yaml')).message, /protocol: .*\(line 5\)$/);
  const missing = 'services:\n- name: s\n  namespace: ns\n  hostname: h\n  vips: []\n- name: t\n';
  t.match(configError(() => parseLocalConfig(missing, 'l.yaml')).message, /^l\.yaml: services\[0\]: missing required key 'ports' \(line 2\)$/);
});

t.test('IP and CIDR canonical forms', async (t) => {
  const ips: [string, string | undefined][] = [
    ['10.0.0.1', '10.0.0.1'],
    ['0.0.0.0', '0.0.0.0'],
    ['255.255.255.255', '255.255.255.255'],
    ['256.0.0.1', undefined],
    ['1.2.3', undefined],
    ['01.2.3.4', undefined],
    ['::', '::'],
    ['::1', '::1'],
    ['2001:0DB8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
    ['2001:db8:0:1:0:0:1:0', '2001:db8:0:1::1:0'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'],
    ['1:2:3:4:5:6:7:8', '1:2:3:4:5:6:7:8'],
    ['1:0:3:4:5:6:7:8', '1:0:3:4:5:6:7:8'],
    ['1:2:3:4:5:6:7::', '1:2:3:4:5:6:7:0'],
    ['::ffff:192.168.1.1', '192.168.1.1'],
    ['::FFFF:c0a8:0101', '192.168.1.1'],
    ['64:ff9b::1.2.3.4', '64:ff9b::102:304'],
    ['1::2::3', undefined],
    ['1:2:3:4:5:6:7:8:9', undefined],
    ['12345::', undefined],
    ['::ffff:1.2.3', undefined],
    ['', undefined],
    ['localhost', undefined],
  ];
  for (const [text, want] of ips) t.equal(canonicalIp(text), want, text);
  const cidrs: [string, string | undefined][] = [
    ['10.0.0.0/8', '10.0.0.0/8'],
    ['10.1.2.3', '10.1.2.3/32'],
    ['10.0.0.0/0', '10.0.0.0/0'],
    ['::/0', '::/0'],
    ['2001:DB8::/32', '2001:db8::/32'],
    ['::ffff:10.0.0.0/104', '10.0.0.0/8'],
    ['::ffff:0:0/80', '::ffff:0:0/80'],
    ['10.0.0.0/33', undefined],
    ['10.0.0.0/', undefined],
    ['10.0.0.0/08', undefined],
    ['::/129', undefined],
  ];
  for (const [text, want] of cidrs) t.equal(canonicalCidr(text), want, text);
});
