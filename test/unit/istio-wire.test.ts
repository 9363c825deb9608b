// Our .proto definitions (proto/) against golden messages encoded by an independent encoder
// from Istio's own definitions (test/fixtures/istio-wire/README.md): every fixture decodes to
// its proto3 JSON (nested Any payloads included), re-encodes to the same bytes, and the
// requests ztunnel sends (delta initial/ACK/NACK, CSR) are rebuilt from their JSON by our
// encoder byte for byte. A changed field number makes the comparison fail (checked below on a
// mutated copy of proto/).

import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import protobuf from 'protobufjs';
import t from 'tap';
import fc from 'fast-check';
import {
  ADDRESS_TYPE_URL,
  AddressCodec,
  AUTHORIZATION_TYPE_URL,
  AuthorizationCodec,
  CREATE_CERTIFICATE_METHOD_PATH,
  DELTA_ADS_METHOD_PATH,
  DeltaDiscoveryRequestCodec,
  DeltaDiscoveryResponseCodec,
  grpcServices,
  IstioCertificateRequestCodec,
  IstioCertificateResponseCodec,
  loadWireRoot,
  protoDir,
  structFromJson,
  structToJson,
  TO_OBJECT_OPTIONS,
  wireRoot,
} from '../../src/xds/protos.js';
import type { WireAddress, WireInit, WireStruct } from '../../src/xds/wire-types.js';
import { fuzz } from '../helpers/fuzz.js';

const FIXTURES = path.resolve(import.meta.dirname, '../fixtures/istio-wire');

interface ManifestEntry {
  name: string;
  message: string;
  bytes: number;
  sha256: string;
}
const manifest = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'MANIFEST.json'), 'utf8')) as { fixtures: ManifestEntry[] };
const bin = (name: string): Buffer => fs.readFileSync(path.join(FIXTURES, `${name}.bin`));
type JsonObject = Record<string, any>;
const json = (name: string): JsonObject => JSON.parse(fs.readFileSync(path.join(FIXTURES, `${name}.json`), 'utf8')) as JsonObject;

/** proto3 JSON of a decoded message, as far as protobufjs's json conversion gets. */
const JSON_OPTIONS: protobuf.IConversionOptions = { json: true, enums: String, longs: String, bytes: String };

/** Struct fields (node metadata, CSR metadata) in proto3 JSON are plain objects: convert those. */
function structPaths(message: string): string[][] {
  if (message === 'envoy.service.discovery.v3.DeltaDiscoveryRequest') return [['node', 'metadata']];
  if (message === 'istio.v1.auth.IstioCertificateRequest') return [['metadata']];
  return [];
}

function getPath(obj: JsonObject, p: string[]): unknown {
  return p.reduce<unknown>((o, k) => (o === undefined || o === null ? undefined : (o as JsonObject)[k]), obj);
}

function setPath(obj: JsonObject, p: string[], value: unknown): void {
  const parent = getPath(obj, p.slice(0, -1)) as JsonObject | undefined;
  if (parent) parent[p[p.length - 1] as string] = value;
}

/** Decodes `bytes` as `message` with `root` and returns its proto3 JSON form. */
function toProto3Json(root: protobuf.Root, message: string, bytes: Uint8Array): JsonObject {
  const type = root.lookupType(message);
  const decoded = type.decode(bytes);
  const out = type.toObject(decoded, JSON_OPTIONS);
  const typed = type.toObject(decoded, TO_OBJECT_OPTIONS);
  for (const p of structPaths(message)) {
    const s = getPath(typed, p) as WireStruct | null | undefined;
    if (s) setPath(out, p, structToJson(s));
  }
  return out;
}

t.test('the fixtures are the published ones (sha256 from MANIFEST.json)', async (t) => {
  t.equal(manifest.fixtures.length, 19);
  for (const f of manifest.fixtures) {
    const b = bin(f.name);
    t.equal(b.length, f.bytes, `${f.name} size`);
    t.equal(createHash('sha256').update(b).digest('hex'), f.sha256, `${f.name} sha256`);
  }
});

t.test('every fixture decodes to its proto3 JSON (Any payloads expanded by type)', async (t) => {
  const root = wireRoot();
  for (const f of manifest.fixtures) {
    t.strictSame(toProto3Json(root, f.message, bin(f.name)), json(f.name), f.name);
  }
});

