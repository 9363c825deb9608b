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
  WireStruct,
  WireValue,
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

export const AddressCodec = new WireCodec<WireAddress>('istio.workload.Address');
export const AuthorizationCodec = new WireCodec<WireAuthorization>('istio.security.Authorization');
export const DeltaDiscoveryRequestCodec = new WireCodec<WireDeltaDiscoveryRequest>('envoy.service.discovery.v3.DeltaDiscoveryRequest');
export const DeltaDiscoveryResponseCodec = new WireCodec<WireDeltaDiscoveryResponse>('envoy.service.discovery.v3.DeltaDiscoveryResponse');
export const IstioCertificateRequestCodec = new WireCodec<WireIstioCertificateRequest>('istio.v1.auth.IstioCertificateRequest');
export const IstioCertificateResponseCodec = new WireCodec<WireIstioCertificateResponse>('istio.v1.auth.IstioCertificateResponse');

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
