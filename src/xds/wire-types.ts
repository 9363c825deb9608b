// The decoded shapes of the protobuf messages ztunnel-ts exchanges with istiod (proto/): what
// protos.ts's decoders return. Field names are the proto names (snake_case, keepCase); every
// scalar and list is present with its proto3 default, enums are their names (or the bare number
// when the value is not one this build knows), int64 are decimal strings, bytes are Buffers, an
// absent sub-message is null, and a oneof names its set member in an extra key.
// Pure types; the definitions they mirror are in proto/ (see each file's header for the source).

/** An enum value: its name, or the number when the sender used a value we do not know. */
export type EnumValue<Names extends string> = Names | number;

export interface WireAny {
  type_url: string;
  value: Buffer;
}

// ------------------------------------------------------------------ istio.workload

export interface WireNetworkAddress {
  network: string;
  address: Buffer;
  /** proto3 `optional`: undefined when absent. */
  length?: number;
}

export interface WireNamespacedHostname {
  namespace: string;
  hostname: string;
}

export interface WireGatewayAddress {
  hostname?: WireNamespacedHostname | null;
  address?: WireNetworkAddress | null;
  hbone_mtls_port: number;
  destination?: 'hostname' | 'address';
}

export interface WirePort {
  service_port: number;
  target_port: number;
  app_protocol: EnumValue<'UNKNOWN' | 'HTTP11' | 'HTTP2' | 'GRPC' | 'TCP' | 'TLS'>;
}

export interface WireExtension {
  name: string;
  config: WireAny | null;
}

export interface WireLocality {
  region: string;
  zone: string;
  subzone: string;
}

export interface WireWorkload {
  uid: string;
  name: string;
  namespace: string;
  addresses: Buffer[];
  hostname: string;
  network: string;
  tunnel_protocol: EnumValue<'NONE' | 'HBONE' | 'LEGACY_ISTIO_MTLS'>;
  trust_domain: string;
  service_account: string;
  waypoint: WireGatewayAddress | null;
  network_gateway: WireGatewayAddress | null;
  node: string;
  canonical_name: string;
  canonical_revision: string;
  workload_type: EnumValue<'DEPLOYMENT' | 'CRONJOB' | 'POD' | 'JOB'>;
  workload_name: string;
  native_tunnel: boolean;
  application_tunnel: { protocol: EnumValue<'NONE' | 'PROXY'>; port: number } | null;
  services: Record<string, { ports: WirePort[] }>;
  authorization_policies: string[];
  status: EnumValue<'HEALTHY' | 'UNHEALTHY'>;
  cluster_id: string;
  locality: WireLocality | null;
  network_mode: EnumValue<'STANDARD' | 'HOST_NETWORK'>;
  extensions: WireExtension[];
  capacity: { value: number } | null;
}

export interface WireLoadBalancing {
  routing_preference: EnumValue<'UNSPECIFIED_SCOPE' | 'REGION' | 'ZONE' | 'SUBZONE' | 'NODE' | 'CLUSTER' | 'NETWORK'>[];
  mode: EnumValue<'UNSPECIFIED_MODE' | 'STRICT' | 'FAILOVER' | 'PASSTHROUGH'>;
  health_policy: EnumValue<'ONLY_HEALTHY' | 'ALLOW_ALL'>;
}

export interface WireService {
  name: string;
  namespace: string;
  hostname: string;
  addresses: WireNetworkAddress[];
  ports: WirePort[];
  subject_alt_names: string[];
  waypoint: WireGatewayAddress | null;
  load_balancing: WireLoadBalancing | null;
  ip_families: EnumValue<'AUTOMATIC' | 'IPV4_ONLY' | 'IPV6_ONLY' | 'DUAL'>;
  extensions: WireExtension[];
  canonical: boolean;
  ingress_use_waypoint: boolean;
  weighted_waypoints: { destination: WireGatewayAddress | null; weight: number }[];
  visibility: EnumValue<'PUBLIC' | 'NAMESPACE'>;
}