t.test('every fixture and every Any payload re-encodes byte for byte', async (t) => {
  const root = wireRoot();
  for (const f of manifest.fixtures) {
    const type = root.lookupType(f.message);
    const b = bin(f.name);
    t.ok(Buffer.from(type.encode(type.decode(b)).finish()).equals(b), f.name);
  }
  for (const name of ['delta-response-addresses', 'delta-response-authorizations']) {
    const response = DeltaDiscoveryResponseCodec.decode(bin(name));
    t.ok(response.resources.length >= 3, `${name}: resources`);
    for (const r of response.resources) {
      const any = r.resource!;
      t.equal(any.type_url, response.type_url, `${r.name}: Any type_url`);
      const inner = root.lookupType(any.type_url.slice(any.type_url.lastIndexOf('/') + 1));
      t.ok(Buffer.from(inner.encode(inner.decode(any.value)).finish()).equals(any.value), `${r.name}: Any payload`);
    }
  }
});

t.test('the typed decoders: Address and Authorization payloads, defaults, oneofs', async (t) => {
  const addresses = DeltaDiscoveryResponseCodec.decode(bin('delta-response-addresses'));
  t.equal(addresses.type_url, ADDRESS_TYPE_URL);
  t.equal(addresses.nonce, '8c6f2b1e-3d4a-4f5b-9e7c-0a1b2c3d4e5f');
  t.strictSame(addresses.removed_resources, ['Kubernetes//Pod/default/ratings-v1-5dc79b6bcd-8kq2z']);
  const [pod, mysql, productpage, reviews, db] = addresses.resources.map((r) => AddressCodec.decode(r.resource!.value));
  t.equal(pod?.type, 'workload');
  t.equal(pod?.workload?.tunnel_protocol, 'HBONE');
  t.strictSame(pod?.workload?.addresses.map((a) => [...a]), [[10, 244, 1, 12], [0xfd, 0, 0, 0x10, 2, 0x44, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0x0c]]);
  t.equal(pod?.workload?.status, 'HEALTHY', 'zero enum value, absent on the wire, is filled in');
  t.equal(pod?.workload?.capacity, null, 'absent wrapper is null');
  t.strictSame(pod?.workload?.services['default/productpage.default.svc.cluster.local']?.ports, [
    { service_port: 9080, target_port: 9080, app_protocol: 'UNKNOWN' },
  ]);
  t.equal(mysql?.workload?.tunnel_protocol, 'NONE');
  t.equal(productpage?.type, 'service');
  t.strictSame(productpage?.service?.load_balancing?.routing_preference, ['NETWORK', 'REGION', 'ZONE']);
  t.equal(reviews?.service?.waypoint?.destination, 'hostname');
  t.equal(reviews?.service?.waypoint?.hbone_mtls_port, 15008);
  t.equal(db?.service?.addresses[0]?.length, 24, 'proto3 optional length present');
  t.equal(productpage?.service?.addresses[0]?.length, undefined, 'proto3 optional length absent');

  const authz = DeltaDiscoveryResponseCodec.decode(bin('delta-response-authorizations'));
  t.equal(authz.type_url, AUTHORIZATION_TYPE_URL);
  const [allow, deny, sandbox] = authz.resources.map((r) => AuthorizationCodec.decode(r.resource!.value));
  t.equal(allow?.scope, 'NAMESPACE');
  t.equal(allow?.action, 'ALLOW');
  t.strictSame(allow?.rules[0]?.clauses[1]?.matches[0]?.destination_ports, [9080]);
  t.equal(deny?.dry_run, true);
  t.equal(deny?.rules[0]?.clauses[0]?.matches[0]?.not_source_ips[1]?.length, 48);
  t.equal(sandbox?.scope, 'GLOBAL');
  t.equal(sandbox?.rules[0]?.clauses[1]?.matches[0]?.principals[0]?.match_type, 'presence', 'an empty oneof member is still seen');

  const csr = IstioCertificateResponseCodec.decode(bin('csr-response'));
  t.equal(csr.cert_chain.length, 2);
  t.match(csr.cert_chain[0], /^-----BEGIN CERTIFICATE-----\n/);

  // An enum value this build does not know stays a number (the mapping then refuses it by name).
  const unknownEnum = AddressCodec.decode(Uint8Array.from([0x0a, 0x02, 0x28, 0x07]));
  t.equal(unknownEnum.workload?.tunnel_protocol, 7);
  t.throws(() => AddressCodec.decode(Uint8Array.from([0x0a, 0x05, 0x28])), { code: 'ZT_ERR_CONFIG_INVALID', message: /istio\.workload\.Address/ });
});

