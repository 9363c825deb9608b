// The shapes every layer shares: the effective process Config (from env) and the
// local config file's records (workloads, services, policies) after validation.
// Pure types; nothing here reads the environment or the disk. The local config records are
// derived from the zod schema in schema.ts (type-only imports: nothing is loaded at run time).
// Field names follow upstream ztunnel's local config schema (camelCase), see
// upstream ztunnel's local config (https://github.com/istio/ztunnel/blob/master/examples/localhost.yaml,
// src/config.rs for the environment).

import type { z } from 'zod';
import type * as s from './schema.js';

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
  /**
   * ZTUNNEL_WORKER_THREADS: data-path threads. 1 = the data path runs on the main thread; N ≥ 2 =
   * N worker threads, each with its own SO_REUSEPORT listeners, HBONE pool and server.
   */
  workerThreads: number;
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
// The model records are derived from the one schema in schema.ts (its output types), so their
// fields are written once; test/unit/config-schema.test.ts pins each shape at compile time.

type Out<T extends z.ZodType> = z.output<T>;

export type TunnelProtocol = Out<typeof s.tunnelProtocol>;
export type HealthStatus = Out<typeof s.health>;
/** `network/IP` address form or `namespace/hostname` form, plus the HBONE port. */
export type GatewayAddress = Out<typeof s.gatewayAddress>;
export type Locality = Out<typeof s.locality>;
/** servicePort → targetPort (0 = named port, resolved per endpoint). */
export type PortMap = Out<typeof s.portMap>;
export type Workload = Out<typeof s.workloadSchema>;
export type Service = Out<typeof s.serviceSchema>;
export type Endpoint = Service['endpoints'] extends ReadonlyMap<string, infer E> ? E : never;
export type StringMatch = Out<typeof s.stringMatch>;
export type ServiceAccountMatch = Out<typeof s.serviceAccountMatch>;
/** One Match: every non-empty group must hold; values inside a group are OR'd. */
export type Match = Out<typeof s.matchSchema>;
export type Authorization = Out<typeof s.authorizationSchema>;
export type LocalConfig = Out<typeof s.localConfigSchema>;
