// The control-plane protocol definitions (proto/) loaded once: typed encode/decode of the
// messages ztunnel-ts exchanges with istiod (delta xDS, CA) and istio-cni (ZDS), the type URLs,
// and the gRPC service definitions for @grpc/grpc-js.
// Codec: protobufjs (the library @grpc/proto-loader itself uses), loaded from our own .proto
// files. Decoded messages are plain objects shaped as in wire-types.ts (proto field names,
// defaults filled, enums by name, bytes as Buffers). The gRPC definitions come from
// @grpc/proto-loader with the same conversion options, so a stream hands over the same shapes.
// Must never: throw anything but a ZtError on malformed bytes, or read the .proto files more
// than once per process.

import { existsSync } from 'node:fs';
import path from 'node:path';
import type { ServiceDefinition } from '@grpc/grpc-js';
import { loadSync as loadGrpcPackage, type Options as ProtoLoaderOptions } from '@grpc/proto-loader';
import protobuf from 'protobufjs';
import { ZtError } from '../errors.js';
import type {
  WireAddress,
  WireAuthorization,
  WireDeltaDiscoveryRequest,
  WireDeltaDiscoveryResponse,
  WireInit,
  WireIstioCertificateRequest,
  WireIstioCertificateResponse,
  WireGatewayAddress,
  WireNetworkAddress,
  WirePort,
  WireService,
  WireStruct,
  WireValue,
  WireWorkload,
} from './wire-types.js';

export const ADDRESS_TYPE_URL = 'type.googleapis.com/istio.workload.Address';
export const AUTHORIZATION_TYPE_URL = 'type.googleapis.com/istio.security.Authorization';
export const DELTA_ADS_METHOD_PATH = '/envoy.service.discovery.v3.AggregatedDiscoveryService/DeltaAggregatedResources';
export const CREATE_CERTIFICATE_METHOD_PATH = '/istio.v1.auth.IstioCertificateService/CreateCertificate';

/** The .proto files, relative to the proto/ folder. Imports resolve against that folder. */
export const PROTO_FILES = [
  'istio/workload/workload.proto',
  'istio/security/authorization.proto',
  'istio/workload/zds.proto',
  'istio/v1/auth/ca.proto',
  'google/rpc/status.proto',
  'envoy/config/core/v3/base.proto',
  'envoy/service/discovery/v3/ads.proto',
] as const;

/** How decoded messages are turned into plain objects (the shapes of wire-types.ts). */
export const TO_OBJECT_OPTIONS: protobuf.IConversionOptions = {
  enums: String,
  longs: String,
  defaults: true,
  arrays: true,
  objects: true,
  oneofs: true,
};

/**
 * The proto/ folder: beside src/ in the repository, beside dist/ in the image. Searched upward
 * from this module so that the sources (src/xds) and the build (dist/src/xds) both find it.
 */
export function protoDir(): string {
  let dir = import.meta.dirname;
  for (let i = 0; i < 5; i++) {
    const candidate = path.join(dir, 'proto');
    if (existsSync(path.join(candidate, PROTO_FILES[0]))) return candidate;
    dir = path.dirname(dir);
  }
  throw new ZtError('ZT_ERR_CONFIG_INVALID', `the proto/ folder (${PROTO_FILES[0]}) was not found above ${import.meta.dirname}`);
}

let root: protobuf.Root | undefined;

/** The protobufjs root with every definition of proto/ (loaded on first use). */
export function wireRoot(): protobuf.Root {
  root ??= loadWireRoot(protoDir());
  return root;
}

/** Loads PROTO_FILES from `dir` into a new root (wireRoot() does this once for proto/). */
export function loadWireRoot(dir: string): protobuf.Root {
  const r = new protobuf.Root();
  r.resolvePath = (origin, target) => {
    // google/protobuf/* are protobufjs's built-in copies; imports resolve against `dir`.
    if (target.startsWith('google/protobuf/') || path.isAbsolute(target)) return target;
    return path.join(dir, target);
  };
  r.loadSync(PROTO_FILES.map((f) => path.join(dir, f)), { keepCase: true });
  r.resolveAll();
  return r;
}