t.test('the requests ztunnel sends are rebuilt from their JSON by our encoder, byte for byte', async (t) => {
  const requests = manifest.fixtures.filter((f) => f.name.startsWith('delta-request-') || f.name.startsWith('csr-request'));
  t.equal(requests.length, 9);
  for (const f of requests) {
    const init = json(f.name);
    let bytes: Uint8Array;
    if (f.message === 'istio.v1.auth.IstioCertificateRequest') {
      if (init.metadata) init.metadata = structFromJson(init.metadata as JsonObject);
      bytes = IstioCertificateRequestCodec.encode(init);
    } else {
      if (init.node?.metadata) init.node.metadata = structFromJson(init.node.metadata as JsonObject);
      bytes = DeltaDiscoveryRequestCodec.encode(init);
    }
    t.ok(Buffer.from(bytes).equals(bin(f.name)), f.name);
  }
  // The shapes the ADS client will build, spelled out.
  const ack = DeltaDiscoveryRequestCodec.encode({ type_url: ADDRESS_TYPE_URL, response_nonce: '8c6f2b1e-3d4a-4f5b-9e7c-0a1b2c3d4e5f' });
  t.ok(Buffer.from(ack).equals(bin('delta-request-ack')), 'ACK');
  const nack = DeltaDiscoveryRequestCodec.encode({
    type_url: ADDRESS_TYPE_URL,
    response_nonce: '8c6f2b1e-3d4a-4f5b-9e7c-0a1b2c3d4e5f',
    error_detail: { message: 'Kubernetes//Pod/default/productpage-v1-7d6cfb7dfd-x2w9k: failed to parse address, had 5 bytes' },
  });
  t.ok(Buffer.from(nack).equals(bin('delta-request-nack-nocode')), 'NACK as upstream sends it');
});

t.test('grpc-js service definitions from @grpc/proto-loader: paths, streaming, same shapes', async (t) => {
  const { ads, ca } = grpcServices();
  const delta = ads.DeltaAggregatedResources!;
  t.equal(delta.path, DELTA_ADS_METHOD_PATH);
  t.equal(delta.requestStream, true);
  t.equal(delta.responseStream, true);
  const create = ca.CreateCertificate!;
  t.equal(create.path, CREATE_CERTIFICATE_METHOD_PATH);
  t.equal(create.requestStream, false);
  t.equal(create.responseStream, false);
  for (const name of ['delta-response-addresses', 'delta-response-authorizations']) {
    t.strictSame(delta.responseDeserialize(bin(name)), DeltaDiscoveryResponseCodec.decode(bin(name)), `${name}: proto-loader's view = ours`);
  }
  t.ok(Buffer.from(delta.requestSerialize(json('delta-request-ack'))).equals(bin('delta-request-ack')), 'proto-loader serializes the ACK alike');
  t.strictSame(create.responseDeserialize(bin('csr-response')), IstioCertificateResponseCodec.decode(bin('csr-response')));
});

t.test('a changed field number is caught (the comparison run on a mutated copy of proto/)', async (t) => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `ztunnel-proto-${process.pid}-`));
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }));
  fs.cpSync(protoDir(), dir, { recursive: true });
  const file = path.join(dir, 'istio/workload/workload.proto');
  const text = fs.readFileSync(file, 'utf8');
  t.ok(text.includes('uint32 hbone_mtls_port = 3;'));
  fs.writeFileSync(file, text.replace('uint32 hbone_mtls_port = 3;', 'uint32 hbone_mtls_port = 5;'));
  const root = loadWireRoot(dir);
  const f = 'delta-response-addresses';
  t.notOk(isDeepStrictEqual(toProto3Json(root, 'envoy.service.discovery.v3.DeltaDiscoveryResponse', bin(f)), json(f)), 'the mutated definitions disagree');
  t.ok(isDeepStrictEqual(toProto3Json(wireRoot(), 'envoy.service.discovery.v3.DeltaDiscoveryResponse', bin(f)), json(f)), 'ours agree');
});

// ---------------------------------------------------------------- the hand-written Address decoder

