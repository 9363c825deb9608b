// src/xds/ads-client.ts against an in-process control plane: a grpc-js server with TLS (a
// server certificate for 127.0.0.1 signed by our CertificateAuthority's root, made with openssl)
// and a bearer-token check, speaking DeltaAggregatedResources in raw bytes so the test sees
// exactly what the client writes and pushes the wire fixtures' bytes unchanged.
// Shown: a wrong token is refused (one clear log line) and retried with backoff; the initial
// requests carry node + wildcard; the fixture responses are mapped and ACKed byte for byte as
// upstream; a malformed resource is NACKed by name while the good one beside it is applied;
// removals are honoured; after the server cuts the stream the client reconnects with
// initial_resource_versions = what it holds; a server certificate from another root is refused
// with one clear log line per attempt, retried with doubling jittered delays; a response the
// consumer throws on is NACKed whole; stop() leaves nothing running.

import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {
  Metadata,
  Server,
  ServerCredentials,
  status as GrpcStatus,
  type ServerDuplexStream,
  type ServiceDefinition,
} from '@grpc/grpc-js';
import t from 'tap';
import { makeServerPki } from '../helpers/server-pki.js';
import { AdsClient, type AdsLog, type AdsTypeUrl, type AdsUpsert } from '../../src/xds/ads-client.js';
import {
  ADDRESS_TYPE_URL,
  AddressCodec,
  AUTHORIZATION_TYPE_URL,
  DELTA_ADS_METHOD_PATH,
  DeltaDiscoveryRequestCodec,
  DeltaDiscoveryResponseCodec,
} from '../../src/xds/protos.js';
import type { WireDeltaDiscoveryRequest } from '../../src/xds/wire-types.js';
import { within } from '../helpers/within.js';

const FIXTURES = path.resolve(import.meta.dirname, '../fixtures/istio-wire');
const fixture = (name: string) => fs.readFileSync(path.join(FIXTURES, `${name}.bin`));
const fixtureJson = (name: string) => JSON.parse(fs.readFileSync(path.join(FIXTURES, `${name}.json`), 'utf8'));

const TOKEN = `good-token-${process.pid}`;
const WAIT = 10_000;
const NODE = fixtureJson('delta-request-initial').node as { id: string; metadata: Record<string, string> };

// ------------------------------------------------------------------ certificates

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), `zt-ads-${process.pid}-`));
t.teardown(() => fs.rmSync(tmp, { recursive: true, force: true }));

const pki = (name: string) => makeServerPki(tmp, name);

const mesh = pki('mesh');
const other = pki('other');

// ------------------------------------------------------------------ the control plane

const identity = (b: Buffer) => b;
const RAW_ADS: ServiceDefinition = {
  DeltaAggregatedResources: {
    path: DELTA_ADS_METHOD_PATH,
    requestStream: true,
    responseStream: true,
    requestSerialize: identity,
    requestDeserialize: identity,
    responseSerialize: identity,
    responseDeserialize: identity,
  },
};

interface Received {
  bytes: Buffer;
  req: WireDeltaDiscoveryRequest;
  stream: number;
}

class FakeIstiod {
  readonly server = new Server();
  port = 0;
  streams = 0;
  refused = 0;
  authHeaders: string[] = [];
  clusterIds: string[] = [];
  extraHeaders: string[] = [];
  received: Received[] = [];
  private call: ServerDuplexStream<Buffer, Buffer> | undefined;
  private waiters: (() => void)[] = [];

  async start(keys: { cert: string; key: string }): Promise<void> {
    this.server.addService(RAW_ADS, {
      DeltaAggregatedResources: (call: ServerDuplexStream<Buffer, Buffer>) => this.onStream(call),
    });
    const creds = ServerCredentials.createSsl(null, [{ cert_chain: Buffer.from(keys.cert), private_key: Buffer.from(keys.key) }], false);
    this.port = await new Promise<number>((resolve, reject) =>
      this.server.bindAsync('127.0.0.1:0', creds, (err, port) => (err ? reject(err) : resolve(port))),
    );
  }