/** Encode/decode of one message type, looked up on first use. */
export class WireCodec<T> {
  private type: protobuf.Type | undefined;
  constructor(readonly fullName: string) {}

  /** The protobufjs type (for tests and tools). */
  protoType(): protobuf.Type {
    this.type ??= wireRoot().lookupType(this.fullName);
    return this.type;
  }

  /** Bytes → plain object; malformed bytes give ZT_ERR_CONFIG_INVALID naming the type. */
  decode(bytes: Uint8Array): T {
    const type = this.protoType();
    let message: protobuf.Message;
    try {
      message = type.decode(bytes);
    } catch (err) {
      throw new ZtError('ZT_ERR_CONFIG_INVALID', `cannot decode ${this.fullName}: ${(err as Error).message}`, { cause: err });
    }
    return type.toObject(message, TO_OBJECT_OPTIONS) as T;
  }

  /** Plain object → bytes (fields in ascending number order, as protoc and istiod write them). */
  encode(init: WireInit<T>): Uint8Array {
    const type = this.protoType();
    return type.encode(type.fromObject(init as Record<string, unknown>)).finish();
  }
}

/**
 * istio.workload.Address with a hand-written decoder for the hot path (a delta xDS response of
 * thousands of workloads): it reads the wire straight into the plain object the reflection
 * codec would give (same keys, defaults, enum names, Buffers), skipping protobufjs's message
 * objects and toObject pass. Anything it does not handle exactly as protobufjs does (an
 * extension, a weighted waypoint, an unknown enum value, a repeated singular message, a wire
 * type that does not match the field, truncated bytes) is left to the reflection codec, which
 * then answers (or refuses) as before. test/unit/istio-wire.test.ts checks both agree.
 */
export class AddressWireCodec extends WireCodec<WireAddress> {
  constructor() {
    super('istio.workload.Address');
  }

  override decode(bytes: Uint8Array): WireAddress {
    return this.decodeFast(bytes) ?? this.decodeReflection(bytes);
  }

  /** The reflection (protobufjs) decoder alone: the reference the fast one is tested against. */
  decodeReflection(bytes: Uint8Array): WireAddress {
    return super.decode(bytes);
  }

  /** The hand-written decoder alone; undefined when it leaves the bytes to the reflection codec. */
  decodeFast(bytes: Uint8Array): WireAddress | undefined {
    try {
      return readAddress(protobuf.Reader.create(bytes));
    } catch {
      // GIVE_UP, or protobufjs's reader out of range on truncated bytes: the reflection codec answers.
      return undefined;
    }
  }
}

export const AddressCodec = new AddressWireCodec();
export const AuthorizationCodec = new WireCodec<WireAuthorization>('istio.security.Authorization');
export const DeltaDiscoveryRequestCodec = new WireCodec<WireDeltaDiscoveryRequest>('envoy.service.discovery.v3.DeltaDiscoveryRequest');
export const DeltaDiscoveryResponseCodec = new WireCodec<WireDeltaDiscoveryResponse>('envoy.service.discovery.v3.DeltaDiscoveryResponse');
export const IstioCertificateRequestCodec = new WireCodec<WireIstioCertificateRequest>('istio.v1.auth.IstioCertificateRequest');
export const IstioCertificateResponseCodec = new WireCodec<WireIstioCertificateResponse>('istio.v1.auth.IstioCertificateResponse');

// ------------------------------------------------------------------ Address fast decoder

/** Thrown inside the fast decoder only: "let the reflection codec decode this" (one instance, no stack per throw). */
const GIVE_UP = new Error('left to the reflection codec');

function giveUp(): never {
  throw GIVE_UP;
}

type Reader = protobuf.Reader;

// Wire types: 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32.
const VARINT = 0;
const LEN = 2;
const tagOf = (field: number, wireType: number): number => ((field << 3) | wireType) >>> 0;