/** The fast decoder against the reflection one: the same object, or it leaves the bytes to it. */
function sameAsReflection(bytes: Uint8Array, mustBeFast: boolean): void {
  let reference: WireAddress | Error;
  try {
    reference = AddressCodec.decodeReflection(bytes);
  } catch (err) {
    reference = err as Error;
  }
  const fast = AddressCodec.decodeFast(bytes);
  if (fast === undefined) {
    if (mustBeFast) throw new Error(`the fast decoder gave up on ${Buffer.from(bytes).toString('hex')}`);
    return;
  }
  if (reference instanceof Error) throw new Error(`the fast decoder accepted bytes the reflection codec refuses (${reference.message})`);
  if (!isDeepStrictEqual(fast, reference)) {
    throw new Error(`fast ≠ reflection:\n${JSON.stringify(fast)}\n${JSON.stringify(reference)}`);
  }
  const via = AddressCodec.decode(bytes);
  if (!isDeepStrictEqual(via, reference)) throw new Error('AddressCodec.decode ≠ reflection');
}

const str = fc.constantFrom('', 'a', 'default', 'Kubernetes//Pod/ns/p-1', 'ns/svc.ns.svc.cluster.local', 'ünï');
const u32 = fc.oneof(fc.constantFrom(0, 1, 80, 15008, 65535, 65536), fc.nat({ max: 0xffffffff }));
const ipBytes = fc.oneof(fc.uint8Array({ minLength: 4, maxLength: 4 }), fc.uint8Array({ minLength: 16, maxLength: 16 }), fc.uint8Array({ maxLength: 5 })).map((u) => Buffer.from(u));
const netAddr = fc.record({ network: str, address: ipBytes, length: fc.option(fc.nat({ max: 130 }), { nil: undefined }) }, { requiredKeys: ['network', 'address'] });
const port = fc.record({ service_port: u32, target_port: u32, app_protocol: fc.constantFrom('UNKNOWN', 'HTTP11', 'HTTP2', 'GRPC', 'TCP', 'TLS') });
const gateway = fc.oneof(
  fc.record({ hostname: fc.record({ namespace: str, hostname: str }), hbone_mtls_port: u32 }),
  fc.record({ address: netAddr, hbone_mtls_port: u32 }),
  fc.record({ hbone_mtls_port: u32 }),
);
const workloadInit = fc.record(
  {
    uid: str,
    name: str,
    namespace: str,
    addresses: fc.array(ipBytes, { maxLength: 3 }),
    hostname: str,
    network: str,
    tunnel_protocol: fc.constantFrom('NONE', 'HBONE', 'LEGACY_ISTIO_MTLS'),
    trust_domain: str,
    service_account: str,
    waypoint: gateway,
    network_gateway: gateway,
    node: str,
    canonical_name: str,
    canonical_revision: str,
    workload_type: fc.constantFrom('DEPLOYMENT', 'CRONJOB', 'POD', 'JOB'),
    workload_name: str,
    native_tunnel: fc.boolean(),
    application_tunnel: fc.record({ protocol: fc.constantFrom('NONE', 'PROXY'), port: u32 }, { requiredKeys: [] }),
    services: fc.dictionary(str, fc.record({ ports: fc.array(port, { maxLength: 3 }) }), { maxKeys: 3 }),
    authorization_policies: fc.array(str, { maxLength: 2 }),
    status: fc.constantFrom('HEALTHY', 'UNHEALTHY'),
    cluster_id: str,
    locality: fc.record({ region: str, zone: str, subzone: str }, { requiredKeys: [] }),
    network_mode: fc.constantFrom('STANDARD', 'HOST_NETWORK'),
    capacity: fc.record({ value: u32 }, { requiredKeys: [] }),
  },
  { requiredKeys: [] },
);
const serviceInit = fc.record(
  {
    name: str,
    namespace: str,
    hostname: str,
    addresses: fc.array(netAddr, { maxLength: 3 }),
    ports: fc.array(port, { maxLength: 3 }),
    subject_alt_names: fc.array(str, { maxLength: 2 }),
    waypoint: gateway,
    load_balancing: fc.record(
      {
        routing_preference: fc.array(fc.constantFrom('UNSPECIFIED_SCOPE', 'REGION', 'ZONE', 'SUBZONE', 'NODE', 'CLUSTER', 'NETWORK'), { maxLength: 3 }),
        mode: fc.constantFrom('UNSPECIFIED_MODE', 'STRICT', 'FAILOVER', 'PASSTHROUGH'),
        health_policy: fc.constantFrom('ONLY_HEALTHY', 'ALLOW_ALL'),
      },
      { requiredKeys: [] },
    ),
    ip_families: fc.constantFrom('AUTOMATIC', 'IPV4_ONLY', 'IPV6_ONLY', 'DUAL'),
    canonical: fc.boolean(),
    ingress_use_waypoint: fc.boolean(),
    visibility: fc.constantFrom('PUBLIC', 'NAMESPACE'),
  },
  { requiredKeys: [] },
);
const addressInit: fc.Arbitrary<WireInit<WireAddress>> = fc.oneof(
  workloadInit.map((workload) => ({ workload }) as WireInit<WireAddress>),
  serviceInit.map((service) => ({ service }) as WireInit<WireAddress>),
  fc.constant({} as WireInit<WireAddress>),
);

