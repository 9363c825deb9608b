// The process configuration: environment variable names and defaults as named constants,
// and loadConfig(env), which validates every variable once and returns a deep-frozen Config.
// Must never read process.env itself (callers pass it in, tests pass a plain object) and
// never touch the disk: LOCAL_XDS_PATH is only recorded here, local-config.ts reads it.
// Invariant: an invalid value is a start-up error naming the variable, never a silent default.
// Names follow upstream ztunnel (https://github.com/istio/ztunnel/blob/master/src/config.rs) so existing deployments keep working.

import os from 'node:os';
import { ZtError } from '../errors.js';
import { canonicalIp, ipFamily, isLoopbackIp } from '../util/ip.js';
import { parseDurationMs } from './duration.js';
import { deepFreeze } from './freeze.js';
import type { Config, JsonValue, LogFormat, Ports, ProxyMode, RootCaSource, TokenSource } from './types.js';

export const ENV = {
  LOCAL_XDS_PATH: 'LOCAL_XDS_PATH',
  LOCAL_XDS: 'LOCAL_XDS',
  NODE_NAME: 'NODE_NAME',
  PROXY_MODE: 'PROXY_MODE',
  PROXY_WORKLOAD_INFO: 'PROXY_WORKLOAD_INFO',
  TRUST_DOMAIN: 'TRUST_DOMAIN',
  CLUSTER_ID: 'CLUSTER_ID',
  ISTIO_META_CLUSTER_ID: 'ISTIO_META_CLUSTER_ID',
  NETWORK: 'NETWORK',
  ENABLE_ORIG_SRC: 'ENABLE_ORIG_SRC',
  PACKET_MARK: 'PACKET_MARK',
  HTTP2_STREAM_WINDOW_SIZE: 'HTTP2_STREAM_WINDOW_SIZE',
  HTTP2_CONNECTION_WINDOW_SIZE: 'HTTP2_CONNECTION_WINDOW_SIZE',
  HTTP2_FRAME_SIZE: 'HTTP2_FRAME_SIZE',
  POOL_MAX_STREAMS_PER_CONNECTION: 'POOL_MAX_STREAMS_PER_CONNECTION',
  POOL_UNUSED_RELEASE_TIMEOUT: 'POOL_UNUSED_RELEASE_TIMEOUT',
  CONNECTION_TERMINATION_DEADLINE: 'CONNECTION_TERMINATION_DEADLINE',
  TERMINATION_GRACE_PERIOD_SECONDS: 'TERMINATION_GRACE_PERIOD_SECONDS',
  LOG_FORMAT: 'LOG_FORMAT',
  LOG_LEVEL: 'LOG_LEVEL',
  RUST_LOG: 'RUST_LOG',
  ACCESS_LOG_ONLY_FAILED: 'ACCESS_LOG_ONLY_FAILED',
  ZTUNNEL_SPLICE: 'ZTUNNEL_SPLICE',
  ZTUNNEL_WORKER_THREADS: 'ZTUNNEL_WORKER_THREADS',
  UNSTABLE_ENABLE_SOCKS5: 'UNSTABLE_ENABLE_SOCKS5',
  IPV6_ENABLED: 'IPV6_ENABLED',
  LOCAL_CA_CERT: 'LOCAL_CA_CERT',
  LOCAL_CA_KEY: 'LOCAL_CA_KEY',
  ZTUNNEL_OUTBOUND_PORT: 'ZTUNNEL_OUTBOUND_PORT',
  ZTUNNEL_INBOUND_PLAINTEXT_PORT: 'ZTUNNEL_INBOUND_PLAINTEXT_PORT',
  ZTUNNEL_INBOUND_PORT: 'ZTUNNEL_INBOUND_PORT',
  ZTUNNEL_SOCKS5_PORT: 'ZTUNNEL_SOCKS5_PORT',
  ZTUNNEL_ADMIN_PORT: 'ZTUNNEL_ADMIN_PORT',
  ZTUNNEL_STATS_PORT: 'ZTUNNEL_STATS_PORT',
  ZTUNNEL_READINESS_PORT: 'ZTUNNEL_READINESS_PORT',
  ZTUNNEL_HBONE_TARGET_PORT: 'ZTUNNEL_HBONE_TARGET_PORT',
  ZTUNNEL_BIND_ADDRESS: 'ZTUNNEL_BIND_ADDRESS',
  ZTUNNEL_ADMIN_BIND_ADDRESS: 'ZTUNNEL_ADMIN_BIND_ADDRESS',
  CONNECT_TIMEOUT: 'CONNECT_TIMEOUT',
  XDS_ADDRESS: 'XDS_ADDRESS',
  XDS_ROOT_CA: 'XDS_ROOT_CA',
  ALT_XDS_HOSTNAME: 'ALT_XDS_HOSTNAME',
  CA_ADDRESS: 'CA_ADDRESS',
  CA_ROOT_CA: 'CA_ROOT_CA',
  ALT_CA_HOSTNAME: 'ALT_CA_HOSTNAME',
  FAKE_CA: 'FAKE_CA',
  AUTH_TOKEN: 'AUTH_TOKEN',
  SECRET_TTL: 'SECRET_TTL',
  POD_NAME: 'POD_NAME',
  POD_NAMESPACE: 'POD_NAMESPACE',
  SERVICE_ACCOUNT: 'SERVICE_ACCOUNT',
  INSTANCE_IP: 'INSTANCE_IP',
  KUBERNETES_SERVICE_HOST: 'KUBERNETES_SERVICE_HOST',
} as const;

