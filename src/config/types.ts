// The shapes every layer shares: the effective process Config (from env) and the
// local config file's records (workloads, services, policies) after validation.
// Pure types; nothing here reads the environment or the disk.
// Field names follow upstream ztunnel's local config schema (camelCase), see
// upstream ztunnel's local config (https://github.com/istio/ztunnel/blob/master/examples/localhost.yaml,
// src/config.rs for the environment).

export type ProxyMode = 'node' | 'dedicated';
export type LogFormat = 'plain' | 'json';

/** The effective process configuration, validated and deep-frozen by loadConfig(). */
export interface Config {
  proxyMode: ProxyMode;
  /** dedicated mode: namespace/name/serviceAccount of the single local workload. */
  proxyWorkloadInfo: { namespace: string; name: string; serviceAccount: string } | undefined;
  nodeName: string | undefined;
  trustDomain: string;
  clusterId: string;
  network: string;
  /** LOCAL_XDS_PATH (a file, watched for changes) or LOCAL_XDS (inline YAML). */
  localXdsPath: string | undefined;
  localXds: string | undefined;
  /** ENABLE_ORIG_SRC: true = IP_TRANSPARENT required, false = never, undefined = best effort. */
  enableOrigSrc: boolean | undefined;
  /** PACKET_MARK: SO_MARK for sockets ztunnel creates; undefined = none. */
  packetMark: number | undefined;
  http2StreamWindowSize: number;
  http2ConnectionWindowSize: number;
  http2FrameSize: number;
  poolMaxStreamsPerConnection: number;
  poolUnusedReleaseTimeoutMs: number;
  connectionTerminationDeadlineMs: number;
  logFormat: LogFormat;
  /** LOG_LEVEL (RUST_LOG accepted too): initial level of the process log. */
  logLevel: string;
  /** ACCESS_LOG_ONLY_FAILED=true: only failed connections produce an access-log line. */
  accessLogOnlyFailed: boolean;
  enableSocks5: boolean;
  ipv6Enabled: boolean;
  /** LOCAL_CA_CERT / LOCAL_CA_KEY: PEM file paths of the mesh root; undefined = ephemeral root. */
  localCaCert: string | undefined;
  localCaKey: string | undefined;
  /** Listener ports. Defaults are upstream's; tests may move them (0 = pick any). */
  ports: Ports;
  /** Bind addresses: data-plane listeners and admin. */
  bindAddress: string;
  adminBindAddress: string;
  /** Connect timeout for every upstream connect (ms); upstream uses 10 s. */
  connectTimeoutMs: number;
  /** ZTUNNEL_SPLICE: relay TCP ↔ TCP legs with splice(2) in a worker (zero-copy). */
  spliceEnabled: boolean;
  /** The delta xDS control plane (istiod); undefined = none (a local config, or XDS_ADDRESS=""). */
  xds: ControlPlaneEndpoint | undefined;
  /** istiod's CA (CA_ADDRESS); undefined = the built-in CA (LOCAL_CA_CERT/KEY, FAKE_CA, or an ephemeral root). */
  ca: ControlPlaneEndpoint | undefined;
  /** AUTH_TOKEN: the bearer token sent to istiod (xDS and CA), re-read on every use. */
  authToken: TokenSource;
  /** SECRET_TTL: the lifetime asked of istiod's CA for workload certificates. */
  secretTtlMs: number;
  /** ztunnel's own pod (downward API): the xDS node and ztunnel's own identity. */
  self: SelfInfo;
  /** ISTIO_META_* (prefix stripped) and ISTIO_METAJSON_* (parsed): the xDS node metadata. */
  proxyMetadata: Readonly<Record<string, JsonValue>>;
}

export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** Where a PEM trust bundle comes from: a file (re-read on connect), inline PEM, or the OS roots. */
export type RootCaSource = { kind: 'file'; path: string } | { kind: 'pem'; pem: string } | { kind: 'system' };

/** The token file (the projected service-account token; missing = no token) or a literal token. */
export type TokenSource = { kind: 'file'; path: string } | { kind: 'literal'; value: string };

export interface ControlPlaneEndpoint {
  /** host:port, no scheme (IPv6 hosts in brackets). */
  address: string;
  /** XDS_ROOT_CA / CA_ROOT_CA: what the server certificate must chain to. */
  rootCa: RootCaSource;
  /** ALT_XDS_HOSTNAME / ALT_CA_HOSTNAME: the name checked in the server certificate instead of the host. */
  altHostname: string | undefined;
  /** XDS_HEADER_<K> / CA_HEADER_<K>: extra gRPC metadata (names lower-cased). */
  headers: Readonly<Record<string, string>>;
}