/** Enum number → name, from proto/ (built on first use, so the tables follow the .proto files). */
let enumNames: Record<string, readonly string[]> | undefined;
function enumTable(fullName: string): readonly string[] {
  enumNames ??= {};
  let t = enumNames[fullName];
  if (!t) {
    const e = wireRoot().lookupEnum(fullName);
    const names: string[] = [];
    for (const [id, name] of Object.entries(e.valuesById)) names[Number(id)] = name;
    t = Object.freeze(names);
    enumNames[fullName] = t;
  }
  return t;
}

/** The name (typed by the field it is assigned to: checked against proto/ by the tests). */
function enumName(r: Reader, fullName: string): never {
  const n = r.int32();
  const name = n >= 0 ? enumTable(fullName)[n] : undefined;
  if (name === undefined) giveUp(); // an unknown value: the reflection codec gives the number
  return name as never;
}

/** Enters a length-delimited sub-message: returns its end offset. */
function sub(r: Reader): number {
  const len = r.uint32();
  const end = r.pos + len;
  if (end > r.len) giveUp();
  return end;
}

function leave(r: Reader, end: number): void {
  if (r.pos !== end) giveUp();
}

/** A field this decoder does not know: skipped as protobufjs skips it (groups are left to it). */
function skipUnknown(r: Reader, tag: number, known: readonly number[]): void {
  const field = tag >>> 3;
  const wireType = tag & 7;
  if (field === 0 || known.includes(field) || (wireType !== 0 && wireType !== 1 && wireType !== 2 && wireType !== 5)) giveUp();
  r.skipType(wireType);
}

const ADDRESS_FIELDS = [1, 2];
function readAddress(r: Reader): WireAddress {
  let out: WireAddress = {};
  let seen = false;
  while (r.pos < r.len) {
    const tag = r.uint32();
    if (tag === tagOf(1, LEN) || tag === tagOf(2, LEN)) {
      if (seen) giveUp();
      seen = true;
      const end = sub(r);
      out = tag === tagOf(1, LEN) ? { workload: readWorkload(r, end), type: 'workload' } : { service: readService(r, end), type: 'service' };
      leave(r, end);
    } else skipUnknown(r, tag, ADDRESS_FIELDS);
  }
  return out;
}