/** Prefixes of variable families: extra gRPC metadata, and the xDS node metadata. */
export const ENV_PREFIX = {
  XDS_HEADER: 'XDS_HEADER_',
  CA_HEADER: 'CA_HEADER_',
  ISTIO_META: 'ISTIO_META_',
  ISTIO_METAJSON: 'ISTIO_METAJSON_',
} as const;

export type EnvName = (typeof ENV)[keyof typeof ENV];

export const LOG_LEVELS = ['error', 'warn', 'info', 'debug', 'trace', 'off'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];

export const DEFAULTS = {
  proxyMode: 'node' as ProxyMode,
  trustDomain: 'cluster.local',
  clusterId: 'Kubernetes',
  network: '',
  http2StreamWindowSize: 4 * 1024 * 1024,
  http2ConnectionWindowSize: 16 * 1024 * 1024,
  http2FrameSize: 1024 * 1024,
  poolMaxStreamsPerConnection: 100,
  poolUnusedReleaseTimeoutMs: 5 * 60_000,
  connectionTerminationDeadlineMs: 5_000,
  logFormat: 'plain' as LogFormat,
  logLevel: 'info' as LogLevel,
  accessLogOnlyFailed: false,
  spliceEnabled: true,
  /** ZTUNNEL_WORKER_THREADS default: half the cores the process may use, at most this many. */
  maxDefaultWorkerThreads: 8,
  enableSocks5: false,
  ipv6Enabled: true,
  ports: {
    outbound: 15001,
    inboundPlaintext: 15006,
    inbound: 15008,
    socks5: 15080,
    admin: 15000,
    stats: 15020,
    readiness: 15021,
    hboneTarget: 15008,
  } satisfies Ports,
  bindAddressIpv6: '::',
  bindAddressIpv4: '0.0.0.0',
  adminBindAddress: '127.0.0.1',
  connectTimeoutMs: 10_000,
  /** Upstream's istiod address inside a cluster (KUBERNETES_SERVICE_HOST set), and outside one. */
  xdsAddressInCluster: 'istiod.istio-system.svc:15012',
  xdsAddressOutsideCluster: 'localhost:15012',
  /** Where the istio-ca-root-cert ConfigMap and the projected istio-token are mounted in the pod. */
  rootCaPath: '/var/run/secrets/istio/root-cert.pem',
  authTokenPath: '/var/run/secrets/tokens/istio-token',
  secretTtlMs: 24 * 60 * 60 * 1000,
} as const;

// RFC 9113 §6.9.1 / §6.5.2: windows up to 2^31-1, SETTINGS_MAX_FRAME_SIZE in [2^14, 2^24-1].
const MAX_H2_WINDOW = 2 ** 31 - 1;
const MIN_H2_FRAME = 16_384;
const MAX_H2_FRAME = 16_777_215;
const MAX_U32 = 2 ** 32 - 1;

type Env = Record<string, string | undefined>;