t.test('the hand-written Address decoder gives what the reflection codec gives, for any Address', async (t) => {
  fuzz(t, 'address-fast-decoder', addressInit, (init) => sameAsReflection(AddressCodec.encode(init), true), { runs: 400 });
});

t.test('…and on damaged or unusual bytes it agrees or leaves them to the reflection codec', async (t) => {
  const damaged = fc
    .tuple(addressInit, fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 3 }), fc.option(fc.nat(), { nil: undefined }))
    .map(([init, flips, cut]) => {
      const b = Buffer.from(AddressCodec.encode(init));
      for (const [at, v] of flips) if (b.length > 0) b[at % b.length] = v;
      return cut === undefined || b.length === 0 ? b : b.subarray(0, cut % b.length);
    });
  fuzz(t, 'address-fast-decoder-damaged', damaged, (bytes) => sameAsReflection(bytes, false), { runs: 600 });
  // Unknown fields (a newer istiod) are skipped, as protobufjs skips them: still the fast path.
  const w = Buffer.from(AddressCodec.encode({ workload: { uid: 'u', name: 'n' } }));
  const unknownInWorkload = Buffer.concat([Buffer.from([0x0a, w[1]! + 3]), w.subarray(2), Buffer.from([0xf8, 0x06, 0x01])]); // field 111 varint 1
  sameAsReflection(unknownInWorkload, true);
  sameAsReflection(Buffer.concat([w, Buffer.from([0x1d, 1, 2, 3, 4])]), true); // field 3 fixed32 at the top level
  // What it leaves to the reflection codec: extensions, an unknown enum value, a duplicated oneof.
  const ext = AddressCodec.encode({ workload: { uid: 'u', extensions: [{ name: 'x', config: null }] } });
  t.equal(AddressCodec.decodeFast(ext), undefined, 'extensions: reflection codec');
  t.strictSame(AddressCodec.decode(ext), AddressCodec.decodeReflection(ext));
  t.equal(AddressCodec.decodeFast(Uint8Array.from([0x0a, 0x02, 0x28, 0x07])), undefined, 'unknown enum value: reflection codec');
  t.equal(AddressCodec.decode(Uint8Array.from([0x0a, 0x02, 0x28, 0x07])).workload?.tunnel_protocol, 7);
  t.equal(AddressCodec.decodeFast(Buffer.concat([w, w])), undefined, 'workload twice: reflection codec');
  t.throws(() => AddressCodec.decode(Uint8Array.from([0x0a, 0x05, 0x28])), { code: 'ZT_ERR_CONFIG_INVALID' }, 'truncated: the same error as before');
  // Both members of a oneof on the wire (GatewayAddress hostname + address): reflection codec.
  const gwType = wireRoot().lookupType('istio.workload.GatewayAddress');
  const gw = Buffer.concat([
    gwType.encode(gwType.fromObject({ address: { network: '', address: Buffer.from([1, 2, 3, 4]) } })).finish(),
    gwType.encode(gwType.fromObject({ hostname: { namespace: 'a', hostname: 'b' } })).finish(),
  ]);
  const workload = Buffer.concat([Buffer.from([0x42, gw.length]), gw]);
  const both = Buffer.concat([Buffer.from([0x0a, workload.length]), workload]);
  t.equal(AddressCodec.decodeFast(both), undefined, 'both oneof members: reflection codec');
  t.strictSame(AddressCodec.decode(both), AddressCodec.decodeReflection(both));
});

t.test('the hand-written Address decoder reads the golden fixtures as the reflection codec does', async (t) => {
  const addresses = DeltaDiscoveryResponseCodec.decode(bin('delta-response-addresses'));
  for (const r of addresses.resources) {
    t.doesNotThrow(() => sameAsReflection(r.resource!.value, true), r.name);
  }
});