const WORKLOAD_FIELDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27];
function readWorkload(r: Reader, end: number): WireWorkload {
  const w: WireWorkload = {
    addresses: [],
    authorization_policies: [],
    extensions: [],
    services: {},
    name: '',
    namespace: '',
    network: '',
    tunnel_protocol: 'NONE',
    trust_domain: '',
    service_account: '',
    waypoint: null,
    node: '',
    canonical_name: '',
    canonical_revision: '',
    workload_type: 'DEPLOYMENT',
    workload_name: '',
    native_tunnel: false,
    status: 'HEALTHY',
    cluster_id: '',
    network_gateway: null,
    uid: '',
    hostname: '',
    application_tunnel: null,
    locality: null,
    network_mode: 'STANDARD',
    capacity: null,
  };
  while (r.pos < end) {
    const tag = r.uint32();
    switch (tag) {
      case tagOf(20, LEN): w.uid = r.string(); break;
      case tagOf(1, LEN): w.name = r.string(); break;
      case tagOf(2, LEN): w.namespace = r.string(); break;
      case tagOf(3, LEN): w.addresses.push(r.bytes() as Buffer); break;
      case tagOf(21, LEN): w.hostname = r.string(); break;
      case tagOf(4, LEN): w.network = r.string(); break;
      case tagOf(5, VARINT): w.tunnel_protocol = enumName(r, 'istio.workload.TunnelProtocol'); break;
      case tagOf(6, LEN): w.trust_domain = r.string(); break;
      case tagOf(7, LEN): w.service_account = r.string(); break;
      case tagOf(8, LEN): if (w.waypoint) giveUp(); w.waypoint = readGateway(r); break;
      case tagOf(19, LEN): if (w.network_gateway) giveUp(); w.network_gateway = readGateway(r); break;
      case tagOf(9, LEN): w.node = r.string(); break;
      case tagOf(10, LEN): w.canonical_name = r.string(); break;
      case tagOf(11, LEN): w.canonical_revision = r.string(); break;
      case tagOf(12, VARINT): w.workload_type = enumName(r, 'istio.workload.WorkloadType'); break;
      case tagOf(13, LEN): w.workload_name = r.string(); break;
      case tagOf(14, VARINT): w.native_tunnel = r.bool(); break;
      case tagOf(23, LEN): {
        if (w.application_tunnel) giveUp();
        const e = sub(r);
        const t: NonNullable<WireWorkload['application_tunnel']> = { protocol: 'NONE', port: 0 };
        while (r.pos < e) {
          const tg = r.uint32();
          if (tg === tagOf(1, VARINT)) t.protocol = enumName(r, 'istio.workload.ApplicationTunnel.Protocol');
          else if (tg === tagOf(2, VARINT)) t.port = r.uint32();
          else skipUnknown(r, tg, [1, 2]);
        }
        leave(r, e);
        w.application_tunnel = t;
        break;
      }
      case tagOf(22, LEN): {
        const e = sub(r);
        let key = '';
        let ports: WirePort[] | undefined;
        while (r.pos < e) {
          const tg = r.uint32();
          if (tg === tagOf(1, LEN)) key = r.string();
          else if (tg === tagOf(2, LEN)) {
            if (ports) giveUp();
            ports = readPortList(r);
          } else skipUnknown(r, tg, [1, 2]);
        }
        leave(r, e);
        // A map entry without a value, or a key that would touch the prototype: the reflection codec's business.
        if (!ports || key === '__proto__') giveUp();
        w.services[key] = { ports };
        break;
      }
      case tagOf(16, LEN): w.authorization_policies.push(r.string()); break;
      case tagOf(17, VARINT): w.status = enumName(r, 'istio.workload.WorkloadStatus'); break;
      case tagOf(18, LEN): w.cluster_id = r.string(); break;
      case tagOf(24, LEN): {
        if (w.locality) giveUp();
        const e = sub(r);
        const l = { region: '', zone: '', subzone: '' };
        while (r.pos < e) {
          const tg = r.uint32();
          if (tg === tagOf(1, LEN)) l.region = r.string();
          else if (tg === tagOf(2, LEN)) l.zone = r.string();
          else if (tg === tagOf(3, LEN)) l.subzone = r.string();
          else skipUnknown(r, tg, [1, 2, 3]);
        }
        leave(r, e);
        w.locality = l;
        break;
      }
      case tagOf(25, VARINT): w.network_mode = enumName(r, 'istio.workload.NetworkMode'); break;
      case tagOf(27, LEN): {
        if (w.capacity) giveUp();
        const e = sub(r);
        const c = { value: 0 };
        while (r.pos < e) {
          const tg = r.uint32();
          if (tg === tagOf(1, VARINT)) c.value = r.uint32();
          else skipUnknown(r, tg, [1]);
        }
        leave(r, e);
        w.capacity = c;
        break;
      }
      // 26 extensions (and anything unexpected): the reflection codec.
      default: skipUnknown(r, tag, WORKLOAD_FIELDS);
    }
  }
  return w;
}