function invalid(name: EnvName | string, problem: string): never {
  throw new ZtError('ZT_ERR_CONFIG_INVALID', `${name}: ${problem}`);
}

/** The variable's value; empty or blank counts as unset, as in most shells' `VAR=` usage. */
function findRaw(env: Env, name: EnvName): string | undefined {
  const v = env[name];
  if (v === undefined || v.trim() === '') return undefined;
  return v.trim();
}

function readString(env: Env, name: EnvName): string | undefined {
  return findRaw(env, name);
}

function readBool(env: Env, name: EnvName): boolean | undefined {
  const v = findRaw(env, name);
  if (v === undefined) return undefined;
  switch (v.toLowerCase()) {
    case 'true':
    case '1':
      return true;
    case 'false':
    case '0':
      return false;
    default:
      return invalid(name, `expected true, false, 1 or 0, got '${v}'`);
  }
}

function readInt(env: Env, name: EnvName, min: number, max: number): number | undefined {
  const v = findRaw(env, name);
  if (v === undefined) return undefined;
  let n: number;
  if (/^0x[0-9a-f]+$/i.test(v)) n = parseInt(v.slice(2), 16);
  else if (/^\d+$/.test(v)) n = Number(v);
  else return invalid(name, `expected an integer (decimal or 0x hex), got '${v}'`);
  if (!Number.isSafeInteger(n) || n < min || n > max) {
    return invalid(name, `expected an integer in ${min}..${max}, got '${v}'`);
  }
  return n;
}

function readPort(env: Env, name: EnvName, fallback: number, min = 0): number {
  return readInt(env, name, min, 65535) ?? fallback;
}

function readDurationMs(env: Env, name: EnvName, min = 0): number | undefined {
  const v = findRaw(env, name);
  if (v === undefined) return undefined;
  const ms = parseDurationMs(v);
  if (ms === undefined) {
    return invalid(name, `expected a duration such as 250ms, 5s, 5m, 1h, 1m30s or a number of seconds, got '${v}'`);
  }
  if (ms < min) return invalid(name, `must be at least ${min}ms, got '${v}'`);
  return ms;
}

function readEnum<T extends string>(env: Env, name: EnvName, allowed: readonly T[]): T | undefined {
  const v = findRaw(env, name);
  if (v === undefined) return undefined;
  const lower = v.toLowerCase();
  const hit = allowed.find((a) => a === lower);
  if (hit === undefined) return invalid(name, `expected one of ${allowed.join(', ')}, got '${v}'`);
  return hit;
}

function buildProxyMode(env: Env): ProxyMode {
  // Upstream calls node-wide mode "shared"; "node" is our name for it.
  const mode = readEnum(env, ENV.PROXY_MODE, ['node', 'shared', 'dedicated']);
  if (mode === undefined) return DEFAULTS.proxyMode;
  return mode === 'dedicated' ? 'dedicated' : 'node';
}

function buildWorkloadInfo(env: Env, mode: ProxyMode): Config['proxyWorkloadInfo'] {
  const v = findRaw(env, ENV.PROXY_WORKLOAD_INFO);
  if (v === undefined) {
    if (mode === 'dedicated') {
      return invalid(ENV.PROXY_WORKLOAD_INFO, 'required when PROXY_MODE=dedicated (namespace/name/serviceAccount)');
    }
    return undefined;
  }
  const parts = v.split('/');
  if (parts.length !== 3 || parts.some((p) => p === '')) {
    return invalid(ENV.PROXY_WORKLOAD_INFO, `expected namespace/name/serviceAccount, got '${v}'`);
  }
  const [namespace, name, serviceAccount] = parts as [string, string, string];
  return { namespace, name, serviceAccount };
}

/**
 * CONNECTION_TERMINATION_DEADLINE wins; else derived from the pod's grace period the way
 * upstream does (leave 5 s of it for long periods, 1 s for short ones), floored at 1 s
 * because upstream would underflow there; else the 5 s default.
 */
function buildTerminationDeadlineMs(env: Env): number {
  const explicit = readDurationMs(env, ENV.CONNECTION_TERMINATION_DEADLINE);
  if (explicit !== undefined) return explicit;
  const grace = readInt(env, ENV.TERMINATION_GRACE_PERIOD_SECONDS, 0, MAX_U32);
  if (grace === undefined) return DEFAULTS.connectionTerminationDeadlineMs;
  const seconds = grace > 10 ? grace - 5 : grace - 1;
  return Math.max(1, seconds) * 1000;
}