export interface SelfInfo {
  podName: string | undefined;
  podNamespace: string | undefined;
  serviceAccount: string | undefined;
  /** INSTANCE_IP (upstream's fallback in the node id: 1.1.1.1). */
  instanceIp: string | undefined;
}

export interface Ports {
  outbound: number; // 15001
  inboundPlaintext: number; // 15006
  inbound: number; // 15008
  socks5: number; // 15080
  admin: number; // 15000
  stats: number; // 15020
  readiness: number; // 15021
  /** Port of peer ztunnels' HBONE listener (normally 15008). */
  hboneTarget: number;
}

// ---------------------------------------------------------------- local config

export type TunnelProtocol = 'TCP' | 'HBONE';
export type HealthStatus = 'Healthy' | 'Unhealthy';

/** `network/IP` address form or `namespace/hostname` form, plus the HBONE port. */
export interface GatewayAddress {
  destination: string;
  hboneMtlsPort: number;
}

export interface Locality {
  region: string;
  zone: string;
  subzone: string;
}

/** servicePort → targetPort (0 = named port, resolved per endpoint). */
export type PortMap = ReadonlyMap<number, number>;

export interface Workload {
  uid: string;
  name: string;
  namespace: string;
  serviceAccount: string; // default "default"
  trustDomain: string; // default "cluster.local"
  workloadIps: string[]; // canonical text form (IPv4-mapped IPv6 → IPv4)
  hostname: string;
  network: string;
  protocol: TunnelProtocol; // default TCP
  networkMode: 'Standard' | 'HostNetwork';
  node: string;
  waypoint: GatewayAddress | undefined;
  networkGateway: GatewayAddress | undefined;
  nativeTunnel: boolean;
  applicationTunnel: { protocol: 'NONE' | 'PROXY'; port: number | undefined } | undefined;
  /** `namespace/name` keys of WorkloadSelector policies that apply to this workload. */
  authorizationPolicies: string[];
  status: HealthStatus;
  clusterId: string;
  locality: Locality | undefined;
  workloadName: string;
  workloadType: string;
  canonicalName: string;
  canonicalRevision: string;
  capacity: number; // default 1
  /** `namespace/hostname` → servicePort → targetPort. */
  services: ReadonlyMap<string, PortMap>;
}

export interface Endpoint {
  workloadUid: string;
  port: PortMap;
  status: HealthStatus;
}

export interface Service {
  name: string;
  namespace: string;
  hostname: string;
  vips: { network: string; address: string }[];
  cidrVips: { network: string; cidr: string }[];
  ports: PortMap;
  /** workload uid → endpoint. Filled from workloads' `services` as well as given directly. */
  endpoints: ReadonlyMap<string, Endpoint>;
  subjectAltNames: string[];
  waypoint: GatewayAddress | undefined;
  loadBalancer:
    | {
        routingPreferences: string[];
        mode: 'Standard' | 'Strict' | 'Failover' | 'Passthrough';
        healthPolicy: 'OnlyHealthy' | 'AllowAll';
      }
    | undefined;
  ipFamilies: 'Dual' | 'IPv4' | 'IPv6' | undefined;
  canonical: boolean;
  visibility: 'Public' | 'Namespace';
}

export type StringMatch =
  | { kind: 'Exact'; value: string }
  | { kind: 'Prefix'; value: string }
  | { kind: 'Suffix'; value: string }
  | { kind: 'Presence' };

export interface ServiceAccountMatch {
  namespace: string;
  serviceAccount: string;
}

/** One Match: every non-empty group must hold; values inside a group are OR'd. */
export interface Match {
  namespaces: StringMatch[];
  notNamespaces: StringMatch[];
  principals: StringMatch[];
  notPrincipals: StringMatch[];
  serviceAccounts: ServiceAccountMatch[];
  notServiceAccounts: ServiceAccountMatch[];
  sourceIps: string[]; // CIDR text, e.g. 10.0.0.0/8 (a bare IP is /32 or /128)
  notSourceIps: string[];
  destinationIps: string[];
  notDestinationIps: string[];
  destinationPorts: number[];
  notDestinationPorts: number[];
}

export interface Authorization {
  name: string;
  namespace: string;
  scope: 'Global' | 'Namespace' | 'WorkloadSelector';
  action: 'Allow' | 'Deny';
  dryRun: boolean;
  /** rules (OR) of clauses (AND) of matches (OR). */
  rules: Match[][][];
}

export interface LocalConfig {
  workloads: Workload[];
  services: Service[];
  policies: Authorization[];
}