export interface WireAddress {
  workload?: WireWorkload | null;
  service?: WireService | null;
  type?: 'workload' | 'service';
}

// ------------------------------------------------------------------ istio.security

export interface WireStringMatch {
  exact?: string;
  prefix?: string;
  suffix?: string;
  presence?: Record<string, never> | null;
  match_type?: 'exact' | 'prefix' | 'suffix' | 'presence';
}

export interface WireIpRange {
  address: Buffer;
  length: number;
}

export interface WireServiceAccountMatch {
  namespace: string;
  serviceAccount: string;
}

export interface WireMatch {
  namespaces: WireStringMatch[];
  not_namespaces: WireStringMatch[];
  service_accounts: WireServiceAccountMatch[];
  not_service_accounts: WireServiceAccountMatch[];
  principals: WireStringMatch[];
  not_principals: WireStringMatch[];
  source_ips: WireIpRange[];
  not_source_ips: WireIpRange[];
  destination_ips: WireIpRange[];
  not_destination_ips: WireIpRange[];
  destination_ports: number[];
  not_destination_ports: number[];
  extensions: WireExtension[];
}

export interface WireAuthorization {
  name: string;
  namespace: string;
  scope: EnumValue<'GLOBAL' | 'NAMESPACE' | 'WORKLOAD_SELECTOR'>;
  action: EnumValue<'ALLOW' | 'DENY'>;
  rules: { clauses: { matches: WireMatch[] }[] }[];
  dry_run: boolean;
  extensions: WireExtension[];
}

// ------------------------------------------------------------------ envoy delta xDS

/** google.protobuf.Struct in its message form (see protos.ts structFromJson / structToJson). */
export interface WireStruct {
  fields: Record<string, WireValue>;
}
/** google.protobuf.Value: protobufjs's built-in well-known types use camelCase field names. */
export interface WireValue {
  nullValue?: EnumValue<'NULL_VALUE'>;
  numberValue?: number;
  stringValue?: string;
  boolValue?: boolean;
  structValue?: WireStruct | null;
  listValue?: { values: WireValue[] } | null;
  kind?: 'nullValue' | 'numberValue' | 'stringValue' | 'boolValue' | 'structValue' | 'listValue';
}

export interface WireNode {
  id: string;
  cluster: string;
  metadata: WireStruct | null;
}

export interface WireStatus {
  code: number;
  message: string;
  details: WireAny[];
}

export interface WireDeltaDiscoveryRequest {
  node: WireNode | null;
  type_url: string;
  resource_names_subscribe: string[];
  resource_names_unsubscribe: string[];
  initial_resource_versions: Record<string, string>;
  response_nonce: string;
  error_detail: WireStatus | null;
}

export interface WireResource {
  name: string;
  aliases: string[];
  version: string;
  resource: WireAny | null;
  ttl: { seconds: string; nanos: number } | null;
  cache_control: { do_not_cache: boolean } | null;
}

export interface WireDeltaDiscoveryResponse {
  system_version_info: string;
  resources: WireResource[];
  type_url: string;
  removed_resources: string[];
  nonce: string;
}

// ------------------------------------------------------------------ istio.v1.auth

export interface WireIstioCertificateRequest {
  csr: string;
  /** int64 seconds, as decimal text. */
  validity_duration: string;
  metadata: WireStruct | null;
}

export interface WireIstioCertificateResponse {
  cert_chain: string[];
}

// ------------------------------------------------------------------ what callers encode

type Init<T> = T extends Buffer
  ? Buffer | Uint8Array
  : T extends (infer U)[]
    ? Init<U>[]
    : T extends object
      ? { [K in keyof T]?: Init<NonNullable<T[K]>> | null }
      : T;

/**
 * The input of an encoder: every field optional. Set only what you mean: a field set to its
 * zero value ('' / 0 / false) is written to the wire (valid, but not the canonical bytes).
 */
export type WireInit<T> = Init<T>;