/** LOG_LEVEL wins; RUST_LOG may be a directive list, its bare global level is taken. */
function buildLogLevel(env: Env): LogLevel {
  const direct = readEnum(env, ENV.LOG_LEVEL, LOG_LEVELS);
  if (direct !== undefined) return direct;
  const rust = findRaw(env, ENV.RUST_LOG);
  if (rust === undefined) return DEFAULTS.logLevel;
  const globals = rust.split(',').map((d) => d.trim().toLowerCase()).filter((d) => d !== '' && !d.includes('='));
  const level = globals.at(-1);
  const hit = LOG_LEVELS.find((l) => l === level);
  if (hit === undefined) {
    // target-only directives (e.g. "ztunnel=debug") set no global level
    if (level === undefined && rust.includes('=')) return DEFAULTS.logLevel;
    return invalid(ENV.RUST_LOG, `expected one of ${LOG_LEVELS.join(', ')} (optionally followed by target=level directives), got '${rust}'`);
  }
  return hit;
}

function readIp(env: Env, name: EnvName): string | undefined {
  const v = findRaw(env, name);
  if (v === undefined) return undefined;
  const ip = canonicalIp(v);
  if (ip === undefined) return invalid(name, `'${v}' is not an IP address`);
  return ip;
}

function buildTrustDomain(env: Env): string {
  const v = readString(env, ENV.TRUST_DOMAIN);
  if (v === undefined) return DEFAULTS.trustDomain;
  if (/[\s/]/.test(v)) return invalid(ENV.TRUST_DOMAIN, `'${v}' is not a trust domain (no '/' or spaces allowed)`);
  return v;
}

/** TCP keepalive idle time on upstream and captured sockets (upstream: KEEPALIVE_TIME 180 s). */
export const KEEPALIVE_IDLE_MS = 180_000;

/**
 * `https://host:port`, `host:port` or `[v6]:port` → `host:port`. Plaintext (`http://`) is
 * refused: ztunnel talks to istiod over TLS only.
 */
function readGrpcAddress(name: EnvName, raw: string): string {
  let v = raw;
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(v);
  if (scheme) {
    if (scheme[1]?.toLowerCase() !== 'https') invalid(name, `'${raw}': only https:// (TLS) is supported`);
    v = v.slice(scheme[0].length);
  }
  v = v.replace(/\/+$/, '');
  const m = /^(\[[0-9a-fA-F:.]+\]|[^\s:/[\]]+):(\d{1,5})$/.exec(v);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port < 1 || port > 65535) invalid(name, `expected host:port (e.g. ${DEFAULTS.xdsAddressInCluster}), got '${raw}'`);
  return v;
}

/** A path (absolute or ./relative), `SYSTEM` (the OS roots) or inline PEM. */
function readRootCa(env: Env, name: EnvName): RootCaSource {
  const v = findRaw(env, name);
  if (v === undefined) return { kind: 'file', path: DEFAULTS.rootCaPath };
  if (v === 'SYSTEM') return { kind: 'system' };
  if (v.includes('-----BEGIN CERTIFICATE-----')) return { kind: 'pem', pem: v };
  if (v.includes('-----BEGIN')) invalid(name, 'inline PEM must hold CERTIFICATE blocks');
  return { kind: 'file', path: v };
}

function readHeaders(env: Env, prefix: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(env)) {
    if (!k.startsWith(prefix) || v === undefined) continue;
    const header = k.slice(prefix.length).toLowerCase();
    if (!/^[a-z0-9_.-]+$/.test(header)) invalid(k, `'${header}' is not a valid gRPC metadata name`);
    if (header.endsWith('-bin')) invalid(k, 'binary (-bin) metadata is not supported');
    out[header] = v.trim();
  }
  return out;
}

