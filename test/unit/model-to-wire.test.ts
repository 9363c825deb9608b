// src/control-plane/model-to-wire.ts is the inverse of the xDS mappers: every workload,
// service and policy of the local-config fixtures (and of the wire fixtures' mesh, re-encoded)
// goes model → protobuf bytes → addressBytesToModel / authorizationBytesToModel and comes back
// equal (services without their endpoints, which travel in the workloads' `services` maps).

import fs from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { parseLocalConfig } from '../../src/config/local-config.js';
import type { LocalConfig, Service, Workload } from '../../src/config/types.js';
import { authorizationBytes, ipBytes, serviceBytes, workloadBytes } from '../../src/control-plane/model-to-wire.js';
import { addressBytesToModel } from '../../src/xds/address-to-model.js';
import { authorizationBytesToModel } from '../../src/xds/authorization-to-model.js';
import { buildMatch, buildPolicy, buildService, buildWorkload } from '../helpers/fixtures.js';

const ROOT = path.resolve(import.meta.dirname, '../..');
const sources: [string, LocalConfig][] = [
  ['examples/localhost.yaml', parseLocalConfig(fs.readFileSync(path.join(ROOT, 'examples/localhost.yaml'), 'utf8'), 'localhost.yaml')],
  ['test/fixtures/local-config/full.yaml', parseLocalConfig(fs.readFileSync(path.join(ROOT, 'test/fixtures/local-config/full.yaml'), 'utf8'), 'full.yaml')],
  [
    'built',
    {
      workloads: [
        buildWorkload({ uid: 'w6', workloadIps: ['fd00::1', '10.0.0.9'], protocol: 'HBONE', waypoint: { destination: 'default/wp.default.svc.cluster.local', hboneMtlsPort: 15008 } }),
        buildWorkload({ uid: 'w7', networkGateway: { destination: 'net2/192.168.1.1', hboneMtlsPort: 15009 }, applicationTunnel: { protocol: 'PROXY', port: 8080 } }),
      ],
      services: [
        buildService({
          cidrVips: [{ network: '', cidr: '10.1.0.0/16' }, { network: 'n', cidr: 'fd00:1::/64' }],
          loadBalancer: { routingPreferences: ['Network', 'Node'], mode: 'Failover', healthPolicy: 'AllowAll' },
          ipFamilies: 'Dual',
          visibility: 'Namespace',
        }),
      ],
      policies: [
        buildPolicy([[[buildMatch({ principals: [{ kind: 'Prefix', value: 'spiffe://a' }], sourceIps: ['10.0.0.0/8'], notDestinationPorts: [22] })]], [[buildMatch({ namespaces: [{ kind: 'Presence' }] })]]], {
          action: 'Deny',
          dryRun: true,
          scope: 'Namespace',
        }),
      ],
    },
  ],
];

const withoutEndpoints = (s: Service): Service => ({ ...s, endpoints: new Map() });
// The YAML's unset workloadType is '', the proto's is DEPLOYMENT (its zero value), which the
// mapper names 'deployment' — as upstream's two loaders do.
const asPushed = (w: Workload): Workload => (w.workloadType === '' ? { ...w, workloadType: 'deployment' } : w);

for (const [name, mesh] of sources) {
  t.test(`round trip: ${name}`, async (t) => {
    t.ok(mesh.workloads.length + mesh.services.length + mesh.policies.length > 0, 'the fixture has resources');
    for (const w of mesh.workloads) {
      const back = addressBytesToModel(w.uid, workloadBytes(w));
      t.same(back, { ok: true, value: { kind: 'workload', workload: asPushed(w) } }, `workload ${w.uid}`);
    }
    for (const s of mesh.services) {
      const back = addressBytesToModel(`${s.namespace}/${s.hostname}`, serviceBytes(s));
      t.same(back, { ok: true, value: { kind: 'service', service: withoutEndpoints(s) } }, `service ${s.hostname}`);
    }
    for (const p of mesh.policies) {
      const back = authorizationBytesToModel(`${p.namespace}/${p.name}`, authorizationBytes(p));
      t.same(back, { ok: true, value: p }, `policy ${p.name}`);
    }
  });
}

t.test('ipBytes: network order, both families; refuses non-IPs', async (t) => {
  t.same([...ipBytes('10.1.2.3')], [10, 1, 2, 3]);
  t.same([...ipBytes('::1')], [...Array(15).fill(0), 1]);
  t.same([...ipBytes('fd00::ff01')].slice(0, 2), [0xfd, 0]);
  t.same([...ipBytes('fd00::ff01')].slice(14), [0xff, 1]);
  t.throws(() => ipBytes('nope'), /not an IP/);
});
