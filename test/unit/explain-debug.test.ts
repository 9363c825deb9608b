// The admin /debug/route and /debug/authorize endpoints over real HTTP on 127.0.0.1:0: the
// query is validated before any callback runs (a bad one is a 400 naming the parameter), the
// callback's answer is the JSON body, the endpoints exist only when the option is given, and
// wired to buildRouteDecision / buildAuthorizeDecision they answer the data path's decision.
import fs from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { Writable } from 'node:stream';
import t from 'tap';
import { closeServer, startAdminServer, type DebugAuthorizeQuery, type DebugOptions, type DebugRouteQuery } from '../../src/admin/index.js';
import { PolicyStore } from '../../src/authorize/index.js';
import { parseLocalConfig } from '../../src/config/local-config.js';
import { ZtError } from '../../src/errors.js';
import { buildAuthorizeDecision, buildRouteDecision, type AuthorizeDecision, type RouteDecision } from '../../src/explain/index.js';
import { Telemetry } from '../../src/record/telemetry.js';
import { ProxyState } from '../../src/state/proxy-state.js';

class Sink extends Writable {
  override _write(_c: Buffer, _e: BufferEncoding, cb: () => void): void {
    cb();
  }
}

async function start(t: { teardown(fn: () => unknown): void }, debug: DebugOptions | undefined): Promise<http.Server> {
  const telemetry = new Telemetry({ logFormat: 'json', logLevel: 'info', accessLogOnlyFailed: false, clusterId: 'Kubernetes', version: '0', destination: new Sink() });
  const server = await startAdminServer({ host: '127.0.0.1', port: 0, configDump: () => ({}), telemetry, onQuit: async () => undefined, debug });
  t.teardown(async () => {
    await closeServer(server);
    await telemetry.close();
  });
  return server;
}

function get(server: http.Server, target: string, method = 'GET'): Promise<{ status: number; text: string; type: string | undefined }> {
  const { port } = server.address() as AddressInfo;
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: target, method, agent: false }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => (text += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text, type: res.headers['content-type'] }));
    });
    req.on('error', reject);
    req.end();
  });
}