function readProxyMetadata(env: Env): Record<string, JsonValue> {
  const out: Record<string, JsonValue> = {};
  for (const [k, v] of Object.entries(env)) {
    if (v === undefined) continue;
    if (k.startsWith(ENV_PREFIX.ISTIO_METAJSON)) {
      try {
        out[k.slice(ENV_PREFIX.ISTIO_METAJSON.length)] = JSON.parse(v) as JsonValue;
      } catch (err) {
        invalid(k, `not valid JSON: ${(err as Error).message}`);
      }
    } else if (k.startsWith(ENV_PREFIX.ISTIO_META) && k.length > ENV_PREFIX.ISTIO_META.length) {
      out[k.slice(ENV_PREFIX.ISTIO_META.length)] = v;
    }
  }
  return out;
}

function readTokenSource(env: Env): TokenSource {
  const v = findRaw(env, ENV.AUTH_TOKEN);
  if (v === undefined) return { kind: 'file', path: DEFAULTS.authTokenPath };
  // A value that looks like a path is a file; anything else is the token itself (as upstream).
  return v.includes('/') ? { kind: 'file', path: v } : { kind: 'literal', value: v };
}

/**
 * The control plane: XDS_ADDRESS if set (an empty value disables xDS, as upstream); unset with
 * a local config → none; unset without one → istiod (in a cluster) or localhost:15012.
 * The CA: CA_ADDRESS if set; else, when xDS is on and no built-in CA was asked for, the xDS
 * address; else the built-in CA. CA_ROOT_CA defaults to XDS_ROOT_CA's value (upstream defaults
 * both to the same file; one root set for both is what users expect).
 */
function buildControlPlane(env: Env, hasLocalConfig: boolean, builtinCa: boolean): { xds: Config['xds']; ca: Config['ca'] } {
  const xdsRaw = env[ENV.XDS_ADDRESS];
  let xdsAddress: string | undefined;
  if (xdsRaw !== undefined && xdsRaw.trim() !== '') xdsAddress = readGrpcAddress(ENV.XDS_ADDRESS, xdsRaw.trim());
  else if (xdsRaw === undefined && !hasLocalConfig) {
    xdsAddress = findRaw(env, ENV.KUBERNETES_SERVICE_HOST) !== undefined ? DEFAULTS.xdsAddressInCluster : DEFAULTS.xdsAddressOutsideCluster;
  }
  if (xdsAddress !== undefined && hasLocalConfig) {
    invalid(ENV.XDS_ADDRESS, 'is set together with LOCAL_XDS_PATH/LOCAL_XDS; choose one source of workloads (unset XDS_ADDRESS, or set it to "" to run from the local config)');
  }
  const xds =
    xdsAddress === undefined
      ? undefined
      : { address: xdsAddress, rootCa: readRootCa(env, ENV.XDS_ROOT_CA), altHostname: readString(env, ENV.ALT_XDS_HOSTNAME), headers: readHeaders(env, ENV_PREFIX.XDS_HEADER) };
  const caRaw = findRaw(env, ENV.CA_ADDRESS);
  let caAddress: string | undefined;
  if (caRaw !== undefined) {
    if (builtinCa) invalid(ENV.CA_ADDRESS, 'is set together with FAKE_CA or LOCAL_CA_CERT/LOCAL_CA_KEY; choose istiod\'s CA or the built-in one');
    caAddress = readGrpcAddress(ENV.CA_ADDRESS, caRaw);
  } else if (xds && !builtinCa) caAddress = xds.address;
  const ca =
    caAddress === undefined
      ? undefined
      : {
          address: caAddress,
          // One root for both unless told otherwise: CA_ROOT_CA defaults to XDS_ROOT_CA's value.
          rootCa: findRaw(env, ENV.CA_ROOT_CA) === undefined && xds !== undefined ? xds.rootCa : readRootCa(env, ENV.CA_ROOT_CA),
          altHostname: readString(env, ENV.ALT_CA_HOSTNAME),
          headers: readHeaders(env, ENV_PREFIX.CA_HEADER),
        };
  return { xds, ca };
}

/** Upper bound of ZTUNNEL_WORKER_THREADS (a typo like 1000 is an error, not 1000 threads). */
export const MAX_WORKER_THREADS = 64;

/**
 * The default number of data-path threads: half the cores this process may run on (CPU
 * affinity, `os.availableParallelism()`), at least 1, at most DEFAULTS.maxDefaultWorkerThreads.
 * Not all of them: a node's ztunnel shares the cores with the node's pods, and a thread beyond
 * its share of CPU only costs (measured on 2 cores shared with the load: 2 threads gave 0.80–0.91×
 * the 8-stream throughput and 0.83× the new connections/s of 1 thread, and +50 MB RSS;
 * bench/RESULTS-perf.md). On 4 cores this is upstream's default of 2
 * (https://github.com/istio/ztunnel/blob/master/src/config.rs); it stops at 8 because each
 * thread holds its own copy of the mesh and its own HBONE sessions per peer.
 */