const SERVICE_FIELDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14];
function readService(r: Reader, end: number): WireService {
  const s: WireService = {
    addresses: [],
    ports: [],
    subject_alt_names: [],
    extensions: [],
    weighted_waypoints: [],
    name: '',
    namespace: '',
    hostname: '',
    waypoint: null,
    load_balancing: null,
    ip_families: 'AUTOMATIC',
    canonical: false,
    ingress_use_waypoint: false,
    visibility: 'PUBLIC',
  };
  while (r.pos < end) {
    const tag = r.uint32();
    switch (tag) {
      case tagOf(1, LEN): s.name = r.string(); break;
      case tagOf(2, LEN): s.namespace = r.string(); break;
      case tagOf(3, LEN): s.hostname = r.string(); break;
      case tagOf(4, LEN): s.addresses.push(readNetworkAddress(r)); break;
      case tagOf(5, LEN): s.ports.push(readPort(r)); break;
      case tagOf(6, LEN): s.subject_alt_names.push(r.string()); break;
      case tagOf(7, LEN): if (s.waypoint) giveUp(); s.waypoint = readGateway(r); break;
      case tagOf(8, LEN): {
        if (s.load_balancing) giveUp();
        const e = sub(r);
        const lb: NonNullable<WireService['load_balancing']> = { routing_preference: [], mode: 'UNSPECIFIED_MODE', health_policy: 'ONLY_HEALTHY' };
        while (r.pos < e) {
          const tg = r.uint32();
          if (tg === tagOf(1, LEN)) {
            const pe = sub(r);
            while (r.pos < pe) lb.routing_preference.push(enumName(r, 'istio.workload.LoadBalancing.Scope'));
            leave(r, pe);
          } else if (tg === tagOf(1, VARINT)) lb.routing_preference.push(enumName(r, 'istio.workload.LoadBalancing.Scope'));
          else if (tg === tagOf(2, VARINT)) lb.mode = enumName(r, 'istio.workload.LoadBalancing.Mode');
          else if (tg === tagOf(3, VARINT)) lb.health_policy = enumName(r, 'istio.workload.LoadBalancing.HealthPolicy');
          else skipUnknown(r, tg, [1, 2, 3]);
        }
        leave(r, e);
        s.load_balancing = lb;
        break;
      }
      case tagOf(9, VARINT): s.ip_families = enumName(r, 'istio.workload.IPFamilies'); break;
      case tagOf(11, VARINT): s.canonical = r.bool(); break;
      case tagOf(12, VARINT): s.ingress_use_waypoint = r.bool(); break;
      case tagOf(14, VARINT): s.visibility = enumName(r, 'istio.workload.Service.Visibility'); break;
      // 10 extensions, 13 weighted_waypoints (and anything unexpected): the reflection codec.
      default: skipUnknown(r, tag, SERVICE_FIELDS);
    }
  }
  return s;
}

function readPortList(r: Reader): WirePort[] {
  const e = sub(r);
  const ports: WirePort[] = [];
  while (r.pos < e) {
    const tg = r.uint32();
    if (tg === tagOf(1, LEN)) ports.push(readPort(r));
    else skipUnknown(r, tg, [1]);
  }
  leave(r, e);
  return ports;
}

function readPort(r: Reader): WirePort {
  const e = sub(r);
  const p: WirePort = { service_port: 0, target_port: 0, app_protocol: 'UNKNOWN' };
  while (r.pos < e) {
    const tg = r.uint32();
    if (tg === tagOf(1, VARINT)) p.service_port = r.uint32();
    else if (tg === tagOf(2, VARINT)) p.target_port = r.uint32();
    else if (tg === tagOf(3, VARINT)) p.app_protocol = enumName(r, 'istio.workload.AppProtocol');
    else skipUnknown(r, tg, [1, 2, 3]);
  }
  leave(r, e);
  return p;
}

const EMPTY_BYTES = Buffer.alloc(0);

function readNetworkAddress(r: Reader): WireNetworkAddress {
  const e = sub(r);
  let network = '';
  let address: Buffer | undefined;
  let length: number | undefined;
  while (r.pos < e) {
    const tg = r.uint32();
    if (tg === tagOf(1, LEN)) network = r.string();
    else if (tg === tagOf(2, LEN)) address = r.bytes() as Buffer;
    else if (tg === tagOf(3, VARINT)) length = r.uint32();
    else skipUnknown(r, tg, [1, 2, 3]);
  }
  leave(r, e);
  const out: WireNetworkAddress & { _length?: 'length' } = { network, address: address ?? Buffer.from(EMPTY_BYTES) };
  if (length !== undefined) {
    out.length = length;
    out._length = 'length'; // protobufjs names the set member of proto3 `optional`'s synthetic oneof
  }
  return out;
}