t.test('queries are validated before the callbacks run', async (t) => {
  const routes: DebugRouteQuery[] = [];
  const authz: DebugAuthorizeQuery[] = [];
  const server = await start(t, {
    route: (q) => {
      routes.push(q);
      return { kind: 'passthrough', asked: q };
    },
    authorize: (q) => {
      authz.push(q);
      return { decision: 'allow' };
    },
  });
  const ok = await get(server, '/debug/route?src=10.244.2.4&dst=10.96.0.10:9080');
  t.equal(ok.status, 200);
  t.equal(ok.type, 'application/json');
  t.same(JSON.parse(ok.text), { kind: 'passthrough', asked: { src: '10.244.2.4', dst: { ip: '10.96.0.10', port: 9080 } } });
  const v6 = await get(server, '/debug/route?src=fd00::4&dst=[fd00::7]:15008');
  t.equal(v6.status, 200);
  t.same(routes[1], { src: 'fd00::4', dst: { ip: 'fd00::7', port: 15008 } });

  const bad: [string, RegExp][] = [
    ['/debug/route?src=sleep&dst=10.96.0.10:9080', /^src: "sleep" is not an IP address\nusage: GET \/debug\/route/],
    ['/debug/route?src=10.244.2.4', /^missing parameter dst/],
    ['/debug/route?src=10.244.2.4&dst=10.96.0.10', /^dst: "10.96.0.10" is not IP:PORT/],
    ['/debug/route?src=10.244.2.4&dst=10.96.0.10:70000', /^dst: "10.96.0.10:70000" is not IP:PORT/],
    ['/debug/route?src=10.244.2.4&dst=10.96.0.10:80&x=1', /^unknown parameter "x"/],
    ['/debug/route?src=10.244.2.4&src=10.244.2.5&dst=10.96.0.10:80', /^parameter src given twice/],
    ['/debug/authorize?src=10.244.2.4&dst=10.244.1.7:9080&identity=sleep', /^identity: "sleep" is not spiffe:\/\//],
  ];
  for (const [target, message] of bad) {
    const r = await get(server, target);
    t.equal(r.status, 400, target);
    t.match(r.text, message, target);
  }
  t.equal(routes.length, 2, 'no callback for a bad query');
  t.equal(authz.length, 0);

  const a = await get(server, '/debug/authorize?src=10.244.2.4&dst=10.244.1.7:9080&identity=spiffe://cluster.local/ns/default/sa/sleep');
  t.equal(a.status, 200);
  t.same(authz[0], { src: '10.244.2.4', dst: { ip: '10.244.1.7', port: 9080 }, identity: 'spiffe://cluster.local/ns/default/sa/sleep' });
  await get(server, '/debug/authorize?src=10.244.2.6&dst=10.244.1.7:9080');
  t.equal(authz[1]!.identity, undefined, 'no identity: a plaintext client');

  const post = await get(server, '/debug/route?src=10.244.2.4&dst=10.96.0.10:9080', 'POST');
  t.equal(post.status, 405);
  t.match((await get(server, '/')).text, /\/debug\/route/, 'the index lists the endpoints');
});

t.test('without the option the endpoints do not exist', async (t) => {
  const server = await start(t, undefined);
  t.equal((await get(server, '/debug/route?src=10.244.2.4&dst=10.96.0.10:9080')).status, 404);
  t.notMatch((await get(server, '/')).text, /\/debug\//);
});

t.test('a refusal is a 400, a bug a 500, and the server keeps serving', async (t) => {
  let calls = 0;
  const server = await start(t, {
    route: () => {
      calls++;
      if (calls === 1) throw new ZtError('ZT_ERR_CONFIG_INVALID', 'not served by this ztunnel');
      if (calls === 2) throw new Error('boom');
      return { ok: true };
    },
    authorize: () => ({}),
  });
  const q = '/debug/route?src=10.244.2.4&dst=10.96.0.10:9080';
  const refused = await get(server, q);
  t.same([refused.status, refused.text], [400, 'not served by this ztunnel\n']);
  t.equal((await get(server, q)).status, 500);
  t.equal((await get(server, q)).status, 200);
});

t.test('wired to the decision builders, the endpoints answer the data path\'s decision', async (t) => {
  const config = parseLocalConfig(fs.readFileSync(path.resolve(import.meta.dirname, '../fixtures/explain/local-config.yaml'), 'utf8'), 'local-config.yaml');
  const state = new ProxyState(config);
  const policies = new PolicyStore(config.policies);
  const server = await start(t, {
    route: (q) => buildRouteDecision(state, { ...q, nodeName: 'ambient-worker', network: '', illegalPorts: new Set([15001, 15006, 15008]), hbonePort: 15008 }),
    authorize: (q) => buildAuthorizeDecision(state, policies, { ...q, nodeName: 'ambient-worker2', network: '' }),
  });
  const route = JSON.parse((await get(server, '/debug/route?src=10.244.2.4&dst=10.96.0.10:9080')).text) as RouteDecision;
  t.match(route, {
    kind: 'hbone',
    source: { name: 'default/sleep', node: 'ambient-worker', protocol: 'HBONE' },
    service: { hostname: 'productpage.default.svc.cluster.local', endpoints: [{ workload: 'default/productpage', weight: 1, usable: true }] },
    destination: { name: 'default/productpage', node: 'ambient-worker2' },
    actualDst: '10.244.1.7:15008',
    hboneTarget: '10.244.1.7:9080',
    expectedIdentities: ['spiffe://cluster.local/ns/default/sa/bookinfo-productpage'],
    sameNode: false,
  });
  const authz = JSON.parse((await get(server, '/debug/authorize?src=10.244.2.4&dst=10.244.1.7:9080&identity=spiffe://cluster.local/ns/default/sa/sleep')).text) as AuthorizeDecision;
  t.match(authz, { decision: 'allow', workload: { name: 'default/productpage' }, policies: [] });
  const nobody = JSON.parse((await get(server, '/debug/authorize?src=10.244.2.4&dst=10.244.9.9:80')).text) as AuthorizeDecision;
  t.equal(nobody.decision, 'unknown-workload');
});