export function defaultWorkerThreads(): number {
  return Math.max(1, Math.min(Math.floor(os.availableParallelism() / 2), DEFAULTS.maxDefaultWorkerThreads));
}

/** Validates `env` and returns the deep-frozen process configuration; throws ZT_ERR_CONFIG_INVALID. */
export function loadConfig(env: Env): Config {
  const localXdsPath = readString(env, ENV.LOCAL_XDS_PATH);
  // Inline YAML is taken verbatim (no trimming) but a blank value still counts as unset.
  const localXds = findRaw(env, ENV.LOCAL_XDS) === undefined ? undefined : env[ENV.LOCAL_XDS];
  if (localXdsPath !== undefined && localXds !== undefined) {
    invalid(ENV.LOCAL_XDS_PATH, 'LOCAL_XDS_PATH and LOCAL_XDS are mutually exclusive; set only one');
  }

  const proxyMode = buildProxyMode(env);
  const proxyWorkloadInfo = buildWorkloadInfo(env, proxyMode);

  const localCaCert = readString(env, ENV.LOCAL_CA_CERT);
  const localCaKey = readString(env, ENV.LOCAL_CA_KEY);
  if ((localCaCert === undefined) !== (localCaKey === undefined)) {
    invalid(
      localCaCert === undefined ? ENV.LOCAL_CA_CERT : ENV.LOCAL_CA_KEY,
      'LOCAL_CA_CERT and LOCAL_CA_KEY must be set together (or neither, for an ephemeral root)',
    );
  }

  const builtinCa = readBool(env, ENV.FAKE_CA) === true || localCaCert !== undefined;
  const { xds, ca } = buildControlPlane(env, localXdsPath !== undefined || localXds !== undefined, builtinCa);

  const ipv6Enabled = readBool(env, ENV.IPV6_ENABLED) ?? DEFAULTS.ipv6Enabled;
  const bindAddress =
    readIp(env, ENV.ZTUNNEL_BIND_ADDRESS) ?? (ipv6Enabled ? DEFAULTS.bindAddressIpv6 : DEFAULTS.bindAddressIpv4);
  if (!ipv6Enabled && ipFamily(bindAddress) === 6) {
    invalid(ENV.ZTUNNEL_BIND_ADDRESS, `'${bindAddress}' is an IPv6 address but IPV6_ENABLED=false`);
  }
  const adminBindAddress = readIp(env, ENV.ZTUNNEL_ADMIN_BIND_ADDRESS) ?? DEFAULTS.adminBindAddress;
  if (!isLoopbackIp(adminBindAddress)) {
    // The admin port exposes config dumps and /quitquitquit: it must never leave the host.
    invalid(ENV.ZTUNNEL_ADMIN_BIND_ADDRESS, `'${adminBindAddress}' is not a loopback address; admin listens on localhost only (127.0.0.0/8 or ::1)`);
  }
  if (!ipv6Enabled && ipFamily(adminBindAddress) === 6) {
    invalid(ENV.ZTUNNEL_ADMIN_BIND_ADDRESS, `'${adminBindAddress}' is an IPv6 address but IPV6_ENABLED=false`);
  }

  const clusterId = readString(env, ENV.ISTIO_META_CLUSTER_ID) ?? readString(env, ENV.CLUSTER_ID) ?? DEFAULTS.clusterId;
  const d = DEFAULTS.ports;

  const config: Config = {
    proxyMode,
    proxyWorkloadInfo,
    nodeName: readString(env, ENV.NODE_NAME),
    trustDomain: buildTrustDomain(env),
    clusterId,
    network: readString(env, ENV.NETWORK) ?? DEFAULTS.network,
    localXdsPath,
    localXds,
    enableOrigSrc: readBool(env, ENV.ENABLE_ORIG_SRC),
    packetMark: readInt(env, ENV.PACKET_MARK, 0, MAX_U32),
    http2StreamWindowSize: readInt(env, ENV.HTTP2_STREAM_WINDOW_SIZE, 1, MAX_H2_WINDOW) ?? DEFAULTS.http2StreamWindowSize,
    http2ConnectionWindowSize:
      readInt(env, ENV.HTTP2_CONNECTION_WINDOW_SIZE, 1, MAX_H2_WINDOW) ?? DEFAULTS.http2ConnectionWindowSize,
    http2FrameSize: readInt(env, ENV.HTTP2_FRAME_SIZE, MIN_H2_FRAME, MAX_H2_FRAME) ?? DEFAULTS.http2FrameSize,
    poolMaxStreamsPerConnection:
      readInt(env, ENV.POOL_MAX_STREAMS_PER_CONNECTION, 1, MAX_U32) ?? DEFAULTS.poolMaxStreamsPerConnection,
    poolUnusedReleaseTimeoutMs:
      readDurationMs(env, ENV.POOL_UNUSED_RELEASE_TIMEOUT) ?? DEFAULTS.poolUnusedReleaseTimeoutMs,
    connectionTerminationDeadlineMs: buildTerminationDeadlineMs(env),
    logFormat: readEnum(env, ENV.LOG_FORMAT, ['plain', 'json'] as const) ?? DEFAULTS.logFormat,
    logLevel: buildLogLevel(env),
    accessLogOnlyFailed: readBool(env, ENV.ACCESS_LOG_ONLY_FAILED) ?? DEFAULTS.accessLogOnlyFailed,
    enableSocks5: readBool(env, ENV.UNSTABLE_ENABLE_SOCKS5) ?? DEFAULTS.enableSocks5,
    spliceEnabled: readBool(env, ENV.ZTUNNEL_SPLICE) ?? DEFAULTS.spliceEnabled,
    workerThreads: readInt(env, ENV.ZTUNNEL_WORKER_THREADS, 1, MAX_WORKER_THREADS) ?? defaultWorkerThreads(),
    ipv6Enabled,
    localCaCert,
    localCaKey,
    ports: {
      outbound: readPort(env, ENV.ZTUNNEL_OUTBOUND_PORT, d.outbound),
      inboundPlaintext: readPort(env, ENV.ZTUNNEL_INBOUND_PLAINTEXT_PORT, d.inboundPlaintext),
      inbound: readPort(env, ENV.ZTUNNEL_INBOUND_PORT, d.inbound),
      socks5: readPort(env, ENV.ZTUNNEL_SOCKS5_PORT, d.socks5),
      admin: readPort(env, ENV.ZTUNNEL_ADMIN_PORT, d.admin),
      stats: readPort(env, ENV.ZTUNNEL_STATS_PORT, d.stats),
      readiness: readPort(env, ENV.ZTUNNEL_READINESS_PORT, d.readiness),
      // A peer's listener: "any port" is meaningless here.
      hboneTarget: readPort(env, ENV.ZTUNNEL_HBONE_TARGET_PORT, d.hboneTarget, 1),
    },
    bindAddress,
    adminBindAddress,
    connectTimeoutMs: readDurationMs(env, ENV.CONNECT_TIMEOUT, 1) ?? DEFAULTS.connectTimeoutMs,
    xds,
    ca,
    authToken: readTokenSource(env),
    secretTtlMs: readDurationMs(env, ENV.SECRET_TTL, 2000) ?? DEFAULTS.secretTtlMs,
    self: {
      podName: readString(env, ENV.POD_NAME),
      podNamespace: readString(env, ENV.POD_NAMESPACE),
      serviceAccount: readString(env, ENV.SERVICE_ACCOUNT),
      instanceIp: readIp(env, ENV.INSTANCE_IP),
    },
    proxyMetadata: readProxyMetadata(env),
  };
  // Checked last, so that a malformed value elsewhere is named first. Without a node name
  // a node-mode ztunnel cannot tell its own pods from other nodes' (same-node traffic,
  // inbound, certificates would all be wrong): refuse to start instead of guessing.
  if (config.proxyMode === 'node' && config.nodeName === undefined) {
    invalid(ENV.NODE_NAME, 'required when PROXY_MODE=node (the node whose workloads this ztunnel serves; in a pod, from the downward API spec.nodeName)');
  }
  return deepFreeze(config);
}