  private onStream(call: ServerDuplexStream<Buffer, Buffer>): void {
    const auth = call.metadata.get('authorization').map(String);
    this.authHeaders.push(...auth);
    this.clusterIds.push(...call.metadata.get('clusterid').map(String));
    this.extraHeaders.push(...call.metadata.get('x_tenant').map(String));
    if (auth.length !== 1 || auth[0] !== `Bearer ${TOKEN}`) {
      this.refused++;
      call.emit('error', { code: GrpcStatus.UNAUTHENTICATED, details: 'authentication failure', metadata: new Metadata() });
      this.wake();
      return;
    }
    const n = ++this.streams;
    this.call = call;
    call.on('data', (bytes: Buffer) => {
      this.received.push({ bytes, req: DeltaDiscoveryRequestCodec.decode(bytes), stream: n });
      this.wake();
    });
    call.on('error', () => {});
    call.on('end', () => call.end());
    this.wake();
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Resolves when `check` holds (re-evaluated on every event), bounded. */
  until<T>(what: string, check: () => T | undefined | false, ms = WAIT): Promise<T> {
    return within(
      ms,
      new Promise<T>((resolve) => {
        const test = () => {
          const v = check();
          if (v !== undefined && v !== false) resolve(v);
          else this.waiters.push(test);
        };
        test();
      }),
      what,
    );
  }

  /** The request matching `pred` received on stream `n`. */
  request(what: string, n: number, pred: (r: WireDeltaDiscoveryRequest) => boolean): Promise<Received> {
    return this.until(what, () => this.received.find((r) => r.stream === n && pred(r.req)));
  }

  push(bytes: Uint8Array): void {
    if (this.call === undefined) throw new Error('no stream to push on');
    this.call.write(Buffer.from(bytes));
  }

  /** Ends the current stream cleanly from the server side. */
  cut(): void {
    this.call?.end();
    this.call = undefined;
  }

  async stop(): Promise<void> {
    this.server.forceShutdown();
  }
}

// ------------------------------------------------------------------ helpers

interface Applied {
  typeUrl: AdsTypeUrl;
  upserts: AdsUpsert[];
  removals: string[];
}

function recorder() {
  const lines: { level: string; message: string; nextRetryMs: number | undefined }[] = [];
  const applied: Applied[] = [];
  let client: AdsClient | undefined;
  const log: AdsLog = (level, message) => lines.push({ level, message, nextRetryMs: client?.state().nextRetryMs });
  return {
    lines,
    applied,
    log,
    onResources: (typeUrl: AdsTypeUrl, upserts: AdsUpsert[], removals: string[]) => void applied.push({ typeUrl, upserts, removals }),
    bind: (c: AdsClient) => (client = c),
  };
}

function addressResource(name: string, version: string, addresses: Buffer[]) {
  const value = AddressCodec.encode({
    workload: { uid: name, name: name.split('/').pop() ?? name, namespace: 'default', addresses, tunnel_protocol: 'HBONE', trust_domain: 'cluster.local' },
  });
  return { name, version, resource: { type_url: ADDRESS_TYPE_URL, value } };
}

async function poll<T>(what: string, check: () => T | undefined | false, ms = WAIT): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = check();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

// ------------------------------------------------------------------ tests

t.test('token, initial requests, ACK/NACK, removals, reconnect with initial_resource_versions', async (t) => {
  const istiod = new FakeIstiod();
  await istiod.start(mesh);
  t.teardown(() => istiod.stop());
  let token = 'wrong-token';
  const rec = recorder();
  const client = new AdsClient({
    address: `127.0.0.1:${istiod.port}`,
    tls: { ca: mesh.ca },
    token: () => token,
    clusterId: 'Kubernetes',
    headers: { X_TENANT: 'a' },
    node: NODE,
    typeUrls: [ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL],
    onResources: rec.onResources,
    log: rec.log,
    initialBackoffMs: 200,
    maxBackoffMs: 1000,
  });
  rec.bind(client);
  t.teardown(() => client.stop());
  client.start();

  // Wrong token: refused, one clear line, retried.
  await istiod.until('the first refused stream', () => istiod.refused >= 1);
  const refusal = await poll('the refusal log line', () => rec.lines.find((l) => /refused the token/.test(l.message)));
  t.match(refusal.message, /UNAUTHENTICATED: authentication failure; retrying in \d/);
  t.equal(refusal.level, 'warn');
  t.equal(istiod.authHeaders[0], 'Bearer wrong-token', 'bearer token sent in authorization');
  t.equal(istiod.clusterIds[0], 'Kubernetes', 'clusterid header sent');
  t.equal(istiod.extraHeaders[0], 'a', 'extra header (XDS_HEADER_X_TENANT) sent lower-cased');
  await istiod.until('a retry after the refusal', () => istiod.refused >= 2);
  const refusals = () => rec.lines.filter((l) => /refused the token/.test(l.message)).length;
  await poll('the second refusal line', () => refusals() >= 2);
  t.equal(refusals(), istiod.refused, 'one line per refused attempt');
  t.equal(rec.lines.length, refusals(), 'and nothing else logged');
  t.equal(client.state().connected, false);
  token = TOKEN; // the token file was fixed: read again on the next connect

  // Initial requests on the accepted stream: node, wildcard (empty subscribe list), nothing held.
  const initAuthz = await istiod.request('initial Authorization request', 1, (r) => r.type_url === AUTHORIZATION_TYPE_URL);
  t.ok(initAuthz.bytes.equals(fixture('delta-request-initial-authorizations')), 'initial Authorization request = the fixture, byte for byte');
  const initAddr = await istiod.request('initial Address request', 1, (r) => r.type_url === ADDRESS_TYPE_URL);
  t.same(initAddr.req.resource_names_subscribe, [], 'wildcard');
  t.same(initAddr.req.initial_resource_versions, {}, 'nothing held yet');
  t.equal(initAddr.req.node?.id, NODE.id);

  // The fixture responses: mapped, handed over, ACKed exactly as upstream ACKs.
  istiod.push(fixture('delta-response-addresses'));
  const ack = await istiod.request('the Address ACK', 1, (r) => r.response_nonce !== '' && r.type_url === ADDRESS_TYPE_URL);
  t.ok(ack.bytes.equals(fixture('delta-request-ack')), 'ACK = delta-request-ack, byte for byte');
  const addrResponse = DeltaDiscoveryResponseCodec.decode(fixture('delta-response-addresses'));
  const first = rec.applied[0];
  t.equal(first?.typeUrl, ADDRESS_TYPE_URL);
  t.same(first?.upserts.map((u) => [u.name, u.version]), addrResponse.resources.map((r) => [r.name, r.version]), 'every resource handed over with its version');
  t.same(first?.upserts.map((u) => (u.model as { kind: string }).kind), ['workload', 'workload', 'service', 'service', 'service']);
  t.same(first?.removals, addrResponse.removed_resources);
  t.equal(client.state().connected, true);

  istiod.push(fixture('delta-response-authorizations'));
  const authzResponse = DeltaDiscoveryResponseCodec.decode(fixture('delta-response-authorizations'));
  const authzAck = await istiod.request('the Authorization ACK', 1, (r) => r.response_nonce === authzResponse.nonce);
  t.equal(authzAck.req.error_detail, null, 'ACK, no error');
  t.same(rec.applied[1]?.upserts.map((u) => u.name), authzResponse.resources.map((r) => r.name));

  // One malformed resource beside a good one: NACK names it; the good one is applied.
  istiod.push(
    DeltaDiscoveryResponseCodec.encode({
      type_url: ADDRESS_TYPE_URL,
      nonce: 'nonce-bad',
      system_version_info: 'v-bad',
      resources: [addressResource('uid-good', 'g1', [Buffer.from([10, 0, 0, 9])]), addressResource('uid-bad', 'b1', [Buffer.from([10, 0, 0, 9, 9])])],
    }),
  );
  const nack = await istiod.request('the NACK', 1, (r) => r.response_nonce === 'nonce-bad');
  t.equal(nack.req.type_url, ADDRESS_TYPE_URL);
  t.equal(nack.req.error_detail?.message, 'uid-bad: workload.addresses[0]: failed to parse address, had 5 bytes', 'names the bad resource, field and reason');
  t.equal(nack.req.error_detail?.code, 0, 'code left 0, as upstream');
  t.same(rec.applied[2]?.upserts.map((u) => u.name), ['uid-good'], 'the good resource of the NACKed response was applied');
  const addrState = client.state().types.find((s) => s.typeUrl === ADDRESS_TYPE_URL);
  t.equal(addrState?.lastNonce, 'nonce-bad');
  t.equal(addrState?.systemVersionInfo, 'v-bad');
  t.match(addrState?.lastNack, { message: /uid-bad/, time: /^\d{4}-/ });
  t.ok(rec.lines.some((l) => l.level === 'warn' && /NACK .*uid-bad/.test(l.message)), 'NACK logged');
  t.notOk(client.versions(ADDRESS_TYPE_URL).has('uid-bad'), 'a rejected version is not recorded');

  // A removal.
  istiod.push(DeltaDiscoveryResponseCodec.encode({ type_url: ADDRESS_TYPE_URL, nonce: 'nonce-rm', removed_resources: ['uid-good'] }));
  const rmAck = await istiod.request('the removal ACK', 1, (r) => r.response_nonce === 'nonce-rm');
  t.equal(rmAck.req.error_detail, null);
  t.same(rec.applied[3], { typeUrl: ADDRESS_TYPE_URL, upserts: [], removals: ['uid-good'] });
  t.notOk(client.versions(ADDRESS_TYPE_URL).has('uid-good'));

  // The server cuts the stream: the client reconnects and announces what it holds.
  const linesBefore = rec.lines.length;
  istiod.cut();
  const reAddr = await istiod.request('the reconnect Address request', 2, (r) => r.type_url === ADDRESS_TYPE_URL);
  const reAuthz = await istiod.request('the reconnect Authorization request', 2, (r) => r.type_url === AUTHORIZATION_TYPE_URL);
  t.same(reAddr.req.initial_resource_versions, Object.fromEntries(addrResponse.resources.map((r) => [r.name, r.version])), 'Address versions held');
  t.same(reAuthz.req.initial_resource_versions, Object.fromEntries(authzResponse.resources.map((r) => [r.name, r.version])), 'Authorization versions held');
  t.equal(reAddr.req.node?.id, NODE.id, 'node sent again on the new stream');
  const cutLine = rec.lines.slice(linesBefore).find((l) => /ended the stream/.test(l.message));
  t.ok(cutLine, 'the cut is logged');
  t.ok((cutLine?.nextRetryMs ?? Infinity) <= 200 * 1.2, `backoff was reset by the responses (${cutLine?.nextRetryMs} ms)`);
  const st = client.state();
  t.equal(st.connects, 4, 'two refused + two accepted streams');
  t.match(st.types.find((s) => s.typeUrl === AUTHORIZATION_TYPE_URL), { resources: authzResponse.resources.length, acks: 1, nacks: 0 });

  client.stop();
  t.equal(client.state().connected, false);
  const streams = istiod.streams;
  await new Promise((r) => setTimeout(r, 600));
  t.equal(istiod.streams, streams, 'no reconnect after stop()');
});

t.test('a server certificate from another root is refused with one clear line per attempt, retried with backoff', async (t) => {
  const istiod = new FakeIstiod();
  await istiod.start(other);
  t.teardown(() => istiod.stop());
  const rec = recorder();
  const client = new AdsClient({
    address: `127.0.0.1:${istiod.port}`,
    tls: { ca: mesh.ca },
    token: () => TOKEN,
    node: NODE,
    typeUrls: [ADDRESS_TYPE_URL, AUTHORIZATION_TYPE_URL],
    onResources: rec.onResources,
    log: rec.log,
    initialBackoffMs: 100,
    maxBackoffMs: 10_000,
  });
  rec.bind(client);
  t.teardown(() => client.stop());
  client.start();
  await poll('three failed attempts', () => rec.lines.length >= 3);
  client.stop();
  for (const l of rec.lines.slice(0, 3)) {
    t.equal(l.level, 'warn');
    t.match(l.message, /^xds: TLS to istiod at 127\.0\.0\.1:\d+ failed: the server certificate is not trusted \(.*\); retrying in/);
  }
  const delays = rec.lines.slice(0, 3).map((l) => l.nextRetryMs ?? NaN);
  t.ok(delays[0]! >= 80 && delays[0]! <= 120, `first delay ~100 ms ±20 % (${delays[0]})`);
  t.ok(delays[1]! >= 160 && delays[1]! <= 240, `second ~200 ms (${delays[1]})`);
  t.ok(delays[2]! >= 320 && delays[2]! <= 480, `third ~400 ms (${delays[2]})`);
  t.equal(istiod.streams + istiod.refused, 0, 'no stream reached the handler');
  t.equal(rec.applied.length, 0);
  t.match(client.state().lastError, { message: /not trusted/ });
});

t.test('a response the consumer cannot apply is NACKed whole and none of its versions are recorded', async (t) => {
  const istiod = new FakeIstiod();
  await istiod.start(mesh);
  t.teardown(() => istiod.stop());
  const rec = recorder();
  let calls = 0;
  const client = new AdsClient({
    address: `127.0.0.1:${istiod.port}`,
    tls: { ca: mesh.ca },
    token: () => TOKEN,
    node: NODE,
    typeUrls: [ADDRESS_TYPE_URL],
    onResources: () => {
      calls++;
      throw new Error('state rejected it');
    },
    log: rec.log,
  });
  t.teardown(() => client.stop());
  client.start();
  const init = await istiod.request('the initial request', 1, (r) => r.type_url === ADDRESS_TYPE_URL);
  t.equal(istiod.received.filter((r) => r.stream === 1).length, 1, 'only the subscribed type is requested');
  t.equal(init.req.node?.id, NODE.id);
  istiod.push(fixture('delta-response-addresses'));
  const nonce = DeltaDiscoveryResponseCodec.decode(fixture('delta-response-addresses')).nonce;
  const nack = await istiod.request('the NACK', 1, (r) => r.response_nonce === nonce);
  t.equal(nack.req.error_detail?.message, 'applying the response failed: state rejected it');
  t.equal(calls, 1);
  t.equal(client.versions(ADDRESS_TYPE_URL).size, 0, 'no version recorded');
  t.match(client.state(), { connected: true, attempts: 0, types: [{ resources: 0, nacks: 1, acks: 0 }] });
});