function readGateway(r: Reader): WireGatewayAddress {
  const e = sub(r);
  const g: WireGatewayAddress = { hbone_mtls_port: 0 };
  let which = 0;
  while (r.pos < e) {
    const tg = r.uint32();
    if (tg === tagOf(1, LEN) || tg === tagOf(2, LEN)) {
      if (which !== 0) giveUp();
      which = tg >>> 3;
      if (which === 1) {
        const he = sub(r);
        const h = { namespace: '', hostname: '' };
        while (r.pos < he) {
          const t2 = r.uint32();
          if (t2 === tagOf(1, LEN)) h.namespace = r.string();
          else if (t2 === tagOf(2, LEN)) h.hostname = r.string();
          else skipUnknown(r, t2, [1, 2]);
        }
        leave(r, he);
        g.hostname = h;
      } else g.address = readNetworkAddress(r);
    } else if (tg === tagOf(3, VARINT)) g.hbone_mtls_port = r.uint32();
    else skipUnknown(r, tg, [1, 2, 3]);
  }
  leave(r, e);
  if (which !== 0) g.destination = which === 1 ? 'hostname' : 'address';
  return g;
}

// ------------------------------------------------------------------ google.protobuf.Struct

type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

function valueFromJson(v: Json): WireInit<WireValue> {
  if (v === null) return { nullValue: 'NULL_VALUE' };
  if (typeof v === 'boolean') return { boolValue: v };
  if (typeof v === 'number') return { numberValue: v };
  if (typeof v === 'string') return { stringValue: v };
  if (Array.isArray(v)) return { listValue: { values: v.map(valueFromJson) } };
  return { structValue: structFromJson(v) };
}

/**
 * A JSON object (e.g. node metadata, CSR metadata) as a Struct message to encode. Keys are
 * sorted, so the bytes are deterministic (as protoc's and prost's BTreeMap encoding).
 */
export function structFromJson(obj: { [key: string]: Json }): WireInit<WireStruct> {
  const fields: Record<string, WireInit<WireValue>> = {};
  for (const k of Object.keys(obj).sort()) fields[k] = valueFromJson(obj[k] as Json);
  return { fields };
}

function valueToJson(v: WireValue): Json {
  switch (v.kind) {
    case 'boolValue':
      return v.boolValue ?? false;
    case 'numberValue':
      return v.numberValue ?? 0;
    case 'stringValue':
      return v.stringValue ?? '';
    case 'listValue':
      return (v.listValue?.values ?? []).map(valueToJson);
    case 'structValue':
      return v.structValue ? structToJson(v.structValue) : {};
    default:
      return null;
  }
}

/** A decoded Struct as the JSON object it stands for. */
export function structToJson(s: WireStruct): { [key: string]: Json } {
  const out: { [key: string]: Json } = {};
  for (const [k, v] of Object.entries(s.fields)) out[k] = valueToJson(v);
  return out;
}

// ------------------------------------------------------------------ gRPC services

export interface GrpcServices {
  /** envoy.service.discovery.v3.AggregatedDiscoveryService (DeltaAggregatedResources). */
  ads: ServiceDefinition;
  /** istio.v1.auth.IstioCertificateService (CreateCertificate). */
  ca: ServiceDefinition;
}

let services: GrpcServices | undefined;

/** Service definitions for grpc-js clients and servers (Server.addService, makeClientConstructor). */
export function grpcServices(): GrpcServices {
  if (services !== undefined) return services;
  const options: ProtoLoaderOptions = { ...TO_OBJECT_OPTIONS, keepCase: true, includeDirs: [protoDir()] };
  const pkg = loadGrpcPackage([...PROTO_FILES], options);
  const ads = pkg['envoy.service.discovery.v3.AggregatedDiscoveryService'];
  const ca = pkg['istio.v1.auth.IstioCertificateService'];
  if (ads === undefined || ca === undefined || 'format' in ads || 'format' in ca) {
    throw new ZtError('ZT_ERR_CONFIG_INVALID', 'proto/ does not define the xDS and CA services');
  }
  services = { ads: ads as ServiceDefinition, ca: ca as ServiceDefinition };
  return services;
}
